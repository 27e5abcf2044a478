#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    fn count(sql: &str) -> i64 {
        Spi::get_one::<i64>(sql).ok().flatten().unwrap_or(-1)
    }

    /// md5 of every row of a table, in primary-key order.
    fn digest(schema: &str, table: &str) -> String {
        Spi::get_one::<String>(&format!(
            "SELECT md5(string_agg(t::text, '|' ORDER BY t::text)) FROM {schema}.{table} t"
        ))
        .ok()
        .flatten()
        .unwrap_or_default()
    }

    #[pg_test]
    fn generates_the_requested_rows_into_the_right_partitions() {
        Spi::run("SELECT platform.create_payments_schema('gen_a')").unwrap();
        let rows: Vec<(String, i64)> = Spi::connect(|c| {
            c.select("SELECT table_name, rows_inserted FROM platform.generate_payments('gen_a', 200, 20, 1000)", None, &[])
                .unwrap()
                .map(|r| (r.get::<String>(1).unwrap().unwrap(), r.get::<i64>(2).unwrap().unwrap()))
                .collect()
        });
        let get = |t: &str| rows.iter().find(|(n, _)| n == t).map(|r| r.1);
        assert_eq!(get("customer"), Some(200));
        assert_eq!(get("merchant"), Some(20));
        assert_eq!(get("payment_method"), Some(400));
        assert_eq!(get("device"), Some(400));
        assert_eq!(get("transaction"), Some(1000));
        assert_eq!(count("SELECT count(*) FROM gen_a.transaction"), 1000);
        assert_eq!(
            count("SELECT count(DISTINCT id) FROM gen_a.transaction"),
            1000
        );
        // 90 days from 2026-01-01 fill January to March: nothing lands in the default partition.
        assert_eq!(count("SELECT count(*) FROM gen_a.transaction_default"), 0);
        assert_eq!(count("SELECT count(*) FROM gen_a.transaction_p20260201"), {
            count("SELECT count(*) FROM gen_a.transaction WHERE occurred_at >= '2026-02-01+00' AND occurred_at < '2026-03-01+00'")
        });
        // Payments are in the merchant's currency, with at most its minor units.
        assert_eq!(
            count("SELECT count(*) FROM gen_a.transaction t JOIN gen_a.merchant m ON m.id = t.merchant_id
                    JOIN gen_a.currency c ON c.code = t.currency
                   WHERE t.currency <> m.currency OR scale(t.amount) > c.minor_units AND t.amount <> trunc(t.amount, c.minor_units)"),
            0
        );
        // Most payments happen at the customer's home location; a card-present tenth has no device.
        let home = count(
            "SELECT count(*) FROM gen_a.transaction t JOIN gen_a.customer c ON c.id = t.customer_id
              WHERE t.location_id = c.home_location_id",
        );
        assert!((850..=960).contains(&home), "home share {home}/1000");
        let no_device = count("SELECT count(*) FROM gen_a.transaction WHERE device_id IS NULL");
        assert!(
            (60..=140).contains(&no_device),
            "card-present {no_device}/1000"
        );
        let ok = count("SELECT count(*) FROM gen_a.transaction WHERE status_id = 2");
        assert!((870..=950).contains(&ok), "successful {ok}/1000");
        // ids grow with time.
        assert_eq!(
            count("SELECT count(*) FROM (SELECT occurred_at < lag(occurred_at) OVER (ORDER BY id) AS back
                     FROM gen_a.transaction) s WHERE back"),
            0
        );
    }

    #[pg_test]
    fn same_seed_same_rows_other_seed_other_rows() {
        for (schema, seed) in [("det_a", 7), ("det_b", 7), ("det_c", 8)] {
            Spi::run(&format!(
                "SELECT platform.create_payments_schema('{schema}')"
            ))
            .unwrap();
            Spi::run(&format!(
                "SELECT * FROM platform.generate_payments('{schema}', 50, 5, 300, {seed})"
            ))
            .unwrap();
        }
        for table in [
            "location",
            "customer",
            "billing_address",
            "merchant",
            "payment_method",
            "device",
            "transaction",
        ] {
            let a = digest("det_a", table);
            assert!(!a.is_empty(), "{table} is empty");
            assert_eq!(
                a,
                digest("det_b", table),
                "{table} differs for the same seed"
            );
        }
        assert_ne!(
            digest("det_a", "transaction"),
            digest("det_c", "transaction")
        );
        assert_ne!(digest("det_a", "customer"), digest("det_c", "customer"));
    }

    #[pg_test]
    fn a_row_does_not_depend_on_how_the_load_is_chunked() {
        let args = "100, 3, 10, 5, '2026-01-01+00', 30";
        let whole = Spi::get_one::<String>(&format!(
            "SELECT md5(string_agg(r::text, '|' ORDER BY id)) FROM platform.generate_transaction_rows(1, 100, {args}) r"
        ));
        let parts = Spi::get_one::<String>(&format!(
            "SELECT md5(string_agg(r::text, '|' ORDER BY id)) FROM (
               SELECT * FROM platform.generate_transaction_rows(1, 37, {args})
               UNION ALL SELECT * FROM platform.generate_transaction_rows(38, 63, {args})) r"
        ));
        assert_eq!(whole, parts);
    }

    #[pg_test]
    fn payments_carry_their_country_tax_and_customers_a_segment() {
        Spi::run("SELECT platform.create_payments_schema('gen_tax')").unwrap();
        Spi::run("SELECT count(*) FROM platform.generate_payments('gen_tax', 400, 30, 3000)")
            .unwrap();
        // French payments carry 20% of their amount (in the currency's minor units), US
        // ones none, every one a value.
        let wrong = Spi::get_one::<i64>(
            "SELECT count(*) FROM gen_tax.transaction t JOIN gen_tax.location l ON l.id = t.location_id
               JOIN gen_tax.currency c ON c.code = t.currency
              WHERE t.tax_amount IS NULL
                 OR (l.country = 'FR' AND t.tax_amount <> round(t.amount * 0.20, c.minor_units))
                 OR (l.country = 'US' AND t.tax_amount <> 0)",
        );
        assert_eq!(wrong, Ok(Some(0)));
        let french = Spi::get_one::<i64>(
            "SELECT count(*) FROM gen_tax.transaction t JOIN gen_tax.location l ON l.id = t.location_id
              WHERE l.country = 'FR' AND t.tax_amount > 0",
        );
        assert!(matches!(french, Ok(Some(n)) if n > 0));
        let premium =
            Spi::get_one::<i64>("SELECT count(*) FROM gen_tax.customer WHERE segment = 'premium'");
        assert!(
            matches!(premium, Ok(Some(n)) if n > 10 && n < 100),
            "{premium:?}"
        );
        // A schema of an earlier version, without the columns, is still filled.
        Spi::run(
            "SELECT platform.create_payments_schema('gen_old');
             ALTER TABLE gen_old.customer DROP COLUMN segment;
             ALTER TABLE gen_old.transaction DROP COLUMN tax_amount;",
        )
        .unwrap();
        let n = Spi::get_one::<i64>(
            "SELECT rows_inserted FROM platform.generate_payments('gen_old', 50, 5, 200) WHERE table_name = 'transaction'",
        );
        assert_eq!(n, Ok(Some(200)));
    }

    #[pg_test]
    fn planted_fraud_is_labelled_and_has_the_shape_of_its_kind() {
        Spi::run(
            "SELECT platform.create_payments_schema('gen_fraud');
             SELECT count(*) FROM platform.generate_payments('gen_fraud', 500, 60, 20000, fraud_rate => 0.02)",
        )
        .unwrap();
        let share = |filter: &str| {
            count(&format!(
                "SELECT count(*) FROM gen_fraud.transaction WHERE {filter}"
            ))
        };
        let fraud = share("fraud_label IS NOT NULL");
        assert!((280..=520).contains(&fraud), "fraud {fraud}/20000 at 2%");
        for (kind, lo, hi) in [
            ("card_testing", 80, 220),
            ("account_takeover", 80, 200),
            ("compromised_merchant", 60, 180),
        ] {
            let n = share(&format!("fraud_label = '{kind}'"));
            assert!((lo..=hi).contains(&n), "{kind}: {n}");
        }
        // Ids still grow with time, planted bursts included.
        assert_eq!(
            count(
                "SELECT count(*) FROM (SELECT occurred_at < lag(occurred_at) OVER (ORDER BY id) AS back
                                         FROM gen_fraud.transaction) t WHERE back"
            ),
            0
        );
        // Card testing: bursts of 8 on one card at one merchant within minutes, tiny
        // amounts, from a device the card's customer does not own.
        assert_eq!(
            count(
                "SELECT count(*) FROM (
                     SELECT (id - 1) / 8 AS burst, count(*) AS n, count(DISTINCT payment_method_id) AS cards,
                            count(DISTINCT merchant_id) AS shops, max(occurred_at) - min(occurred_at) AS span
                       FROM gen_fraud.transaction WHERE fraud_label = 'card_testing' GROUP BY 1) b
                  WHERE n <> 8 OR cards <> 1 OR shops <> 1 OR span > interval '6 minutes'"
            ),
            0
        );
        assert_eq!(
            share(
                "fraud_label = 'card_testing' AND (currency IN ('USD', 'EUR', 'GBP') AND amount > 3
                     OR device_id IN (SELECT id FROM gen_fraud.device d WHERE d.customer_id = transaction.customer_id))"
            ),
            0
        );
        // Account takeover: another city than home, a stranger's device, mostly at night,
        // far above the usual amount.
        assert_eq!(
            share(
                "fraud_label = 'account_takeover' AND (
                     (SELECT city FROM gen_fraud.location WHERE id = location_id)
                   = (SELECT l.city FROM gen_fraud.customer c JOIN gen_fraud.location l ON l.id = c.home_location_id
                       WHERE c.id = customer_id)
                  OR device_id IN (SELECT id FROM gen_fraud.device d WHERE d.customer_id = transaction.customer_id))"
            ),
            0
        );
        let night = share(
            "fraud_label = 'account_takeover' AND extract(hour FROM occurred_at AT TIME ZONE 'UTC') < 6",
        );
        let takeovers = share("fraud_label = 'account_takeover'");
        assert!(night * 2 > takeovers, "night {night} of {takeovers}");
        let ratio = Spi::get_one::<f64>(
            "SELECT (avg(amount) FILTER (WHERE fraud_label = 'account_takeover')
                     / avg(amount) FILTER (WHERE fraud_label IS NULL))::float8
               FROM gen_fraud.transaction WHERE currency = 'USD'",
        )
        .ok()
        .flatten()
        .unwrap_or(0.0);
        assert!(ratio > 4.0, "takeover amounts {ratio}x the legitimate mean");
        // Compromised merchants: three at most, no device.
        assert_eq!(
            count(
                "SELECT (count(DISTINCT merchant_id) > 3 OR bool_or(device_id IS NOT NULL))::int::bigint
                   FROM gen_fraud.transaction WHERE fraud_label = 'compromised_merchant'"
            ),
            0
        );
        // Fraud draws from its own streams: legitimate rows are those of a load without it.
        let args = "2000, 42, 500, 60, '2026-01-01', 90";
        assert_eq!(
            count(&format!(
                "SELECT count(*) FROM platform.generate_transaction_rows(1, 2000, {args}, 0.02) f
                   JOIN platform.generate_transaction_rows(1, 2000, {args}, 0) n USING (id)
                  WHERE f.fraud_label IS NULL AND f::text <> n::text"
            )),
            0
        );
        assert_eq!(
            count(&format!(
                "SELECT count(*) FROM platform.generate_transaction_rows(1, 2000, {args}, 0) WHERE fraud_label IS NOT NULL"
            )),
            0
        );
    }

    #[pg_test]
    fn zero_rows_is_a_valid_request() {
        Spi::run("SELECT platform.create_payments_schema('gen_zero', partition_months => 0)")
            .unwrap();
        let total = Spi::get_one::<i64>(
            "SELECT sum(rows_inserted)::bigint FROM platform.generate_payments('gen_zero', 0, 0, 0)",
        );
        assert_eq!(total, Ok(Some(0)));
        assert_eq!(count("SELECT count(*) FROM gen_zero.currency"), 14);
    }
}

#[cfg(test)]
mod integration {
    use crate::testing::{client, expect_error, one};

    #[test]
    fn bad_generator_input_is_refused_without_partial_state() {
        let mut c = client();
        c.batch_execute(
            "DROP SCHEMA IF EXISTS gen_bad CASCADE;
             SELECT platform.create_payments_schema('gen_bad');",
        )
        .expect("create");
        for (sql, state, needle) in [
            (
                "SELECT * FROM platform.generate_payments('gen_bad', -5, 10, 100)",
                "22023",
                "customers -5",
            ),
            (
                "SELECT * FROM platform.generate_payments('gen_bad', 10, 10, -1)",
                "22023",
                "transactions -1",
            ),
            (
                "SELECT * FROM platform.generate_payments('gen_bad', 0, 10, 100)",
                "22023",
                "at least one customer",
            ),
            (
                "SELECT * FROM platform.generate_payments('gen_bad', 10, 10, 10, days => 0)",
                "22023",
                "days 0",
            ),
            (
                "SELECT * FROM platform.generate_payments('gen_bad', 10, 10, 10, fraud_rate => 0.5)",
                "22023",
                "fraud_rate 0.5",
            ),
            (
                "SELECT * FROM platform.generate_payments('gen_bad', 10, 10, 10, fraud_rate => -0.01)",
                "22023",
                "fraud_rate -0.01",
            ),
            (
                "SELECT * FROM platform.generate_payments('no_such_schema', 10, 10, 10)",
                "3F000",
                "no_such_schema",
            ),
            (
                "SELECT * FROM platform.generate_payments('public', 10, 10, 10)",
                "42P01",
                "location",
            ),
        ] {
            let (code, msg) = expect_error(&mut c, sql);
            assert_eq!(code, state, "{sql}: {msg}");
            assert!(msg.contains(needle), "{sql}: {msg}");
        }
        assert_eq!(
            one::<i64>(&mut c, "SELECT count(*) FROM gen_bad.customer"),
            0
        );

        c.batch_execute("SELECT * FROM platform.generate_payments('gen_bad', 10, 2, 50)")
            .expect("generate");
        let (code, msg) = expect_error(
            &mut c,
            "SELECT * FROM platform.generate_payments('gen_bad', 10, 2, 50)",
        );
        assert_eq!(code, "55000", "{msg}");
        assert_eq!(
            one::<i64>(&mut c, "SELECT count(*) FROM gen_bad.transaction"),
            50
        );
        assert_eq!(
            one::<i64>(&mut c, "SELECT count(*) FROM gen_bad.customer"),
            10
        );
    }

    #[test]
    fn bad_schema_names_are_refused() {
        let mut c = client();
        c.batch_execute("DROP SCHEMA IF EXISTS gen_busy CASCADE; CREATE SCHEMA gen_busy; CREATE TABLE gen_busy.mine (i int);")
            .expect("setup");
        let (code, msg) =
            expect_error(&mut c, "SELECT platform.create_payments_schema('gen_busy')");
        assert_eq!(code, "42P06", "{msg}");
        assert_eq!(
            one::<i64>(
                &mut c,
                "SELECT count(*) FROM pg_class WHERE relnamespace = 'gen_busy'::regnamespace"
            ),
            1
        );
        for name in ["pg_payments", "platform", "public"] {
            let (code, msg) = expect_error(
                &mut c,
                &format!("SELECT platform.create_payments_schema('{name}')"),
            );
            assert_eq!(code, "42939", "{name}: {msg}");
        }
        let (code, _) = expect_error(
            &mut c,
            "SELECT platform.create_payments_schema('gen_x', partition_months => -1)",
        );
        assert_eq!(code, "22023");
        assert!(!one::<bool>(
            &mut c,
            "SELECT EXISTS (SELECT FROM pg_namespace WHERE nspname = 'gen_x')"
        ));
    }

    /// The seed's ACID scenario: a status change and its state-change row commit together,
    /// and an illegal change rolls back everything the transaction did.
    #[test]
    fn status_change_is_atomic() {
        let mut c = client();
        c.batch_execute(
            "DROP SCHEMA IF EXISTS acid CASCADE;
             SELECT platform.create_payments_schema('acid');
             SELECT * FROM platform.generate_payments('acid', 20, 3, 200);",
        )
        .expect("setup");
        let id: i64 = one(
            &mut c,
            "SELECT min(id) FROM acid.transaction WHERE status_id = 2",
        );

        // refunded, then back to successful (refunded is final): the whole transaction rolls back.
        c.batch_execute("BEGIN").expect("begin");
        c.batch_execute(&format!(
            "SELECT acid.change_transaction_status({id}, 'refunded', 'customer request')"
        ))
        .expect("first change");
        let (code, msg) = expect_error(
            &mut c,
            &format!("SELECT acid.change_transaction_status({id}, 'successful', 'oops')"),
        );
        assert_eq!(code, "23514", "{msg}");
        assert!(msg.contains("refunded -> successful"), "{msg}");
        c.batch_execute("ROLLBACK").expect("rollback");
        assert_eq!(
            one::<i16>(
                &mut c,
                &format!("SELECT status_id FROM acid.transaction WHERE id = {id}")
            ),
            2
        );
        assert_eq!(
            one::<i64>(&mut c, "SELECT count(*) FROM acid.transaction_state_change"),
            0
        );

        // A legal change commits both rows.
        c.batch_execute(&format!(
            "SELECT acid.change_transaction_status({id}, 'disputed', 'cardholder called')"
        ))
        .expect("legal change");
        assert_eq!(
            one::<i16>(
                &mut c,
                &format!("SELECT status_id FROM acid.transaction WHERE id = {id}")
            ),
            5
        );
        assert_eq!(
            one::<String>(&mut c, &format!(
                "SELECT from_status_id || '>' || to_status_id || ':' || reason FROM acid.transaction_state_change
                  WHERE transaction_id = {id}"
            )),
            "2>5:cardholder called"
        );

        let (code, _) = expect_error(
            &mut c,
            &format!("SELECT acid.change_transaction_status({id}, 'teleported', 'x')"),
        );
        assert_eq!(code, "22023");
        let (code, _) = expect_error(
            &mut c,
            "SELECT acid.change_transaction_status(-1, 'refunded', 'x')",
        );
        assert_eq!(code, "P0002");
        let (code, _) = expect_error(
            &mut c,
            &format!("SELECT acid.change_transaction_status({id}, 'successful', '')"),
        );
        assert_eq!(code, "23514");
        assert_eq!(
            one::<i64>(&mut c, "SELECT count(*) FROM acid.transaction_state_change"),
            1
        );
    }
}
