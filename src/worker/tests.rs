#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    #[pg_test]
    fn the_test_server_preloads_the_library() {
        assert!(crate::worker::is_preloaded());
        assert_eq!(
            crate::gucs::worker_databases(),
            vec!["pgrx_tests".to_string()]
        );
        // The test database is served, so this must not raise.
        crate::worker::require_worker("a test");
    }

    #[pg_test]
    fn naptime_is_a_guc_in_seconds() {
        assert_eq!(
            Spi::get_one::<String>("SHOW platform.worker_naptime"),
            Ok(Some("1s".into()))
        );
    }
}

#[cfg(test)]
mod integration {
    use crate::testing::{client, expect_error, one};

    #[test]
    fn one_worker_runs_in_the_configured_database() {
        let mut c = client();
        let mut seen = 0;
        for _ in 0..60 {
            seen = one::<i64>(&mut c, "SELECT count(*) FROM platform.worker_status() WHERE database = 'pgrx_tests' AND configured");
            if seen == 1 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
        assert_eq!(
            seen, 1,
            "expected exactly one pg_platform worker for pgrx_tests"
        );
    }

    #[test]
    fn databases_needs_a_restart() {
        let mut c = client();
        let (code, _) = expect_error(&mut c, "SET platform.databases = 'other'");
        assert_eq!(code, "55P02");
    }
}
