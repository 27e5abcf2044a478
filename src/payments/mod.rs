//! The reference payments schema (3NF) and its deterministic data generator.
//!
//! Application schemas are not extension members: `platform.create_payments_schema` creates
//! them in a schema the caller names, so `DROP EXTENSION` never drops business data.

mod data;
mod generator;
#[cfg(any(test, feature = "pg_test"))]
mod tests;

use crate::error::{OrRaise, SpiFailure, SqlError};
use crate::sql::{modify as insert, run};
use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;
use pgrx::spi::quote_identifier;
use pgrx::PgSqlErrorCode;
use std::time::Instant;

const SCHEMA_SQL: &str = include_str!("../../sql/payments_schema.sql");

/// Rows per INSERT when loading transactions: bounds memory, not visible in the result.
const TRANSACTION_CHUNK: i64 = 100_000;

#[derive(Debug, thiserror::Error)]
pub enum PaymentsError {
    #[error("invalid {argument} {value}: {rule}")]
    InvalidArgument {
        argument: &'static str,
        value: String,
        rule: &'static str,
    },
    #[error("schema name \"{0}\" is reserved")]
    ReservedSchema(String),
    #[error("schema \"{0}\" already exists and is not empty")]
    SchemaNotEmpty(String),
    #[error("schema \"{0}\" does not exist")]
    NoSuchSchema(String),
    #[error("schema \"{0}\" does not hold the payments tables (missing table \"{1}\")")]
    NotAPaymentsSchema(String, &'static str),
    #[error("schema \"{0}\" already holds generated data (table \"{1}\" is not empty)")]
    AlreadyHasData(String, &'static str),
}

impl SqlError for PaymentsError {
    fn sqlstate(&self) -> PgSqlErrorCode {
        use PgSqlErrorCode::*;
        match self {
            Self::InvalidArgument { .. } => ERRCODE_INVALID_PARAMETER_VALUE,
            Self::ReservedSchema(_) => ERRCODE_RESERVED_NAME,
            Self::SchemaNotEmpty(_) => ERRCODE_DUPLICATE_SCHEMA,
            Self::NoSuchSchema(_) => ERRCODE_INVALID_SCHEMA_NAME,
            Self::NotAPaymentsSchema(..) => ERRCODE_UNDEFINED_TABLE,
            Self::AlreadyHasData(..) => ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
        }
    }

    fn hint(&self) -> Option<String> {
        Some(match self {
            Self::InvalidArgument { .. } => return None,
            Self::ReservedSchema(_) => "Choose a name that does not start with pg_ and is not platform, public or information_schema.".into(),
            Self::SchemaNotEmpty(s) => format!("Choose another schema name, or DROP SCHEMA {} CASCADE first.", quote_identifier(s)),
            Self::NoSuchSchema(s) | Self::NotAPaymentsSchema(s, _) => {
                format!("Create it with SELECT platform.create_payments_schema({});", pgrx::spi::quote_literal(s))
            }
            Self::AlreadyHasData(s, _) => format!(
                "Generate into a fresh schema (platform.create_payments_schema), or DROP SCHEMA {} CASCADE and create it again.",
                quote_identifier(s)
            ),
        })
    }
}

fn check(
    ok: bool,
    argument: &'static str,
    value: impl ToString,
    rule: &'static str,
) -> Result<(), PaymentsError> {
    if ok {
        Ok(())
    } else {
        Err(PaymentsError::InvalidArgument {
            argument,
            value: value.to_string(),
            rule,
        })
    }
}

fn is_reserved_schema(name: &str) -> bool {
    name.starts_with("pg_")
        || name == "platform"
        || name == "information_schema"
        || name == "public"
}

/// Creates the reference payments schema (customers, merchants, currencies, payment
/// methods, devices, locations, billing addresses, statuses and their allowed transitions,
/// transactions range-partitioned by month on `occurred_at`, state changes) in a new or
/// empty schema, with reference data and the function `<schema>.change_transaction_status`.
#[pg_extern]
fn create_payments_schema(
    schema_name: default!(crate::sql::UnconvertedText, "'payments'"),
    partitions_from: default!(Date, "'2026-01-01'"),
    partition_months: default!(i32, 3),
) {
    let schema_name = schema_name.as_str();
    let name = schema_name;
    check(
        !name.is_empty() && name.len() < 64,
        "schema_name",
        format!("\"{name}\""),
        "must be 1 to 63 bytes",
    )
    .or_raise();
    check(
        (0..=1200).contains(&partition_months),
        "partition_months",
        partition_months,
        "must be between 0 and 1200",
    )
    .or_raise();
    check(
        partitions_from.is_finite(),
        "partitions_from",
        partitions_from,
        "must be a finite date",
    )
    .or_raise();
    if is_reserved_schema(name) {
        crate::error::raise(PaymentsError::ReservedSchema(name.into()));
    }
    let q = quote_identifier(name);
    let exists = crate::sql::read::<bool>(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = $1)",
        &[name.into()],
    )
    .unwrap_or(false);
    if exists {
        let used = crate::sql::read::<bool>(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_namespace n ON d.refobjid = n.oid
                             WHERE n.nspname = $1 AND d.refclassid = 'pg_catalog.pg_namespace'::regclass)",
        &[name.into()],
    )
        .unwrap_or(true);
        if used {
            crate::error::raise(PaymentsError::SchemaNotEmpty(name.into()));
        }
    } else {
        run(&format!("CREATE SCHEMA {q}"));
    }
    run(&SCHEMA_SQL.replace("@schema@", &q));

    let currencies: Vec<String> = data::CURRENCIES
        .iter()
        .map(|(code, cname, minor, _)| format!("('{code}', '{cname}', {minor})"))
        .collect();
    run(&format!(
        "INSERT INTO {q}.currency (code, name, minor_units) VALUES {}",
        currencies.join(", ")
    ));

    // Monthly partitions named <parent>_pYYYYMMDD, the convention partition management adopts.
    let (mut year, mut month) = (partitions_from.year(), partitions_from.month());
    for _ in 0..partition_months {
        let (next_year, next_month) = if month == 12 {
            (year + 1, 1)
        } else {
            (year, month + 1)
        };
        run(&format!(
            "CREATE TABLE {q}.{part} PARTITION OF {q}.transaction
                 FOR VALUES FROM ('{year:04}-{month:02}-01 00:00:00+00') TO ('{next_year:04}-{next_month:02}-01 00:00:00+00')",
            part = quote_identifier(format!("transaction_p{year:04}{month:02}01")),
        ));
        (year, month) = (next_year, next_month);
    }
}

/// (drop, re-create) statements for the foreign keys, the unique constraints no key
/// references and the secondary (non-constraint) indexes declared on `tables`.
fn deferred_objects(tables: &[String]) -> Vec<(String, String)> {
    Spi::connect(|c| {
        let rows = c.select(
            "SELECT format('DROP INDEX %s', i.indexrelid::regclass), pg_catalog.pg_get_indexdef(i.indexrelid)
               FROM pg_catalog.pg_index i
              WHERE i.indrelid = ANY($1::text[]::regclass[])
                AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint k WHERE k.conindid = i.indexrelid)
             UNION ALL
             SELECT format('ALTER TABLE %s DROP CONSTRAINT %I', conrelid::regclass, conname),
                    format('ALTER TABLE %s ADD CONSTRAINT %I %s', conrelid::regclass, conname,
                           pg_catalog.pg_get_constraintdef(oid))
               FROM pg_catalog.pg_constraint
              WHERE conparentid = 0 AND conrelid = ANY($1::text[]::regclass[])
                AND (contype = 'f'
                     OR contype = 'u' AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint r
                                                       WHERE r.contype = 'f' AND r.conindid = pg_constraint.conindid))",
            None,
            &[tables.to_vec().into()],
        )?;
        let mut out = Vec::new();
        for row in rows {
            out.push((row.get::<String>(1)?.unwrap_or_default(), row.get::<String>(2)?.unwrap_or_default()));
        }
        Ok::<_, pgrx::spi::SpiError>(out)
    })
    .map_err(SpiFailure::from)
    .or_raise()
}

/// Fills an empty payments schema with deterministic, realistic data: the same arguments
/// always give the same rows. Customers and merchants are skewed (a few carry much of the
/// volume), most payments happen near the customer's home, amounts are log-normal in the
/// merchant's currency around each customer's usual amount, transaction ids grow with
/// time over `days` from `start_at`. About `fraud_rate` of the payments (default 0.5%) are
/// planted fraud (card-testing bursts, account takeovers, compromised merchants), labelled
/// in `transaction.fraud_label`, a column fraud scoring never reads.
/// Returns the rows inserted and the seconds spent per table, and a last row
/// `(keys and indexes)` for re-creating the foreign keys and indexes after the load.
#[allow(clippy::too_many_arguments)]
#[pg_extern]
fn generate_payments(
    schema_name: crate::sql::UnconvertedText,
    customers: default!(i32, 1000),
    merchants: default!(i32, 100),
    transactions: default!(i64, 10000),
    seed: default!(i64, 42),
    start_at: default!(TimestampWithTimeZone, "'2026-01-01 00:00:00+00'"),
    days: default!(i32, 90),
    fraud_rate: default!(f64, 0.005),
) -> TableIterator<
    'static,
    (
        name!(table_name, String),
        name!(rows_inserted, i64),
        name!(seconds, f64),
    ),
> {
    let schema_name = schema_name.as_str();
    check(customers >= 0, "customers", customers, "must be >= 0").or_raise();
    check(merchants >= 0, "merchants", merchants, "must be >= 0").or_raise();
    check(
        transactions >= 0,
        "transactions",
        transactions,
        "must be >= 0",
    )
    .or_raise();
    check(
        (1..=36_500).contains(&days),
        "days",
        days,
        "must be between 1 and 36500",
    )
    .or_raise();
    check(
        (0.0..=0.2).contains(&fraud_rate),
        "fraud_rate",
        fraud_rate,
        "must be between 0 and 0.2",
    )
    .or_raise();
    check(
        start_at.is_finite(),
        "start_at",
        start_at,
        "must be a finite timestamp",
    )
    .or_raise();
    check(
        transactions == 0 || (customers > 0 && merchants > 0),
        "transactions",
        transactions,
        "need at least one customer and one merchant",
    )
    .or_raise();

    let q = quote_identifier(schema_name);
    let schema_exists = crate::sql::read::<bool>(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = $1)",
        &[schema_name.into()],
    )
    .unwrap_or(false);
    if !schema_exists {
        crate::error::raise(PaymentsError::NoSuchSchema(schema_name.into()));
    }
    const TABLES: [&str; 8] = [
        "location",
        "customer",
        "billing_address",
        "merchant",
        "payment_method",
        "device",
        "transaction",
        "currency",
    ];
    for table in TABLES {
        let found = crate::sql::read::<bool>(
        "SELECT pg_catalog.to_regclass(pg_catalog.quote_ident($1) || '.' || pg_catalog.quote_ident($2)) IS NOT NULL",
        &[schema_name.into(), table.into()],
    )
        .unwrap_or(false);
        if !found {
            crate::error::raise(PaymentsError::NotAPaymentsSchema(schema_name.into(), table));
        }
    }
    for table in ["location", "customer", "merchant", "transaction"] {
        let used =
            crate::sql::read::<bool>(&format!("SELECT EXISTS (SELECT 1 FROM {q}.{table})"), &[])
                .unwrap_or(false);
        if used {
            crate::error::raise(PaymentsError::AlreadyHasData(schema_name.into(), table));
        }
    }

    // Bulk load as the PostgreSQL manual advises ("Populating a Database"): every generated
    // row satisfies the constraints by construction, so each foreign key is dropped for the
    // load and added back after it, which validates it once with one join instead of one RI
    // trigger call per row; secondary indexes and unreferenced unique constraints are built
    // once, by sorting, after the rows are in (a unique violation would still fail the
    // load). All in the caller's transaction: an error leaves nothing behind.
    let loaded: Vec<String> = TABLES[..7].iter().map(|t| format!("{q}.{t}")).collect();
    let deferred = deferred_objects(&loaded);
    run("SET LOCAL maintenance_work_mem = '256MB'");
    run("SET LOCAL work_mem = '64MB'");
    for (drop, _) in &deferred {
        run(drop);
    }

    let (customers, merchants) = (i64::from(customers), i64::from(merchants));
    let locations = if customers > 0 {
        generator::location_count(customers)
    } else {
        0
    };
    // Schemas made before 0.5.0 have no customer segment and no tax amount: the generator
    // fills the columns the schema has.
    let has_column = |table: &str, column: &str| {
        crate::sql::read::<bool>(
            "SELECT true FROM pg_catalog.pg_attribute
              WHERE attrelid = to_regclass($1) AND attname = $2 AND NOT attisdropped",
            &[format!("{q}.{table}").as_str().into(), column.into()],
        )
        .is_some()
    };
    let customer_select = if has_column("customer", "segment") {
        "(id, external_id, full_name, email, phone, date_of_birth, home_location_id, created_at, segment)
         SELECT * FROM platform.generate_customer_rows($1, $2, $3, $4)"
    } else {
        "(id, external_id, full_name, email, phone, date_of_birth, home_location_id, created_at)
         SELECT id, external_id, full_name, email, phone, date_of_birth, home_location_id, created_at
           FROM platform.generate_customer_rows($1, $2, $3, $4)"
    };
    let (mut extra_columns, mut extra_values) = (String::new(), String::new());
    if has_column("transaction", "tax_amount") {
        extra_columns.push_str(", tax_amount");
        extra_values.push_str(", tax_amount::numeric(18,2)");
    }
    if has_column("transaction", "fraud_label") {
        extra_columns.push_str(", fraud_label");
        extra_values.push_str(", fraud_label");
    }
    let steps: [(&str, &str, Vec<DatumWithOid>); 6] = [
        (
            "location",
            "SELECT id, country, city, latitude, longitude, ip_network::cidr FROM platform.generate_location_rows($1, $2)",
            vec![locations.into(), seed.into()],
        ),
        (
            "customer",
            customer_select,
            vec![customers.into(), seed.into(), locations.into(), start_at.into()],
        ),
        (
            "billing_address",
            "SELECT * FROM platform.generate_billing_address_rows($1, $2, $3)",
            vec![customers.into(), seed.into(), locations.into()],
        ),
        (
            "merchant",
            "SELECT * FROM platform.generate_merchant_rows($1, $2, $3)",
            vec![merchants.into(), seed.into(), start_at.into()],
        ),
        (
            "payment_method",
            "SELECT * FROM platform.generate_payment_method_rows($1, $2, $3)",
            vec![customers.into(), seed.into(), start_at.into()],
        ),
        (
            "device",
            "SELECT * FROM platform.generate_device_rows($1, $2, $3)",
            vec![customers.into(), seed.into(), start_at.into()],
        ),
    ];
    let mut done = Vec::new();
    for (table, select, args) in steps {
        let clock = Instant::now();
        let rows = insert(&format!("INSERT INTO {q}.{table} {select}"), &args);
        done.push((table, rows, clock.elapsed().as_secs_f64()));
    }

    let clock = Instant::now();
    let mut inserted = 0;
    let mut first_id = 1;
    while first_id <= transactions {
        let count = TRANSACTION_CHUNK.min(transactions - first_id + 1);
        inserted += insert(
            &format!(
                "INSERT INTO {q}.transaction (id, occurred_at, customer_id, merchant_id, payment_method_id, device_id,
                                              location_id, ip_address, amount, currency, status_id{extra_columns})
                 SELECT id, occurred_at, customer_id, merchant_id, payment_method_id, device_id,
                        location_id, ip_address::inet, amount::numeric(18,2), currency, status_id{extra_values}
                   FROM platform.generate_transaction_rows($1, $2, $3, $4, $5, $6, $7, $8, $9)"
            ),
            &[
                first_id.into(),
                count.into(),
                transactions.into(),
                seed.into(),
                customers.into(),
                merchants.into(),
                start_at.into(),
                days.into(),
                fraud_rate.into(),
            ],
        );
        first_id += count;
    }
    done.push(("transaction", inserted, clock.elapsed().as_secs_f64()));

    let clock = Instant::now();
    for (_, create) in deferred.iter().rev() {
        run(create);
    }
    done.push(("(keys and indexes)", 0, clock.elapsed().as_secs_f64()));
    TableIterator::new(
        done.into_iter()
            .map(|(t, n, secs)| (t.to_string(), n, secs)),
    )
}
