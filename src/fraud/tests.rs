//! Fraud scoring in a real server: scores and profiles inside transactions, the registry
//! across sessions, imported models equal to the libraries' own predictions, training and
//! evaluation through the live feature code, and every refused input.

use crate::testing::{client, expect_error, one};

fn run(c: &mut postgres::Client, sql: &str) {
    if let Err(e) = c.batch_execute(sql) {
        match e.as_db_error() {
            Some(d) => panic!("{sql}: {} {}", d.code().code(), d.message()),
            None => panic!("{sql}: {e}"),
        }
    }
}

/// (score, risk_level, reasons joined, model, version) of one fraud_score call.
fn score(c: &mut postgres::Client, args: &str) -> (f64, String, String, String, Option<i32>) {
    let sql = format!(
        "SELECT s.score, s.risk_level, array_to_string(s.reasons, ' | '), s.model, s.model_version
           FROM platform.fraud_score({args}) s"
    );
    match c.query_one(&sql, &[]) {
        Ok(r) => (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)),
        Err(e) => panic!("{sql}: {e}"),
    }
}

fn payments(c: &mut postgres::Client, card: &str) -> i64 {
    one(
        c,
        &format!(
            "SELECT coalesce((SELECT payments FROM platform.fraud_profile p
                               WHERE p.card_key = (SELECT sha256(salt || '{card}'::bytea) FROM platform.fraud_secret)), 0)"
        ),
    )
}

#[test]
fn the_builtin_score_learns_a_card_and_explains_an_anomaly() {
    let mut c = client();
    run(&mut c, "SET platform.fraud_model = 'none_deployed'");
    // A card's habit: 20 days of one afternoon grocery payment of about 40.
    for d in 0..20 {
        let (s, level, _, model, version) = score(
            &mut c,
            &format!(
                "'4000-0001', {}, timestamptz '2026-03-01 15:00 UTC' + interval '{d} days', 'grocer', 'grocery', 48.85, 2.35",
                38 + d % 5
            ),
        );
        assert_eq!((model.as_str(), version), ("builtin", None));
        assert!((0.0..1.0).contains(&s));
        assert_eq!(level, "normal", "day {d}: {s}");
    }
    assert_eq!(payments(&mut c, "4000-0001"), 20);
    // Ten times the amount, at night, at a new merchant in a new category, far away.
    let (s, level, reasons, _, _) = score(
        &mut c,
        "'4000-0001', 420, timestamptz '2026-03-21 02:40 UTC', 'electronics-shop', 'electronics', 40.71, -74.0",
    );
    assert!(s > 0.9, "{s}");
    assert_eq!(level, "highest");
    assert!(reasons.contains("this card's average"), "{reasons}");
    assert!(reasons.contains("02:40"), "{reasons}");
    assert!(
        reasons.contains("first payment in this category"),
        "{reasons}"
    );

    // A rolled-back payment leaves the profile as it was.
    run(&mut c, "BEGIN");
    score(&mut c, "'4000-0001', 10, now(), 'grocer', 'grocery'");
    run(&mut c, "ROLLBACK");
    assert_eq!(payments(&mut c, "4000-0001"), 21);
    // The profile holds no card number.
    let plain: i64 = one(
        &mut c,
        "SELECT count(*) FROM platform.fraud_profile WHERE position('4000-0001'::bytea IN state) > 0
            OR position('4000-0001'::bytea IN card_key) > 0",
    );
    assert_eq!(plain, 0);
}

#[test]
fn bad_payments_are_refused_and_change_nothing() {
    let mut c = client();
    for (args, code, words) in [
        ("NULL, 10, now()", "22004", "card must not be NULL"),
        (
            "'4000-0002', NULL, now()",
            "22004",
            "amount must not be NULL",
        ),
        (
            "'4000-0002', 10, NULL",
            "22004",
            "occurred_at must not be NULL",
        ),
        ("'4000-0002', -1, now()", "22003", "negative"),
        (
            "'4000-0002', 10, now(), 'm', 'c', 91, 0",
            "22003",
            "latitude 91",
        ),
        (
            "'4000-0002', 10, now(), 'm', 'c', 0, -181",
            "22003",
            "longitude -181",
        ),
    ] {
        let (got, message) = expect_error(&mut c, &format!("SELECT platform.fraud_score({args})"));
        assert_eq!(got, code, "{args}: {message}");
        assert!(message.contains(words), "{args}: {message}");
    }
    assert_eq!(payments(&mut c, "4000-0002"), 0);
}

/// Scoring runs its SQL as the extension's owner with `search_path` set to `pg_catalog,
/// pg_temp`: a session whose path puts its own `=` on bytea before pg_catalog's has its
/// operator called by none of the profile's statements (a first payment, and REPEATABLE
/// READ, which reads and writes the profile with SQL), nor by the trigger.
#[test]
fn scoring_never_runs_the_callers_operators() {
    let mut c = client();
    run(
        &mut c,
        "DROP SCHEMA IF EXISTS t_hostile CASCADE;
         CREATE SCHEMA t_hostile;
         CREATE FUNCTION t_hostile.eq(bytea, bytea) RETURNS boolean LANGUAGE plpgsql AS
           $$ BEGIN RAISE EXCEPTION 'the caller''s operator ran as %', current_user; END $$;
         CREATE OPERATOR t_hostile.= (LEFTARG = bytea, RIGHTARG = bytea, FUNCTION = t_hostile.eq);
         DROP TABLE IF EXISTS public.t_fraud_hostile;
         CREATE TABLE public.t_fraud_hostile (id int PRIMARY KEY, card text, amount numeric, at timestamptz, score float8);
         SELECT platform.score_payments('public.t_fraud_hostile', '{\"card\": \"card\", \"amount\": \"amount\",
             \"occurred_at\": \"at\", \"score\": \"score\"}')",
    );
    // A new session, so that the profile statements are planned under the hostile path.
    let mut h = client();
    run(
        &mut h,
        "SET platform.fraud_model = 'none_deployed'; SET search_path = t_hostile, pg_catalog, public",
    );
    // The trap is armed: the session's own comparisons call it.
    let (_, message) = expect_error(&mut h, "SELECT 't-hostile'::bytea = 't-hostile'::bytea");
    assert!(message.contains("the caller's operator ran"), "{message}");
    // Each its own transaction (a multi-statement string is one implicit transaction).
    for sql in [
        "SELECT platform.fraud_score('hostile-1', 10, timestamptz '2026-09-01 UTC')",
        "BEGIN ISOLATION LEVEL REPEATABLE READ;
         SELECT platform.fraud_score('hostile-1', 11, timestamptz '2026-09-01 01:00 UTC');
         COMMIT",
        "INSERT INTO public.t_fraud_hostile VALUES (1, 'hostile-2', 12, timestamptz '2026-09-01 UTC', NULL),
                                                   (2, 'hostile-2', 13, timestamptz '2026-09-01 01:00 UTC', NULL)",
        "BEGIN ISOLATION LEVEL REPEATABLE READ;
         INSERT INTO public.t_fraud_hostile VALUES (3, 'hostile-2', 14, timestamptz '2026-09-01 02:00 UTC', NULL);
         COMMIT",
    ] {
        run(&mut h, sql);
    }
    assert_eq!(payments(&mut c, "hostile-1"), 2);
    assert_eq!(payments(&mut c, "hostile-2"), 3);
    run(
        &mut c,
        "DROP TABLE public.t_fraud_hostile; DROP SCHEMA t_hostile CASCADE",
    );
}

#[test]
fn concurrent_writers_keep_every_cards_profile_exact() {
    let mut c = client();
    run(&mut c, "SET platform.fraud_model = 'none_deployed'");
    // 8 writers: each has its own card, and all share one card.
    std::thread::scope(|s| {
        for w in 0..8 {
            s.spawn(move || {
                let mut c = client();
                for i in 0..25 {
                    run(
                        &mut c,
                        &format!(
                            "SELECT platform.fraud_score('4100-own-{w}', {}, now(), 'm{i}', 'c');
                             SELECT platform.fraud_score('4100-shared', 5, now(), 'm', 'c')",
                            10 + i
                        ),
                    );
                }
            });
        }
    });
    for w in 0..8 {
        assert_eq!(payments(&mut c, &format!("4100-own-{w}")), 25);
    }
    assert_eq!(
        payments(&mut c, "4100-shared"),
        200,
        "no lost update on a shared card"
    );
}

/// The fixture's rows as (attrs JSON with the model's features renamed `x_<name>`, the
/// library's probability) for `column` (xgb_prob or lgb_prob).
fn fixture_rows(column: &str) -> Vec<(String, f64)> {
    let csv = include_str!("testdata/rows.csv");
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();
    let at = |name: &str| header.iter().position(|h| *h == name);
    let features = [
        "amount",
        "log_amount",
        "count_1h",
        "count_24h",
        "distance_prev_km",
        "hour_of_day",
    ];
    let Some(target) = at(column) else {
        panic!("no column {column}")
    };
    lines
        .map(|l| {
            let cells: Vec<&str> = l.split(',').collect();
            let attrs: Vec<String> = features
                .iter()
                .filter_map(|f| {
                    let v: f64 = cells.get(at(f)?)?.parse().ok()?;
                    v.is_finite().then(|| format!("\"x_{f}\": {v:?}"))
                })
                .collect();
            let p: f64 = cells
                .get(target)
                .and_then(|v| v.parse().ok())
                .unwrap_or(f64::NAN);
            (format!("{{{}}}", attrs.join(", ")), p)
        })
        .collect()
}

fn renamed(text: &str, lightgbm: bool) -> String {
    let mut out = text.to_string();
    for f in [
        "log_amount",
        "count_1h",
        "count_24h",
        "distance_prev_km",
        "hour_of_day",
    ] {
        out = out.replace(&format!("\"{f}\""), &format!("\"x_{f}\""));
    }
    out = out.replace("\"amount\"", "\"x_amount\"");
    if lightgbm {
        out = out
            .lines()
            .map(|l| {
                if let Some(names) = l.strip_prefix("feature_names=") {
                    let renamed: Vec<String> = names.split(' ').map(|n| format!("x_{n}")).collect();
                    format!("feature_names={}", renamed.join(" "))
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
    }
    out
}

#[test]
fn imported_models_score_as_the_libraries_do() {
    let mut c = client();
    let features = "ARRAY['x_amount', 'x_log_amount', 'x_count_1h', 'x_count_24h', 'x_distance_prev_km', 'x_hour_of_day']";
    for (name, format, text, column) in [
        (
            "t_xgb",
            "xgboost",
            renamed(include_str!("testdata/xgb.json"), false),
            "xgb_prob",
        ),
        (
            "t_lgb",
            "lightgbm",
            renamed(include_str!("testdata/lgb.txt"), true),
            "lgb_prob",
        ),
    ] {
        let version: i32 = match c.query_one(
            &format!("SELECT platform.fraud_import_model('{name}', '{format}', $1, {features})"),
            &[&text],
        ) {
            Ok(r) => r.get(0),
            Err(e) => panic!("import {name}: {e}"),
        };
        run(&mut c, &format!("SELECT platform.fraud_deploy('{name}', {version}); SET platform.fraud_model = '{name}'"));
        for (i, (attrs, expected)) in fixture_rows(column).into_iter().enumerate().take(60) {
            let (s, _, _, model, v) = score(
                &mut c,
                &format!("'4200-{name}-{i}', 1, now(), 'm', 'c', NULL, NULL, '{attrs}'"),
            );
            assert_eq!((model.as_str(), v), (name, Some(version)));
            assert_eq!(s, expected, "{name} row {i}: {attrs}");
        }
    }
    run(&mut c, "RESET platform.fraud_model");
}

#[test]
fn deploys_are_transactional_and_seen_by_every_session_at_commit() {
    let mut c = client();
    let text = renamed(include_str!("testdata/lgb.txt"), true);
    let features = "ARRAY['x_amount', 'x_log_amount', 'x_count_1h', 'x_count_24h', 'x_distance_prev_km', 'x_hour_of_day']";
    let import = |c: &mut postgres::Client| -> i32 {
        match c.query_one(
            &format!("SELECT platform.fraud_import_model('t_dep', 'lightgbm', $1, {features})"),
            &[&text],
        ) {
            Ok(r) => r.get(0),
            Err(e) => panic!("{e}"),
        }
    };
    let v1 = import(&mut c);
    let v2 = import(&mut c);
    assert_eq!(v2, v1 + 1);
    let mut other = client();
    run(&mut other, "SET platform.fraud_model = 't_dep'");
    let model = |o: &mut postgres::Client| {
        let (_, _, _, m, v) = score(o, "'4300-1', 5, now()");
        (m, v)
    };
    assert_eq!(model(&mut other), ("builtin".to_string(), None));
    run(
        &mut c,
        &format!("BEGIN; SELECT platform.fraud_deploy('t_dep', {v1})"),
    );
    assert_eq!(
        model(&mut other),
        ("builtin".to_string(), None),
        "not before commit"
    );
    run(&mut c, "COMMIT");
    assert_eq!(model(&mut other), ("t_dep".to_string(), Some(v1)));
    run(
        &mut c,
        &format!("BEGIN; SELECT platform.fraud_deploy('t_dep', {v2}); ROLLBACK"),
    );
    assert_eq!(
        model(&mut other),
        ("t_dep".to_string(), Some(v1)),
        "a rolled-back deploy changes nothing"
    );
    run(
        &mut c,
        &format!("SELECT platform.fraud_deploy('t_dep', {v2})"),
    );
    assert_eq!(model(&mut other), ("t_dep".to_string(), Some(v2)));
    assert_eq!(
        one::<i32>(&mut c, "SELECT platform.fraud_rollback('t_dep')"),
        v1
    );
    assert_eq!(model(&mut other), ("t_dep".to_string(), Some(v1)));
    let (code, message) = expect_error(
        &mut c,
        &format!("SELECT platform.fraud_retire('t_dep', {v1})"),
    );
    assert_eq!(code, "55006", "{message}");
    run(
        &mut c,
        &format!("SELECT platform.fraud_retire('t_dep', {v2})"),
    );
    let (code, _) = expect_error(
        &mut c,
        &format!("SELECT platform.fraud_deploy('t_dep', {v2})"),
    );
    assert_eq!(code, "55000");
    let aliases: String = one(
        &mut c,
        &format!("SELECT aliases::text FROM platform.fraud_models WHERE name = 't_dep' AND version = {v1}"),
    );
    assert_eq!(aliases, "{champion}");
    assert!(one::<bool>(
        &mut c,
        "SELECT platform.fraud_undeploy('t_dep')"
    ));
    assert_eq!(model(&mut other), ("builtin".to_string(), None));
}

#[test]
fn bad_models_are_refused_and_nothing_is_stored() {
    let mut c = client();
    let lgb = include_str!("testdata/lgb.txt");
    let xgb = include_str!("testdata/xgb.json");
    let feats =
        "ARRAY['amount', 'log_amount', 'count_1h', 'count_24h', 'distance_prev_km', 'hour_of_day']";
    let cut = &xgb[..xgb.len() / 2];
    let nan = xgb.replacen("\"split_conditions\":[", "\"split_conditions\":[NaN,", 1);
    let cases: Vec<(String, Vec<String>, &str, &str)> = vec![
        (
            format!("'t_bad', 'xgboost', $1, {feats}"),
            vec![cut.to_string()],
            "22023",
            "malformed",
        ),
        (
            format!("'t_bad', 'xgboost', $1, {feats}"),
            vec![nan],
            "22023",
            "",
        ),
        (
            format!("'t_bad', 'lightgbm', $1, {feats}"),
            vec![lgb.replace("num_class=1", "num_class=3")],
            "0A000",
            "",
        ),
        (
            "'t_bad', 'lightgbm', $1, ARRAY['amount']".to_string(),
            vec![lgb.to_string()],
            "42804",
            "do not match",
        ),
        (
            format!("'t_bad', 'onnx', $1, {feats}"),
            vec![lgb.to_string()],
            "22023",
            "unknown model format",
        ),
        (
            format!("'T-bad', 'lightgbm', $1, {feats}"),
            vec![lgb.to_string()],
            "42602",
            "invalid fraud model name",
        ),
        (
            "'t_bad', 'lightgbm', $1, ARRAY[]::text[]".to_string(),
            vec![lgb.to_string()],
            "22023",
            "feature list",
        ),
        (
            format!("'t_bad', 'lightgbm', $1, {feats}, 0.9, 0.5"),
            vec![lgb.to_string()],
            "22023",
            "thresholds",
        ),
    ];
    for (args, params, code, words) in cases {
        let sql = format!("SELECT platform.fraud_import_model({args})");
        let p: Vec<&(dyn postgres::types::ToSql + Sync)> = params
            .iter()
            .map(|s| s as &(dyn postgres::types::ToSql + Sync))
            .collect();
        match c.query_one(&sql, &p) {
            Ok(_) => panic!("{args} was accepted"),
            Err(e) => {
                let Some(d) = e.as_db_error() else {
                    panic!("{e}")
                };
                assert_eq!(d.code().code(), code, "{args}: {}", d.message());
                assert!(d.message().contains(words), "{args}: {}", d.message());
            }
        }
    }
    assert_eq!(
        one::<i64>(
            &mut c,
            "SELECT count(*) FROM platform.fraud_model WHERE name = 't_bad'"
        ),
        0
    );
    for (sql, code) in [
        ("SELECT platform.fraud_deploy('t_nothing', 1)", "42704"),
        (
            "SELECT platform.fraud_deploy('t_bad', 1, 'canary')",
            "22023",
        ),
        ("SELECT platform.fraud_rollback('t_nothing')", "P0002"),
    ] {
        let (got, message) = expect_error(&mut c, sql);
        assert_eq!(got, code, "{sql}: {message}");
    }
}

/// A labelled history where fraud is a burst of large night payments on a card.
fn history_sql(table: &str) -> String {
    format!(
        "DROP TABLE IF EXISTS {table};
         CREATE TABLE {table} AS
         SELECT 'c' || (g % 200) AS card,
                CASE WHEN fraud THEN 300 + (g % 7) * 50 ELSE 20 + (g * 7919 % 60) END::numeric(12,2) AS amount,
                timestamptz '2026-01-01 UTC' + (g * interval '97 seconds')
                  + CASE WHEN fraud THEN interval '0' ELSE interval '0' END AS occurred_at,
                CASE WHEN fraud THEN 'shop-' || (g % 50) ELSE 'shop-' || (g % 200 % 5) END AS merchant,
                CASE WHEN fraud THEN 'electronics' ELSE 'grocery' END AS category,
                48.8 AS lat, 2.3 AS lon, fraud AS is_fraud
           FROM (SELECT g, (g % 200) < 6 AND (g / 200) % 20 >= 18 AS fraud FROM generate_series(1, 20000) g) s"
    )
}

/// Training stops for a cancel (here statement_timeout: 57014, nothing stored) and for
/// nothing else: other interrupts arriving while it boosts (memory-context dumps asked for
/// by another session, as the statistics timeout does on its own a few seconds into a
/// session's second statement) are served and training goes on.
#[test]
fn training_stops_for_a_cancel_and_for_no_other_interrupt() {
    let mut c = client();
    run(&mut c, &history_sql("public.t_fraud_signals"));
    let train = "SELECT platform.fraud_train('t_signals', 'SELECT * FROM public.t_fraud_signals', 'is_fraud', 'gbdt',
                 '{\"iterations\": 3000, \"max_depth\": 4}')";
    let pid: i32 = one(&mut c, "SELECT pg_backend_pid()");
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let signaller = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut other = client();
            let mut sent = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) && sent < 40 {
                std::thread::sleep(std::time::Duration::from_millis(100));
                let active: bool = one(
                    &mut other,
                    &format!("SELECT count(*) > 0 FROM pg_stat_activity WHERE pid = {pid} AND query LIKE '%fraud_train%' AND state = 'active'"),
                );
                if active {
                    run(
                        &mut other,
                        &format!("SELECT pg_log_backend_memory_contexts({pid})"),
                    );
                    sent += 1;
                }
            }
            sent
        })
    };
    let trained = c.query_one(train, &[]);
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent = signaller.join().unwrap_or(0);
    let version: i32 = match trained {
        Ok(r) => r.get(0),
        Err(e) => panic!("training interrupted by {sent} memory-context dumps: {e}"),
    };
    assert!(sent >= 3, "only {sent} interrupts arrived while training");
    let stored: i64 = one(
        &mut c,
        "SELECT count(*) FROM platform.fraud_models WHERE name = 't_signals'",
    );
    assert_eq!(stored, 1);
    let (code, message) =
        expect_error(&mut c, &format!("SET statement_timeout = '300ms'; {train}"));
    assert_eq!(code, "57014", "{message}");
    run(&mut c, "RESET statement_timeout");
    let after: String = one(
        &mut c,
        "SELECT count(*) || ' ' || max(version) FROM platform.fraud_models WHERE name = 't_signals'",
    );
    assert_eq!(
        after,
        format!("1 {version}"),
        "the cancelled training stored nothing"
    );
    run(&mut c, "DROP TABLE public.t_fraud_signals");
}

#[test]
fn training_and_evaluation_use_the_live_features() {
    let mut c = client();
    run(&mut c, &history_sql("public.t_fraud_history"));
    let version: i32 = one(
        &mut c,
        "SELECT platform.fraud_train('t_logit', 'SELECT * FROM public.t_fraud_history; ', 'is_fraud', 'logistic')",
    );
    let metrics: String = one(
        &mut c,
        &format!("SELECT kind || ' ' || ((metrics->>'auc_roc')::float8 > 0.8) || ' ' || (training->>'validation_payments')
                   FROM platform.fraud_models WHERE name = 't_logit' AND version = {version}"),
    );
    assert_eq!(metrics, "logistic true 4000");
    let eval: String = one(
        &mut c,
        &format!("SELECT payments || ' ' || frauds || ' ' || (auc_pr > 0.5) FROM platform.fraud_evaluate('t_logit', {version},
                   'SELECT * FROM public.t_fraud_history', 'is_fraud')"),
    );
    assert!(eval.starts_with("20000 "), "{eval}");
    assert!(eval.ends_with(" true"), "{eval}");

    // Point in time: scoring the history live, payment by payment, gives the backtest's
    // scores exactly.
    run(&mut c, &format!("SELECT platform.fraud_deploy('t_logit', {version}); SET platform.fraud_model = 't_logit'"));
    let live: Vec<f64> = c
        .query(
            "SELECT (platform.fraud_score('live-' || card, amount, occurred_at, merchant, category, lat, lon)).score
               FROM (SELECT * FROM public.t_fraud_history ORDER BY occurred_at LIMIT 3000) h",
            &[],
        )
        .unwrap_or_else(|e| panic!("{e}"))
        .iter()
        .map(|r| r.get(0))
        .collect();
    let replayed: Vec<f64> = c
        .query(
            &format!(
                "SELECT score FROM platform.fraud_backtest('t_logit', {version},
                        'SELECT * FROM public.t_fraud_history ORDER BY occurred_at LIMIT 3000')"
            ),
            &[],
        )
        .unwrap_or_else(|e| panic!("{e}"))
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(live.len(), 3000);
    assert_eq!(live, replayed);
    run(&mut c, "RESET platform.fraud_model");

    // The exported features are the ones the model saw: the backtest's score is the
    // model applied to them (logistic: a function of the exported vector alone).
    let exported: String = one(
        &mut c,
        "SELECT count(*) || ' ' || min(array_length(features, 1)) || ' ' || min(names[5]) || ' ' || count(*) FILTER (WHERE label)
           FROM platform.fraud_features('SELECT * FROM public.t_fraud_history ORDER BY occurred_at LIMIT 3000', 'is_fraud')",
    );
    let frauds: i64 = one(
        &mut c,
        "SELECT count(*) FROM (SELECT * FROM public.t_fraud_history ORDER BY occurred_at LIMIT 3000) h WHERE is_fraud",
    );
    assert_eq!(
        exported,
        format!("3000 22 amount_to_category_mean {frauds}")
    );
    let first: String = one(
        &mut c,
        "SELECT features[19]::text || ' ' || features[8]::text FROM platform.fraud_features('SELECT * FROM public.t_fraud_history')
          WHERE card = 'c7' ORDER BY occurred_at LIMIT 1",
    );
    assert_eq!(
        first, "0 0",
        "a card's first payment has no history (card_payment_count, count_7d)"
    );
    // The built-in score is evaluated too, and beaten by the trained model here.
    let builtin: f64 = one(
        &mut c,
        "SELECT auc_pr FROM platform.fraud_evaluate('builtin', NULL, 'SELECT * FROM public.t_fraud_history', 'is_fraud')",
    );
    let trained: f64 = one(
        &mut c,
        &format!("SELECT auc_pr FROM platform.fraud_evaluate('t_logit', {version}, 'SELECT * FROM public.t_fraud_history', 'is_fraud')"),
    );
    assert!(
        (0.0..=1.0).contains(&builtin) && trained > builtin,
        "{trained} vs {builtin}"
    );
    let (code, _) = expect_error(
        &mut c,
        "SELECT * FROM platform.fraud_evaluate('t_no_model', NULL, 'SELECT * FROM public.t_fraud_history', 'is_fraud')",
    );
    assert_eq!(code, "42704");

    // Rebuilding profiles from history: the named cards' profiles hold all of it, the
    // others are untouched.
    let live_before = payments(&mut c, "live-c7");
    let cards: i64 = one(
        &mut c,
        "SELECT platform.fraud_rebuild_profiles('SELECT ''rebuilt-'' || card AS card, amount, occurred_at, merchant, category FROM public.t_fraud_history')",
    );
    assert_eq!(cards, 200);
    assert_eq!(payments(&mut c, "rebuilt-c7"), 100);
    assert_eq!(payments(&mut c, "live-c7"), live_before);
    assert!(live_before > 0);
    let (code, _) = expect_error(
        &mut c,
        "SELECT platform.fraud_rebuild_profiles('SELECT card FROM public.t_fraud_history')",
    );
    assert_eq!(code, "42703");

    // Bad training input.
    for (sql, code) in [
        ("SELECT platform.fraud_train('t_x', 'SELECT * FROM public.t_fraud_history', 'no_such', 'logistic')", "42703"),
        ("SELECT platform.fraud_train('t_x', 'SELECT card, amount, occurred_at, merchant FROM public.t_fraud_history', 'is_fraud', 'logistic')", "42703"),
        ("SELECT platform.fraud_train('t_x', 'SELECT *, false AS never FROM public.t_fraud_history', 'never', 'logistic')", "22023"),
        ("SELECT platform.fraud_train('t_x', 'SELECT * FROM public.t_fraud_history', 'is_fraud', 'forest')", "22023"),
        ("SELECT platform.fraud_train('t_x', 'SELECT * FROM public.t_fraud_history', 'is_fraud', 'logistic', '{\"depth\": 3}')", "22023"),
        ("SELECT platform.fraud_train('t_x', 'SELECT * FROM public.t_fraud_history', 'is_fraud', 'logistic', '{\"features\": [\"amount\", \"amount\"]}')", "42701"),
    ] {
        let (got, message) = expect_error(&mut c, sql);
        assert_eq!(got, code, "{sql}: {message}");
    }
    assert_eq!(
        one::<i64>(
            &mut c,
            "SELECT count(*) FROM platform.fraud_model WHERE name = 't_x'"
        ),
        0
    );
    run(&mut c, "DROP TABLE public.t_fraud_history");
}

#[test]
fn rules_decide_the_verdict_and_explain_themselves() {
    let mut c = client();
    run(
        &mut c,
        "SET platform.fraud_model = 'none_deployed';
         SELECT platform.fraud_set_rule('t_block_merchant', 'block', 'merchant = ''t-rule-bad'' and amount > 100');
         SELECT platform.fraud_set_rule('t_review_burst', 'review', 'merchant in (''t-rule-bad'', ''t-rule-busy'') and count_1h >= 2', priority => 10);
         SELECT platform.fraud_set_rule('t_allow_trusted', 'allow', 'merchant = ''t-rule-trusted''')",
    );
    let verdict = |c: &mut postgres::Client, args: &str| -> String {
        one(
            c,
            &format!(
                "SELECT s.verdict || ' ' || array_to_string(s.rules, ',') || ' | ' || array_to_string(s.reasons, '; ')
                   FROM platform.fraud_score({args}) s"
            ),
        )
    };
    let v = verdict(&mut c, "'4400-1', 50, now(), 't-rule-bad', 'c'");
    assert!(v.starts_with("allow  |"), "{v}");
    let v = verdict(&mut c, "'4400-1', 500, now(), 't-rule-bad', 'c'");
    assert!(v.starts_with("block t_block_merchant |"), "{v}");
    assert!(v.contains("rule t_block_merchant (block)"), "{v}");
    let v = verdict(&mut c, "'4400-1', 20, now(), 't-rule-busy', 'c'");
    assert!(v.starts_with("review t_review_burst |"), "{v}");
    let v = verdict(&mut c, "'4400-1', 20, now(), 't-rule-trusted', 'c'");
    assert!(v.starts_with("allow t_allow_trusted |"), "{v}");
    let stored: String = one(
        &mut c,
        "SELECT string_agg(name || ':' || action || ':' || priority, ' ' ORDER BY name) FROM platform.fraud_rules WHERE name LIKE 't\\_%'",
    );
    assert_eq!(
        stored,
        "t_allow_trusted:allow:100 t_block_merchant:block:100 t_review_burst:review:10"
    );
    for (sql, code, words) in [
        (
            "SELECT platform.fraud_set_rule('t_bad', 'block', 'amount >')",
            "42601",
            "position",
        ),
        (
            "SELECT platform.fraud_set_rule('t_bad', 'block', 'no_such_feature > 1')",
            "42601",
            "no_such_feature",
        ),
        (
            "SELECT platform.fraud_set_rule('t_bad', 'deny', 'amount > 1')",
            "22023",
            "unknown rule action",
        ),
    ] {
        let (got, message) = expect_error(&mut c, sql);
        assert_eq!(got, code, "{sql}: {message}");
        assert!(message.contains(words), "{sql}: {message}");
    }
    assert_eq!(
        one::<i64>(
            &mut c,
            "SELECT count(*) FROM platform.fraud_rules WHERE name = 't_bad'"
        ),
        0
    );
    for name in ["t_block_merchant", "t_review_burst", "t_allow_trusted"] {
        assert!(one::<bool>(
            &mut c,
            &format!("SELECT platform.fraud_drop_rule('{name}')")
        ));
    }
    assert!(!one::<bool>(
        &mut c,
        "SELECT platform.fraud_drop_rule('t_block_merchant')"
    ));
}

#[test]
fn the_trigger_scores_every_inserted_payment() {
    let mut c = client();
    run(
        &mut c,
        "SET platform.fraud_model = 'none_deployed';
         DROP TABLE IF EXISTS public.t_fraud_pay;
         CREATE TABLE public.t_fraud_pay (id int PRIMARY KEY, card text NOT NULL, amount numeric(12,2) NOT NULL,
                                          at timestamptz NOT NULL, shop text, score real, level text, why text[],
                                          verdict text, status text NOT NULL DEFAULT 'successful');
         SELECT platform.score_payments('public.t_fraud_pay', '{\"card\": \"card\", \"amount\": \"amount\", \"occurred_at\": \"at\",
             \"merchant\": \"shop\", \"score\": \"score\", \"risk_level\": \"level\", \"reasons\": \"why\", \"verdict\": \"verdict\",
             \"status\": \"status\", \"review_status\": \"review\"}');
         SELECT platform.fraud_set_rule('t_trig_block', 'block', 'merchant = ''t-trig-stolen''');
         SELECT platform.fraud_set_rule('t_trig_review', 'review', 'merchant = ''t-trig-odd''')",
    );
    // A multi-row insert and a COPY, scored row by row in order.
    run(
        &mut c,
        "INSERT INTO public.t_fraud_pay (id, card, amount, at, shop)
         SELECT g, '4500-' || (g % 3), 10 + g, timestamptz '2026-05-01 12:00 UTC' + g * interval '1 hour', 'grocer'
           FROM generate_series(1, 30) g",
    );
    let copy = "31\t4500-1\t15.00\t2026-05-03 12:00:00+00\tt-trig-odd\n";
    let mut w = c
        .copy_in("COPY public.t_fraud_pay (id, card, amount, at, shop) FROM STDIN")
        .unwrap_or_else(|e| panic!("{e}"));
    std::io::Write::write_all(&mut w, copy.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    w.finish().unwrap_or_else(|e| panic!("{e}"));
    let filled: String = one(
        &mut c,
        "SELECT count(*) FILTER (WHERE score BETWEEN 0 AND 1 AND level IS NOT NULL AND verdict IS NOT NULL) || ' '
                || (SELECT status || ' ' || verdict FROM public.t_fraud_pay WHERE id = 31)
           FROM public.t_fraud_pay",
    );
    assert_eq!(filled, "31 review review");
    assert_eq!(payments(&mut c, "4500-1"), 11);
    // A block verdict refuses the payment with 09000, the reasons in the DETAIL.
    match c.batch_execute(
        "INSERT INTO public.t_fraud_pay (id, card, amount, at, shop) VALUES (32, '4500-2', 99, now(), 't-trig-stolen')",
    ) {
        Ok(()) => panic!("a blocked payment was stored"),
        Err(e) => {
            let Some(d) = e.as_db_error() else { panic!("{e}") };
            assert_eq!(d.code().code(), "09000", "{}", d.message());
            assert!(d.message().contains("payment blocked"), "{}", d.message());
            assert!(d.detail().unwrap_or("").contains("rule t_trig_block (block)"), "{:?}", d.detail());
        }
    }
    assert_eq!(
        one::<i64>(
            &mut c,
            "SELECT count(*) FROM public.t_fraud_pay WHERE id = 32"
        ),
        0
    );
    assert_eq!(
        payments(&mut c, "4500-2"),
        10,
        "the refused payment left no trace in the profile"
    );
    for (sql, code) in [
        ("SELECT platform.score_payments('public.t_fraud_pay', '{\"card\": \"card\", \"amount\": \"amount\"}')", "22023"),
        ("SELECT platform.score_payments('public.t_fraud_pay', '{\"card\": \"nope\", \"amount\": \"amount\", \"occurred_at\": \"at\"}')", "42703"),
        ("SELECT platform.score_payments('public.t_fraud_pay', '{\"card\": \"card\", \"amount\": \"amount\", \"occurred_at\": \"at\", \"colour\": \"shop\"}')", "22023"),
        ("SELECT platform.score_payments('platform.fraud_models', '{\"card\": \"card\", \"amount\": \"amount\", \"occurred_at\": \"at\"}')", "42809"),
    ] {
        let (got, message) = expect_error(&mut c, sql);
        assert_eq!(got, code, "{sql}: {message}");
    }
    assert!(one::<bool>(
        &mut c,
        "SELECT platform.unscore_payments('public.t_fraud_pay')"
    ));
    run(
        &mut c,
        "SELECT platform.fraud_drop_rule('t_trig_block'); SELECT platform.fraud_drop_rule('t_trig_review');
         DROP TABLE public.t_fraud_pay",
    );
}

#[test]
fn a_review_verdict_records_the_state_change_of_the_reference_schema() {
    let mut c = client();
    // A model deployed, and no reasons column: the state change still gets the model's
    // reasons (worked out for a review verdict only) before the rule's.
    let version: i32 = match c.query_one(
        "SELECT platform.fraud_import_model('t_ref_why', 'lightgbm', $1,
                ARRAY['amount', 'log_amount', 'count_1h', 'count_24h', 'distance_prev_km', 'hour_of_day'])",
        &[&include_str!("testdata/lgb.txt")],
    ) {
        Ok(r) => r.get(0),
        Err(e) => panic!("{e}"),
    };
    run(
        &mut c,
        &format!("SELECT platform.fraud_deploy('t_ref_why', {version})"),
    );
    run(
        &mut c,
        "SET platform.fraud_model = 't_ref_why';
         DROP SCHEMA IF EXISTS t_fraud_ref CASCADE;
         SELECT platform.create_payments_schema('t_fraud_ref', '2026-01-01', 3);
         SELECT count(*) FROM platform.generate_payments('t_fraud_ref', 20, 5, 50, seed => 3, days => 30);
         SELECT platform.score_payments('t_fraud_ref.transaction', '{\"card\": \"payment_method_id\", \"amount\": \"amount\",
             \"occurred_at\": \"occurred_at\", \"merchant\": \"merchant_id\", \"score\": \"fraud_score\", \"id\": \"id\",
             \"status\": \"status_id\", \"review_status\": 8, \"state_changes\": \"t_fraud_ref.transaction_state_change\",
             \"category\": {\"query\": \"SELECT industry FROM t_fraud_ref.merchant WHERE id = $1::bigint\", \"arg\": \"merchant_id\"}}');",
    );
    // The rule reads the category the trigger looked up in the merchant table.
    let industry: String = one(
        &mut c,
        "SELECT industry FROM t_fraud_ref.merchant WHERE id = 2",
    );
    run(
        &mut c,
        &format!(
            "SELECT platform.fraud_set_rule('t_ref_review', 'review', 'category = ''{industry}'' and amount = 77.77')"
        ),
    );
    // Payments copied from generated ones (valid keys), arriving pending; two hit the rule.
    let insert = |first: i64| {
        format!(
            "INSERT INTO t_fraud_ref.transaction (id, occurred_at, customer_id, merchant_id, payment_method_id,
                                                  location_id, amount, currency, status_id)
             SELECT {first} + g, timestamptz '2026-02-10 12:00 UTC' + g * interval '1 minute', t.customer_id,
                    CASE WHEN g IN (2, 4) THEN 2 ELSE t.merchant_id END, t.payment_method_id, t.location_id,
                    CASE WHEN g IN (2, 4) THEN 77.77 ELSE 12.50 END, t.currency, 1
               FROM generate_series(1, 5) g, (SELECT * FROM t_fraud_ref.transaction WHERE id = 1) t"
        )
    };
    // Rolled back: neither the held status nor its state change stays.
    run(&mut c, &format!("BEGIN; {}; ROLLBACK", insert(1000)));
    assert_eq!(
        one::<i64>(
            &mut c,
            "SELECT count(*) FROM t_fraud_ref.transaction_state_change"
        ),
        0
    );
    run(&mut c, &insert(2000));
    let held: String = one(
        &mut c,
        "SELECT string_agg(t.id || ':' || t.status_id || ':' || coalesce(s.from_status_id || '>' || s.to_status_id, '-'), ' ' ORDER BY t.id)
           FROM t_fraud_ref.transaction t
           LEFT JOIN t_fraud_ref.transaction_state_change s ON s.transaction_id = t.id AND s.transaction_occurred_at = t.occurred_at
          WHERE t.id BETWEEN 2001 AND 2005 AND t.status_id = 8",
    );
    assert!(
        held.contains("2002:8:1>8") && held.contains("2004:8:1>8"),
        "{held}"
    );
    assert!(
        !held.contains(":8:-"),
        "a held payment without its state change: {held}"
    );
    // Every state change belongs to a held payment, once, with the reasons as its reason.
    let changes: String = one(
        &mut c,
        "SELECT count(*) || ' ' || count(DISTINCT transaction_id) || ' ' || bool_and(reason LIKE 'fraud review: %')
                || ' ' || bool_or(transaction_id = 2002 AND reason LIKE '%rule t_ref_review (review)%')
           FROM t_fraud_ref.transaction_state_change",
    );
    let n_held = held.split(' ').count();
    assert_eq!(changes, format!("{n_held} {n_held} true true"));
    let reason: String = one(
        &mut c,
        "SELECT reason FROM t_fraud_ref.transaction_state_change WHERE transaction_id = 2002",
    );
    let parts: Vec<&str> = reason
        .trim_start_matches("fraud review: ")
        .split("; ")
        .collect();
    assert!(
        parts.len() >= 2 && parts.last() == Some(&"rule t_ref_review (review)"),
        "the model's reasons, then the rule: {reason}"
    );
    // Stored as held by the application itself (no verdict): no state change is invented.
    run(
        &mut c,
        "INSERT INTO t_fraud_ref.transaction (id, occurred_at, customer_id, merchant_id, payment_method_id,
                                              location_id, amount, currency, status_id)
         SELECT 3001, timestamptz '2026-02-11 12:00 UTC', customer_id, merchant_id, payment_method_id, location_id,
                12.50, currency, 8 FROM t_fraud_ref.transaction WHERE id = 1",
    );
    assert_eq!(
        one::<i64>(
            &mut c,
            "SELECT count(*) FROM t_fraud_ref.transaction_state_change WHERE transaction_id = 3001"
        ),
        0
    );
    // A held payment whose insert failed inside a savepoint is forgotten with it: the same
    // key stored later with the review status by the application records nothing.
    let (code, _) = expect_error(
        &mut c,
        "BEGIN;
         SAVEPOINT s;
         INSERT INTO t_fraud_ref.transaction (id, occurred_at, customer_id, merchant_id, payment_method_id,
                                              location_id, amount, currency, status_id)
         SELECT 4001, timestamptz '2026-02-12 12:00 UTC', 999999, 2, payment_method_id, location_id, 77.77, currency, 1
           FROM t_fraud_ref.transaction WHERE id = 1",
    );
    assert_eq!(code, "23503", "the unknown customer fails the foreign key");
    run(
        &mut c,
        "ROLLBACK TO SAVEPOINT s;
         INSERT INTO t_fraud_ref.transaction (id, occurred_at, customer_id, merchant_id, payment_method_id,
                                              location_id, amount, currency, status_id)
         SELECT 4001, timestamptz '2026-02-12 12:00 UTC', customer_id, merchant_id, payment_method_id, location_id,
                12.50, currency, 8 FROM t_fraud_ref.transaction WHERE id = 1;
         COMMIT",
    );
    assert_eq!(
        one::<i64>(
            &mut c,
            "SELECT count(*) FROM t_fraud_ref.transaction_state_change WHERE transaction_id = 4001"
        ),
        0
    );
    // A state-change table needs the id and status to record, and the reference shape; a
    // lookup needs its query and argument column, and a query that prepares.
    for (mapping, code) in [
        ("{\"card\": \"payment_method_id\", \"amount\": \"amount\", \"occurred_at\": \"occurred_at\", \"category\": {\"query\": \"SELECT industry FROM t_fraud_ref.merchant WHERE id = $1::bigint\"}}", "22023"),
        ("{\"card\": \"payment_method_id\", \"amount\": \"amount\", \"occurred_at\": \"occurred_at\", \"category\": {\"query\": \"SELEC industry\", \"arg\": \"merchant_id\"}}", "42601"),
        ("{\"card\": \"payment_method_id\", \"amount\": \"amount\", \"occurred_at\": \"occurred_at\", \"category\": {\"query\": \"SELECT industry FROM t_fraud_ref.merchant WHERE id = $1::bigint\", \"arg\": \"nope\"}}", "42703"),
        ("{\"card\": {\"query\": \"SELECT 1\", \"arg\": \"id\"}, \"amount\": \"amount\", \"occurred_at\": \"occurred_at\"}", "22023"),
        ("{\"card\": \"payment_method_id\", \"amount\": \"amount\", \"occurred_at\": \"occurred_at\", \"status\": \"status_id\", \"review_status\": 8, \"state_changes\": \"t_fraud_ref.transaction_state_change\"}", "22023"),
        ("{\"card\": \"payment_method_id\", \"amount\": \"amount\", \"occurred_at\": \"occurred_at\", \"id\": \"id\", \"status\": \"status_id\", \"review_status\": 8, \"state_changes\": \"t_fraud_ref.customer\"}", "42P01"),
        ("{\"card\": \"payment_method_id\", \"amount\": \"amount\", \"occurred_at\": \"occurred_at\", \"id\": \"id\", \"status\": \"status_id\", \"review_status\": 8, \"state_changes\": \"t_fraud_ref.nothing_here\"}", "42P01"),
    ] {
        let sql = format!("SELECT platform.score_payments('t_fraud_ref.transaction', '{mapping}')");
        let (got, message) = expect_error(&mut c, &sql);
        assert_eq!(got, code, "{sql}: {message}");
    }
    assert!(one::<bool>(
        &mut c,
        "SELECT platform.unscore_payments('t_fraud_ref.transaction')"
    ));
    assert_eq!(
        one::<i64>(
            &mut c,
            "SELECT count(*) FROM pg_catalog.pg_trigger WHERE tgrelid = 't_fraud_ref.transaction'::regclass
                AND tgname LIKE 'platform_fraud_%' AND tgparentid = 0"
        ),
        0,
        "unscore_payments leaves no trigger behind"
    );
    run(
        &mut c,
        "SELECT platform.fraud_drop_rule('t_ref_review'); DROP SCHEMA t_fraud_ref CASCADE",
    );
}

#[test]
fn batch_scoring_equals_one_call_per_payment() {
    let mut c = client();
    run(
        &mut c,
        "SET platform.fraud_model = 'none_deployed';
         DROP TABLE IF EXISTS public.t_batch_src;
         CREATE TABLE public.t_batch_src AS
         SELECT g AS id, 'c' || (g % 4) AS card,
                round((20 + (g * 37) % 90 + CASE WHEN g % 17 = 0 THEN 900 ELSE 0 END)::numeric, 2) AS amount,
                timestamptz '2026-06-01 08:00 UTC' + g * interval '47 minutes' AS at,
                'shop-' || (g % 5) AS merchant, (ARRAY['grocery', 'fuel', 'travel'])[1 + g % 3] AS category,
                48.8 + (g % 7) * 0.3 AS lat, 2.3 + (g % 3) * 0.2 AS lon
           FROM generate_series(1, 80) g;
         SELECT platform.fraud_set_rule('t_batch_review', 'review', 'amount > 500')",
    );
    // One fraud_score call per payment, in time order, on cards L-*.
    let live: Vec<String> = c
        .query(
            "SELECT id || ' ' || s.score || ' ' || s.risk_level || ' ' || s.verdict || ' ' || array_to_string(s.reasons, '|')
               FROM public.t_batch_src, LATERAL platform.fraud_score('L-' || card, amount, at, merchant, category, lat, lon) s
              ORDER BY at",
            &[],
        )
        .unwrap_or_else(|e| panic!("{e}"))
        .iter()
        .map(|r| r.get(0))
        .collect();
    // The same payments in two batches on cards B-*: the second goes on from the profiles
    // the first wrote.
    let batch = |c: &mut postgres::Client, filter: &str| -> Vec<String> {
        c.query(
            &format!(
                "SELECT id || ' ' || score || ' ' || risk_level || ' ' || verdict || ' ' || array_to_string(reasons, '|')
                   FROM platform.fraud_score_batch('SELECT id, ''B-'' || card AS card, amount, at AS occurred_at, merchant,
                                                          category, lat, lon FROM public.t_batch_src WHERE {filter}')"
            ),
            &[],
        )
        .unwrap_or_else(|e| panic!("{e}"))
        .iter()
        .map(|r| r.get(0))
        .collect()
    };
    let mut batched = batch(&mut c, "id <= 30");
    batched.extend(batch(&mut c, "id > 30"));
    assert_eq!(live.len(), 80);
    assert_eq!(batched, live);
    assert!(
        live.iter().any(|l| l.contains(" review ")),
        "the rule held none"
    );
    // The profiles are the same, byte for byte.
    let differ: i64 = one(
        &mut c,
        "SELECT count(*) FROM (SELECT DISTINCT card FROM public.t_batch_src) k
           JOIN platform.fraud_profile l ON l.card_key = (SELECT sha256(salt || ('L-' || k.card)::bytea) FROM platform.fraud_secret)
           JOIN platform.fraud_profile b ON b.card_key = (SELECT sha256(salt || ('B-' || k.card)::bytea) FROM platform.fraud_secret)
          WHERE l.state <> b.state OR l.payments <> b.payments",
    );
    assert_eq!(differ, 0);
    assert_eq!(payments(&mut c, "B-c1"), 20);
    // Rolled back, a batch leaves no profile.
    run(
        &mut c,
        "BEGIN;
         SELECT count(*) FROM platform.fraud_score_batch('SELECT ''R-'' || card AS card, amount, at AS occurred_at, merchant, category FROM public.t_batch_src');
         ROLLBACK",
    );
    assert_eq!(payments(&mut c, "R-c1"), 0);
    // A payment fraud_score would refuse fails the whole batch; nothing is kept.
    for (sql, code) in [
        ("SELECT * FROM platform.fraud_score_batch('SELECT ''E-'' || card AS card, CASE WHEN id = 50 THEN -amount ELSE amount END AS amount,
              at AS occurred_at, merchant, category FROM public.t_batch_src')", "22003"),
        ("SELECT * FROM platform.fraud_score_batch('SELECT ''E-'' || card AS card, CASE WHEN id = 50 THEN NULL ELSE amount END AS amount,
              at AS occurred_at, merchant, category FROM public.t_batch_src')", "22004"),
        ("SELECT * FROM platform.fraud_score_batch('SELECT ''E-'' || card AS card, amount, at AS occurred_at, merchant, category,
              CASE WHEN id = 50 THEN 95.0 ELSE lat END AS lat FROM public.t_batch_src')", "22003"),
        ("SELECT * FROM platform.fraud_score_batch('SELECT ''E-'' || card AS card, amount, merchant, category FROM public.t_batch_src')", "42703"),
    ] {
        let (got, message) = expect_error(&mut c, sql);
        assert_eq!(got, code, "{sql}: {message}");
    }
    assert_eq!(payments(&mut c, "E-c1"), 0);
    run(
        &mut c,
        "SELECT platform.fraud_drop_rule('t_batch_review'); DROP TABLE public.t_batch_src",
    );
}

#[test]
fn drift_and_shadow_watch_a_deployed_model() {
    let mut c = client();
    run(
        &mut c,
        &history_sql("public.t_fraud_drift")
            .replace("generate_series(1, 20000)", "generate_series(1, 8000)"),
    );
    let train = "SELECT platform.fraud_train('t_drift', 'SELECT * FROM public.t_fraud_drift', 'is_fraud', 'logistic')";
    let v1: i32 = one(&mut c, train);
    let v2: i32 = one(&mut c, train);
    // The same population: stable; amounts ten times larger: the amount has shifted.
    let same: String = one(
        &mut c,
        &format!("SELECT string_agg(DISTINCT status, ',') FROM platform.fraud_drift('t_drift', {v1},
                   'SELECT * FROM public.t_fraud_drift WHERE occurred_at >= (SELECT percentile_disc(0.8) WITHIN GROUP (ORDER BY occurred_at) FROM public.t_fraud_drift)')
                  WHERE feature IN ('amount', 'hour_of_day')"),
    );
    assert_eq!(same, "stable");
    let shifted: String = one(
        &mut c,
        &format!("SELECT status || ' ' || (psi > 0.25) FROM platform.fraud_drift('t_drift', {v1},
                   'SELECT card, amount * 10 AS amount, occurred_at, merchant, category, lat, lon FROM public.t_fraud_drift')
                  WHERE feature = 'amount'"),
    );
    assert_eq!(shifted, "shifted true");
    // An imported version has no reference histograms.
    let imported: i32 = match c.query_one(
        "SELECT platform.fraud_import_model('t_drift_imp', 'lightgbm', $1, ARRAY['x_amount', 'x_log_amount', 'x_count_1h', 'x_count_24h', 'x_distance_prev_km', 'x_hour_of_day'])",
        &[&renamed(include_str!("testdata/lgb.txt"), true)],
    ) {
        Ok(r) => r.get(0),
        Err(e) => panic!("{e}"),
    };
    let (code, _) = expect_error(
        &mut c,
        &format!("SELECT * FROM platform.fraud_drift('t_drift_imp', {imported}, 'SELECT * FROM public.t_fraud_drift')"),
    );
    assert_eq!(code, "55000");

    // A shadow is scored and logged beside the champion, which alone decides.
    run(
        &mut c,
        &format!("SELECT platform.fraud_deploy('t_drift', {v1}); SELECT platform.fraud_deploy('t_drift', {v2}, 'shadow');
                  SET platform.fraud_model = 't_drift'"),
    );
    let (s, _, _, model, version) = score(
        &mut c,
        "'4600-1', 25, now(), 'shop-1', 'grocery', 48.8, 2.3",
    );
    assert_eq!((model.as_str(), version), ("t_drift", Some(v1)));
    let logged: String = one(
        &mut c,
        &format!("SELECT champion_version || ' ' || shadow_version || ' ' || (champion_score = {s:e}::float8)
                    FROM platform.fraud_shadow_log WHERE model = 't_drift' ORDER BY scored_at DESC LIMIT 1"),
    );
    assert_eq!(logged, format!("{v1} {v2} true"));
    run(&mut c, "SELECT platform.fraud_undeploy('t_drift', 'shadow'); SELECT platform.fraud_undeploy('t_drift'); RESET platform.fraud_model;
                 DROP TABLE public.t_fraud_drift");
}

#[test]
fn stats_count_scores_per_model_version() {
    let mut c = client();
    run(&mut c, "SET platform.fraud_model = 't_stats_none'");
    let before: i64 = one(
        &mut c,
        "SELECT coalesce(sum(calls), 0)::int8 FROM platform.fraud_stats() WHERE model = 'builtin'",
    );
    run(
        &mut c,
        "SELECT count(platform.fraud_score('4700-' || g, 10, now(), 'm', 'c')) FROM generate_series(1, 50) g",
    );
    let after: String = one(
        &mut c,
        &format!("SELECT (sum(calls) - {before})::text || ' ' || bool_and(p99_us_at_most >= p50_us_at_most AND mean_us > 0
                          AND abs(normal + elevated + highest - 1) < 1e-9 AND abs(allowed + reviewed + blocked - 1) < 1e-9)
                   FROM platform.fraud_stats() WHERE model = 'builtin' AND version IS NULL"),
    );
    // Other tests score with the built-in model at the same time: at least ours counted.
    let (n, ok) = after.split_once(' ').unwrap_or(("0", "false"));
    assert!(n.parse::<i64>().unwrap_or(0) >= 50, "{after}");
    assert_eq!(ok, "true");
}

/// The scoring trigger rewrites a card's profile row in place (no SQL): one statement with
/// hundreds of payments of the same card (every version but the last dead in the
/// statement's own transaction, so the page fills and rewrites leave it and the key index
/// gets new entries), REPEATABLE READ (which takes the SQL path) and a rollback all leave
/// one row per card, found by its key and by a scan alike, with the exact count, and a
/// profile above 2 kB stays in its row (never compressed or moved to the TOAST table).
#[test]
fn profiles_rewritten_in_place_stay_exact_and_findable() {
    let mut c = client();
    run(
        &mut c,
        "SET platform.fraud_model = 'none_deployed';
         DROP TABLE IF EXISTS public.t_fraud_inplace;
         CREATE TABLE public.t_fraud_inplace (id int PRIMARY KEY, card text NOT NULL, amount numeric(12,2) NOT NULL,
                                              at timestamptz NOT NULL, shop text, kind text, score real);
         SELECT platform.score_payments('public.t_fraud_inplace', '{\"card\": \"card\", \"amount\": \"amount\",
             \"occurred_at\": \"at\", \"merchant\": \"shop\", \"category\": \"kind\", \"score\": \"score\"}');
         SELECT platform.fraud_set_rule('inplace_allow', 'allow', 'merchant = ''t-inplace''', 1000, true)",
    );
    let insert = |from: i32, to: i32| {
        format!(
            "INSERT INTO public.t_fraud_inplace (id, card, amount, at, shop, kind)
             SELECT g, '4711-' || (g % 2), 10 + g % 50, timestamptz '2026-06-01 00:00 UTC' + g * interval '1 minute', 't-inplace',
                    'kind-' || (g / 2 % 20)
               FROM generate_series({from}, {to}) g"
        )
    };
    run(&mut c, &insert(1, 600));
    run(
        &mut c,
        &format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ; {}; COMMIT",
            insert(601, 700)
        ),
    );
    run(&mut c, &format!("BEGIN; {}; ROLLBACK", insert(701, 900)));
    assert_eq!(payments(&mut c, "4711-0"), 350);
    assert_eq!(payments(&mut c, "4711-1"), 350);
    let both = |c: &mut postgres::Client, index: bool| -> String {
        run(
            c,
            &format!(
                "SET enable_seqscan = {0}; SET enable_indexscan = {1}; SET enable_bitmapscan = {1}",
                !index, index
            ),
        );
        one(
            c,
            "SELECT string_agg(p.payments::text, ',' ORDER BY p.payments)
               FROM platform.fraud_profile p, platform.fraud_secret s
              WHERE p.card_key IN (sha256(s.salt || '4711-0'::bytea), sha256(s.salt || '4711-1'::bytea))",
        )
    };
    assert_eq!(both(&mut c, true), "350,350");
    assert_eq!(both(&mut c, false), "350,350");
    // 256 recent payments and 16 categories make a profile above PostgreSQL's 2 kB TOAST
    // threshold: it stays in its row, uncompressed (pg_column_size counts the 4-byte header
    // of an inline value; a value in the TOAST table or compressed counts less).
    let stored: String = one(
        &mut c,
        "SELECT string_agg((octet_length(p.state) > 2100)::text || '/' || (pg_column_size(p.state) = octet_length(p.state) + 4)::text, ',')
           FROM platform.fraud_profile p, platform.fraud_secret s
          WHERE p.card_key IN (sha256(s.salt || '4711-0'::bytea), sha256(s.salt || '4711-1'::bytea))",
    );
    assert_eq!(stored, "true/true,true/true");
    run(
        &mut c,
        "RESET enable_seqscan; RESET enable_indexscan; RESET enable_bitmapscan;
         SELECT platform.fraud_drop_rule('inplace_allow'); DROP TABLE public.t_fraud_inplace",
    );
}

/// The trigger reads float8 and integer columns as stored and writes float8 and text
/// columns directly; other types go through their text. The same payments give the same
/// scores either way, whatever `extra_float_digits` says; a varchar too short for the risk
/// level is still refused by its type. An index added to the profile table while a backend
/// has its layout cached is kept up to date by that backend's next payments.
#[test]
fn the_trigger_scores_alike_from_columns_of_any_type_and_follows_the_profile_tables_shape() {
    let mut c = client();
    run(
        &mut c,
        "SET platform.fraud_model = 'none_deployed'; SET extra_float_digits = 0;
         DROP TABLE IF EXISTS public.t_fraud_typed, public.t_fraud_texty, public.t_fraud_short;
         CREATE TABLE public.t_fraud_typed (id int PRIMARY KEY, card text, amount integer, at timestamptz,
                                            shop text, lat float8, lon float8, score float8, level text);
         CREATE TABLE public.t_fraud_texty (id int PRIMARY KEY, card varchar(20), amount numeric(12,2), at timestamptz,
                                            shop varchar(20), lat numeric, lon numeric, score numeric, level varchar(10));
         CREATE TABLE public.t_fraud_short (id int PRIMARY KEY, card text, amount int, at timestamptz, level varchar(3));
         SELECT platform.score_payments(t, '{\"card\": \"card\", \"amount\": \"amount\", \"occurred_at\": \"at\",
             \"merchant\": \"shop\", \"lat\": \"lat\", \"lon\": \"lon\", \"score\": \"score\", \"risk_level\": \"level\"}')
           FROM unnest('{public.t_fraud_typed,public.t_fraud_texty}'::regclass[]) t;
         SELECT platform.score_payments('public.t_fraud_short', '{\"card\": \"card\", \"amount\": \"amount\",
             \"occurred_at\": \"at\", \"risk_level\": \"level\"}');
         SELECT platform.fraud_set_rule('typed_allow', 'allow', 'merchant = ''t-typed''', 1000, true)",
    );
    // 17 significant digits: with extra_float_digits = 0 their text would keep 15.
    let insert = |table: &str, prefix: &str, from: i32, to: i32| {
        format!(
            "INSERT INTO public.{table} (id, card, amount, at, shop, lat, lon)
             SELECT g, '{prefix}-' || (g % 2), 10 + (g * 7) % 90, timestamptz '2026-07-01 00:00 UTC' + g * interval '37 minutes',
                    't-typed', 48.123456789012345 + g * 0.0123456789012345, -2.9876543210987654 - g * 0.01
               FROM generate_series({from}, {to}) g"
        )
    };
    run(&mut c, &insert("t_fraud_typed", "T1", 1, 40));
    run(&mut c, &insert("t_fraud_texty", "T2", 1, 40));
    let same: String = one(
        &mut c,
        "SELECT count(*) || ' ' || count(*) FILTER (WHERE a.score = b.score::float8 AND a.level = b.level)
                || ' ' || count(DISTINCT a.score)
           FROM public.t_fraud_typed a JOIN public.t_fraud_texty b USING (id)",
    );
    let same: Vec<i64> = same.split(' ').filter_map(|n| n.parse().ok()).collect();
    assert_eq!(same[..2], [40, 40], "{same:?}");
    assert!(same[2] > 5, "the scores vary: {same:?}");
    // The risk level does not fit varchar(3): the type refuses it, and nothing is kept.
    let before = payments(&mut c, "T3");
    let (code, message) = expect_error(
        &mut c,
        "INSERT INTO public.t_fraud_short VALUES (1, 'T3', 10, now(), NULL)",
    );
    assert_eq!(code, "22001", "{message}");
    assert_eq!(payments(&mut c, "T3"), before);
    // An index added to the profile table: this backend's next payments (the payment
    // count changes, so no HOT update) must enter it.
    run(
        &mut c,
        "CREATE INDEX t_fraud_profile_payments ON platform.fraud_profile (payments)",
    );
    run(&mut c, &insert("t_fraud_typed", "T1", 41, 50));
    let count = |c: &mut postgres::Client, index: bool| -> i64 {
        run(
            c,
            &format!(
                "SET enable_seqscan = {0}; SET enable_indexscan = {1}; SET enable_bitmapscan = {1}",
                !index, index
            ),
        );
        one(
            c,
            // OFFSET 0 keeps the key condition out of the scan, which must be by payments.
            "SELECT count(*) FROM (SELECT card_key FROM platform.fraud_profile WHERE payments = 25 OFFSET 0) p,
                    platform.fraud_secret s
              WHERE p.card_key IN (sha256(s.salt || 'T1-0'::bytea), sha256(s.salt || 'T1-1'::bytea))",
        )
    };
    assert_eq!((count(&mut c, false), count(&mut c, true)), (2, 2));
    run(
        &mut c,
        "RESET enable_seqscan; RESET enable_indexscan; RESET enable_bitmapscan; RESET extra_float_digits;
         DROP INDEX platform.t_fraud_profile_payments;
         SELECT platform.fraud_drop_rule('typed_allow');
         DROP TABLE public.t_fraud_typed, public.t_fraud_texty, public.t_fraud_short",
    );
}

/// In a LATIN1 database the trigger reads text columns as PostgreSQL converts them to
/// UTF-8: an accented card is one card, distinct from its look-alike, under the key a UTF-8
/// database gives it (a lossy reading had made both one card); so do `fraud_score`, rule
/// conditions and history replays (which refused such text as not UTF-8 before).
#[test]
fn the_trigger_reads_a_latin1_databases_text_as_utf8() {
    let mut l = crate::testing::fresh_database(
        "t_fraud_latin1",
        "ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0",
    );
    run(
        &mut l,
        "SET platform.fraud_model = 'none_deployed';
         CREATE TABLE pay (id int PRIMARY KEY, card text, amount numeric, at timestamptz, shop varchar(30), score float8);
         SELECT platform.score_payments('pay', '{\"card\": \"card\", \"amount\": \"amount\", \"occurred_at\": \"at\",
             \"merchant\": \"shop\", \"score\": \"score\"}');
         INSERT INTO pay (id, card, amount, at, shop)
         SELECT g, CASE WHEN g <= 3 THEN 'Zoë-1' ELSE 'Zoé-1' END, 10 + g,
                timestamptz '2026-08-01 UTC' + g * interval '1 hour', 'Café Crème'
           FROM generate_series(1, 5) g",
    );
    let counts: String = one(
        &mut l,
        "SELECT count(*) FILTER (WHERE score IS NOT NULL) || ' ' ||
                (SELECT coalesce(string_agg(p.payments::text, ',' ORDER BY p.payments), 'no profile')
                   FROM platform.fraud_profile p, platform.fraud_secret s
                  WHERE p.card_key IN (sha256(s.salt || convert_to('Zoë-1', 'UTF8')),
                                       sha256(s.salt || convert_to('Zoé-1', 'UTF8'))))
           FROM pay",
    );
    assert_eq!(counts, "5 2,3");
    // The SQL functions take and give text the same way: fraud_score's card, merchant and
    // category, a rule's condition, and the payments a source query reads.
    let profiles = "SELECT string_agg(p.payments::text, ',' ORDER BY p.payments)
                      FROM platform.fraud_profile p, platform.fraud_secret s
                     WHERE p.card_key IN (sha256(s.salt || convert_to('Zoë-1', 'UTF8')),
                                          sha256(s.salt || convert_to('Zoé-1', 'UTF8')))";
    run(
        &mut l,
        "SELECT platform.fraud_set_rule('t_review_cafe', 'review', 'merchant in (''Café Crème'') and category = ''épicerie''')",
    );
    let scored: String = one(
        &mut l,
        "SELECT r.verdict || ' ' || array_to_string(r.rules, ',')
           FROM platform.fraud_score('Zoë-1', 14, timestamptz '2026-08-01 UTC' + interval '4 hours',
                                     'Café Crème', 'épicerie') r",
    );
    let scored = format!("{scored} {}", one::<String>(&mut l, profiles));
    assert_eq!(scored, "review t_review_cafe 2,4");
    let history = "SELECT card, amount, at AS occurred_at, shop AS merchant, ''grocery'' AS category FROM pay";
    let replayed: String = one(
        &mut l,
        &format!(
            "SELECT platform.fraud_drop_rule('t_review_cafe')::text || ' ' ||
                    platform.fraud_rebuild_profiles('{history}')"
        ),
    );
    let replayed = format!(
        "{replayed} {} {}",
        one::<String>(&mut l, profiles),
        one::<String>(
            &mut l,
            &format!(
                "SELECT (SELECT string_agg(DISTINCT card, ',' ORDER BY card) FROM platform.fraud_features('{history}')) || ' ' ||
                        (SELECT string_agg(DISTINCT card, ',' ORDER BY card) FROM platform.fraud_backtest('builtin', NULL, '{history}'))"
            )
        )
    );
    assert_eq!(replayed, "true 2 2,3 Zoé-1,Zoë-1 Zoé-1,Zoë-1");
    drop(l);
    crate::testing::drop_database("t_fraud_latin1");
}

/// In a LATIN1 database a mapping may name columns, a table and a review status that are
/// not ASCII: `score_payments` finds them, the trigger reads its mapping in the database's
/// encoding (pgrx's reading of trigger arguments failed on such bytes, leaving an empty
/// mapping) and writes its values in it; a lookup query must be ASCII there (0A000,
/// nothing installed) and reaches other names through Unicode escapes. `attrs` may hold
/// such text too, and a number no double holds is 22003 rather than an internal error.
#[test]
fn a_latin1_databases_mapping_may_name_columns_that_are_not_ascii() {
    let mut l = crate::testing::fresh_database(
        "t_fraud_latin1_names",
        "ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0",
    );
    run(
        &mut l,
        r#"SET platform.fraud_model = 'none_deployed';
           CREATE TABLE "changements_d'état" (transaction_id int, transaction_occurred_at timestamptz,
                                              from_status_id text, to_status_id varchar(20), reason text);
           CREATE TABLE rayons (id int PRIMARY KEY, "libellé" text);
           INSERT INTO rayons VALUES (1, 'épicerie fine'), (2, 'café');
           CREATE TABLE "paiement_été" (id int PRIMARY KEY, "numéro" text, montant numeric, "à" timestamptz,
                                        rayon int, "niveau_de_risque" text, "décision" varchar(10),
                                        "état" varchar(20) NOT NULL DEFAULT 'reçu', note float8);
           SELECT platform.fraud_set_rule('t_latin1_review', 'review', 'category = ''épicerie fine''');"#,
    );
    let mapping = |category: &str| {
        format!(
            r#"jsonb_build_object('card', 'numéro', 'amount', 'montant', 'occurred_at', 'à', 'id', 'id',
                   'score', 'note', 'risk_level', 'niveau_de_risque', 'verdict', 'décision',
                   'status', 'état', 'review_status', 'à revoir', 'state_changes', 'changements_d''état',
                   'category', jsonb_build_object('query', '{category}', 'arg', 'rayon'))"#
        )
    };
    // A lookup query naming `libellé` as it is cannot be prepared here: refused, and
    // nothing installed.
    let (code, message) = expect_error(
        &mut l,
        &format!(
            "SELECT platform.score_payments('paiement_été', {})",
            mapping(r#"SELECT "libellé" FROM rayons WHERE id = $1::int"#)
        ),
    );
    assert_eq!(code, "0A000", "{message}");
    let triggers =
        r#"SELECT count(*) FROM pg_catalog.pg_trigger WHERE tgrelid = '"paiement_été"'::regclass"#;
    assert_eq!(one::<i64>(&mut l, triggers), 0);
    run(
        &mut l,
        &format!(
            "SELECT platform.score_payments('paiement_été', {})",
            mapping(r#"SELECT U&"libell\00E9" FROM rayons WHERE id = $1::int"#)
        ),
    );
    run(
        &mut l,
        r#"INSERT INTO "paiement_été" (id, "numéro", montant, "à", rayon)
           VALUES (1, 'Zoë-2', 20, '2026-08-01 10:00 UTC', 2), (2, 'Zoë-2', 30, '2026-08-01 11:00 UTC', 1)"#,
    );
    let rows: String = one(
        &mut l,
        r#"SELECT string_agg(id || ':' || "état" || ':' || "décision" || ':' || (note IS NOT NULL)
                             || ':' || ("niveau_de_risque" IN ('normal', 'elevated', 'highest')), ' ' ORDER BY id)
                  || ' ' || (SELECT string_agg(from_status_id || '>' || to_status_id || ':' || transaction_id, ',')
                               FROM "changements_d'état")
                  || ' ' || (SELECT p.payments FROM platform.fraud_profile p, platform.fraud_secret s
                              WHERE p.card_key = sha256(s.salt || convert_to('Zoë-2', 'UTF8')))
             FROM "paiement_été""#,
    );
    assert_eq!(
        rows,
        "1:reçu:allow:true:true 2:à revoir:review:true:true reçu>à revoir:2 2"
    );
    // attrs with such text, and a number beyond a double's range.
    assert!(one::<bool>(
        &mut l,
        r#"SELECT (platform.fraud_score('Zoë-3', 10, '2026-08-01 UTC', 'm', 'c', NULL, NULL, '{"ville": "Zürich"}')).score
                  BETWEEN 0 AND 1"#,
    ));
    let (code, message) = expect_error(
        &mut l,
        r#"SELECT platform.fraud_score('Zoë-3', 10, '2026-08-01 UTC', 'm', 'c', NULL, NULL, '{"x": 1e400}')"#,
    );
    assert_eq!(code, "22003", "{message}");
    // Batch scoring reads an attrs column the same way.
    // (Its source query must be ASCII: pgrx takes the text of a query argument as UTF-8.)
    run(
        &mut l,
        r#"CREATE TABLE lot AS SELECT 1 AS id, 'Zoë-4' AS card, 10 AS amount, timestamptz '2026-08-01 UTC' AS occurred_at,
                                      'm' AS merchant, 'c' AS category, '{"ville": "Zürich"}'::jsonb AS attrs"#,
    );
    let batch: String = one(
        &mut l,
        "SELECT count(*) FILTER (WHERE score BETWEEN 0 AND 1) || '/' || count(*)
           FROM platform.fraud_score_batch('SELECT * FROM lot')",
    );
    assert_eq!(batch, "1/1");
    // Training options are read the same way; a feature name that could not be stored as
    // written is refused before anything runs.
    let (code, message) = expect_error(
        &mut l,
        r#"SELECT platform.fraud_train('t_latin1', 'SELECT 1', 'lbl', 'gbdt', '{"features": ["amount", "âge"]}')"#,
    );
    assert_eq!(code, "22023", "{message}");
    assert!(message.contains("ASCII"), "{message}");
    assert!(one::<bool>(
        &mut l,
        "SELECT platform.unscore_payments('paiement_été')"
    ));
    assert_eq!(one::<i64>(&mut l, triggers), 0);
    run(&mut l, "SELECT platform.fraud_drop_rule('t_latin1_review')");
    drop(l);
    crate::testing::drop_database("t_fraud_latin1_names");
}

/// In a SQL_ASCII database text is bytes in no declared encoding: the trigger takes a card
/// that is valid UTF-8 and refuses one that is not (22021), storing neither the payment nor
/// a profile for it.
#[test]
fn the_trigger_refuses_a_sql_ascii_databases_bytes_that_are_not_utf8() {
    let mut a = crate::testing::fresh_database(
        "t_fraud_ascii",
        "ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0",
    );
    run(
        &mut a,
        "SET platform.fraud_model = 'none_deployed';
         CREATE TABLE pay (id int PRIMARY KEY, card text, amount numeric, at timestamptz, score float8);
         SELECT platform.score_payments('pay', '{\"card\": \"card\", \"amount\": \"amount\", \"occurred_at\": \"at\",
             \"score\": \"score\"}');
         INSERT INTO pay (id, card, amount, at) VALUES (1, 'Zoë-1', 10, '2026-08-01 UTC')",
    );
    let (code, message) = expect_error(
        &mut a,
        "INSERT INTO pay (id, card, amount, at)
         VALUES (2, convert_from('\\x5a6fe92d31', 'SQL_ASCII'), 10, '2026-08-01 01:00 UTC')",
    );
    assert_eq!(code, "22021", "{message}");
    let left: String = one(
        &mut a,
        "SELECT string_agg(id || ':' || (score IS NOT NULL), ',') || ' ' ||
                (SELECT count(*) FROM platform.fraud_profile) FROM pay",
    );
    assert_eq!(left, "1:true 1");
    drop(a);
    crate::testing::drop_database("t_fraud_ascii");
}

/// fraud_score forms its result from the type's catalog entry: an attribute added to
/// `platform.fraud_result` is refused with 55000 and the payment leaves no trace in the
/// profile; once the attribute is dropped again (it stays as a dropped column), scoring
/// returns every column as before.
#[test]
fn an_altered_result_type_is_refused_and_a_dropped_attribute_is_skipped() {
    let mut r = crate::testing::fresh_database("t_fraud_result", "");
    run(&mut r, "SET platform.fraud_model = 'none_deployed'");
    let call = "SELECT s.score >= 0 AND s.score <= 1, s.risk_level, s.model, s.verdict, s.rules
                  FROM platform.fraud_score('4000-77', 25, '2026-05-01 12:00 UTC', 'shop', 'grocery', 48.85, 2.35) s";
    let scored = |r: &mut postgres::Client| -> String {
        match r.query_one(call, &[]) {
            Ok(row) => format!(
                "{} {} {} {} {:?}",
                row.get::<_, bool>(0),
                row.get::<_, String>(1),
                row.get::<_, String>(2),
                row.get::<_, String>(3),
                row.get::<_, Vec<String>>(4)
            ),
            Err(e) => panic!("{call}: {e}"),
        }
    };
    assert_eq!(scored(&mut r), "true normal builtin allow []");
    run(
        &mut r,
        "ALTER TYPE platform.fraud_result ADD ATTRIBUTE extra integer",
    );
    let (code, message) = expect_error(&mut r, call);
    assert_eq!(code, "55000", "{message}");
    assert!(
        message.contains("platform.fraud_result was altered") && message.contains("model_version"),
        "{message}"
    );
    assert_eq!(
        one::<i64>(&mut r, "SELECT payments FROM platform.fraud_profile"),
        1,
        "the refused call left the profile as it was"
    );
    run(
        &mut r,
        "ALTER TYPE platform.fraud_result DROP ATTRIBUTE extra",
    );
    assert_eq!(scored(&mut r), "true normal builtin allow []");
    assert_eq!(
        one::<i64>(&mut r, "SELECT payments FROM platform.fraud_profile"),
        2
    );
    drop(r);
    crate::testing::drop_database("t_fraud_result");
}

#[test]
fn a_trigger_without_a_reasons_column_still_explains_what_it_refuses() {
    let mut c = client();
    let text = include_str!("testdata/lgb.txt");
    let version: i32 = match c.query_one(
        "SELECT platform.fraud_import_model('t_why', 'lightgbm', $1,
                ARRAY['amount', 'log_amount', 'count_1h', 'count_24h', 'distance_prev_km', 'hour_of_day'])",
        &[&text],
    ) {
        Ok(r) => r.get(0),
        Err(e) => panic!("{e}"),
    };
    run(
        &mut c,
        &format!(
            "SELECT platform.fraud_deploy('t_why', {version});
             SET platform.fraud_model = 't_why';
             DROP TABLE IF EXISTS public.t_why_full, public.t_why_lean;
             CREATE TABLE public.t_why_full (id int PRIMARY KEY, card text NOT NULL, amount numeric(12,2) NOT NULL,
                                             at timestamptz NOT NULL, shop text, score float8, why text[]);
             CREATE TABLE public.t_why_lean (LIKE public.t_why_full);
             SELECT platform.score_payments('public.t_why_full', '{{\"card\": \"card\", \"amount\": \"amount\",
                 \"occurred_at\": \"at\", \"merchant\": \"shop\", \"score\": \"score\", \"reasons\": \"why\"}}');
             SELECT platform.score_payments('public.t_why_lean', '{{\"card\": \"card\", \"amount\": \"amount\",
                 \"occurred_at\": \"at\", \"merchant\": \"shop\", \"score\": \"score\"}}');
             SELECT platform.fraud_set_rule('t_why_block', 'block', 'merchant = ''t-why-stolen''')"
        ),
    );
    // The same history on a card of each table: the same features, so the same scores.
    for t in ["full", "lean"] {
        run(
            &mut c,
            &format!(
                "INSERT INTO public.t_why_{t} (id, card, amount, at, shop)
                 SELECT g, '4810-{t}', 20 + g, timestamptz '2026-07-01 09:00 UTC' + g * interval '1 hour', 'grocer'
                   FROM generate_series(1, 12) g"
            ),
        );
    }
    let same: i64 = one(
        &mut c,
        "SELECT count(*) FROM public.t_why_full f JOIN public.t_why_lean l USING (id)
          WHERE f.score = l.score AND cardinality(f.why) > 0 AND l.why IS NULL",
    );
    assert_eq!(
        same, 12,
        "equal scores; reasons only where a column asks for them"
    );
    // A refused payment states the model's reasons and the rule, with or without the column.
    let mut detail = |t: &str| -> String {
        match c.batch_execute(&format!(
            "INSERT INTO public.t_why_{t} (id, card, amount, at, shop)
             VALUES (13, '4810-{t}', 900, timestamptz '2026-07-01 09:00 UTC' + 13 * interval '1 hour', 't-why-stolen')"
        )) {
            Ok(()) => panic!("a blocked payment was stored in t_why_{t}"),
            Err(e) => {
                let Some(d) = e.as_db_error() else { panic!("{e}") };
                assert_eq!(d.code().code(), "09000", "{}", d.message());
                d.detail().unwrap_or("").to_string()
            }
        }
    };
    let (full, lean) = (detail("full"), detail("lean"));
    assert_eq!(full, lean);
    let parts: Vec<&str> = lean.split("; ").collect();
    assert!(parts.len() >= 2, "model reasons before the rule: {lean}");
    assert_eq!(
        parts.last().copied(),
        Some("rule t_why_block (block)"),
        "{lean}"
    );
    let table_count: i64 = one(
        &mut c,
        "SELECT (SELECT count(*) FROM public.t_why_full) + (SELECT count(*) FROM public.t_why_lean)",
    );
    assert_eq!(table_count, 24);
    run(
        &mut c,
        "SELECT platform.fraud_drop_rule('t_why_block');
         SELECT platform.unscore_payments('public.t_why_full'); SELECT platform.unscore_payments('public.t_why_lean');
         DROP TABLE public.t_why_full, public.t_why_lean; RESET platform.fraud_model",
    );
}
