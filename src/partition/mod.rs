//! Time partition management: partitions made ahead, retention, rows rescued from the
//! default partition, privileges kept in line with the parent, a maintenance worker.
//!
//! Registration lives in `platform.partition_config` (kept by pg_dump). Everything else is
//! derived from the catalog on each run, so a partition made or dropped by hand is seen as
//! it is; nothing here keeps a second copy of the partition list that could drift.

mod calendar;
mod maintenance;
#[cfg(any(test, feature = "pg_test"))]
mod tests;

use crate::error::{OrRaise, SqlError};
use crate::sql::RegClass;
use calendar::{Step, StepRule, STEP_RULE};
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

pub use maintenance::{needs_maintenance, worker_task};

/// Partitions one call may create: a typo in `start` must not create a million tables.
const MAX_NEW_PARTITIONS: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum PartitionError {
    #[error("invalid {argument} {value}: {rule}")]
    InvalidArgument {
        argument: &'static str,
        value: String,
        rule: &'static str,
    },
    #[error("table {0} is not partitioned")]
    NotPartitioned(String),
    #[error("table {0} is partitioned by {1}, not by range")]
    NotRange(String, &'static str),
    #[error("table {0} is not partitioned by one plain column")]
    KeyNotColumn(String),
    #[error("column \"{1}\" of table {0} does not exist")]
    NoSuchColumn(String, String),
    #[error("table {0} is partitioned by column \"{1}\", not by \"{2}\"")]
    WrongKeyColumn(String, String, String),
    #[error("partition key \"{1}\" of table {0} has type {2}; time partitions need date, timestamp or timestamptz")]
    WrongKeyType(String, String, String),
    #[error("a date column cannot be partitioned by {0}")]
    SubDayDate(String),
    #[error("table {0} is already registered for partition management")]
    AlreadyRegistered(String),
    #[error("table {0} is not registered for partition management")]
    NotRegistered(String),
    #[error("the table registered for partition management as {0} no longer exists")]
    ParentGone(String),
    #[error("must be owner of table {0} to manage its partitions")]
    NotOwner(String),
    #[error("{0} would need {1} new partitions, more than the {max} one call may create", max = MAX_NEW_PARTITIONS)]
    TooManyPartitions(String, usize),
    #[error("relation {0} already exists but is not a partition of {1}")]
    NameTaken(String, String),
}

impl SqlError for PartitionError {
    fn sqlstate(&self) -> PgSqlErrorCode {
        use PgSqlErrorCode::*;
        match self {
            Self::InvalidArgument { .. } | Self::SubDayDate(_) => ERRCODE_INVALID_PARAMETER_VALUE,
            Self::NotPartitioned(_) | Self::NotRange(..) | Self::KeyNotColumn(_) => {
                ERRCODE_WRONG_OBJECT_TYPE
            }
            Self::NoSuchColumn(..) => ERRCODE_UNDEFINED_COLUMN,
            Self::WrongKeyColumn(..) => ERRCODE_INVALID_PARAMETER_VALUE,
            Self::WrongKeyType(..) => ERRCODE_DATATYPE_MISMATCH,
            Self::AlreadyRegistered(_) => ERRCODE_DUPLICATE_OBJECT,
            Self::NotRegistered(_) => ERRCODE_UNDEFINED_OBJECT,
            Self::ParentGone(_) => ERRCODE_UNDEFINED_TABLE,
            Self::NotOwner(_) => ERRCODE_INSUFFICIENT_PRIVILEGE,
            Self::TooManyPartitions(..) => ERRCODE_PROGRAM_LIMIT_EXCEEDED,
            Self::NameTaken(..) => ERRCODE_DUPLICATE_TABLE,
        }
    }

    fn hint(&self) -> Option<String> {
        Some(match self {
            Self::InvalidArgument { .. } => return None,
            Self::NotPartitioned(t) => format!("Create {t} with PARTITION BY RANGE (<time column>) and move the data into it; pg_platform manages tables that are already range-partitioned."),
            Self::NotRange(..) | Self::KeyNotColumn(_) => "Time partition management needs PARTITION BY RANGE on a single date, timestamp or timestamptz column.".into(),
            Self::NoSuchColumn(t, _) => format!("Name the column {t} is partitioned by."),
            Self::WrongKeyColumn(_, key, _) => format!("Pass control => '{key}'."),
            Self::WrongKeyType(..) => "Partition by a date, timestamp or timestamptz column.".into(),
            Self::SubDayDate(_) => "Use a step of at least 1 day, or partition by a timestamp column.".into(),
            Self::AlreadyRegistered(t) => format!("Change the policy with platform.set_retention({t}, ...) or platform.set_premake, or remove it with platform.undo_partitioning first."),
            Self::NotRegistered(_) => "Register it with platform.partition_by_time(...).".into(),
            Self::ParentGone(t) => format!("Remove the registration with SELECT platform.undo_partitioning({});", pgrx::spi::quote_literal(t)),
            Self::NotOwner(t) => format!("Run it as the owner of {t} or a member of the owning role."),
            Self::TooManyPartitions(..) => "Choose a later start or a longer step.".into(),
            Self::NameTaken(t, _) => format!("Rename or drop {t}, then run platform.run_maintenance again."),
        })
    }
}

fn invalid(argument: &'static str, value: impl ToString, rule: &'static str) -> PartitionError {
    PartitionError::InvalidArgument {
        argument,
        value: value.to_string(),
        rule,
    }
}

/// What retention does with a partition whose whole range is older than the retention.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetentionAction {
    Drop,
    Detach,
    /// Written to the lake of every sink that lands the table, then dropped.
    Archive,
}

impl RetentionAction {
    fn parse(text: &str) -> Result<Self, PartitionError> {
        match text {
            "drop" => Ok(Self::Drop),
            "detach" => Ok(Self::Detach),
            "archive" => Ok(Self::Archive),
            other => Err(invalid(
                "retention_action",
                format!("\"{other}\""),
                "must be drop, detach or archive",
            )),
        }
    }
}

fn parse_step(step: &Interval) -> Result<Step, PartitionError> {
    Step::from_interval(step.months(), step.days(), step.micros()).map_err(|rule| {
        let why = match rule {
            StepRule::TooSmall => "the smallest step is 1 hour",
            StepRule::TooLarge => "the largest step is 1 year",
            StepRule::Mixed => STEP_RULE,
        };
        invalid("step", format!("'{}'", interval_text(step)), why)
    })
}

fn interval_text(i: &Interval) -> String {
    crate::sql::read::<String>("SELECT $1::text", &[(*i).into()]).unwrap_or_default()
}

fn check_premake(premake: i32) -> Result<(), PartitionError> {
    if (0..=1000).contains(&premake) {
        Ok(())
    } else {
        Err(invalid("premake", premake, "must be between 0 and 1000"))
    }
}

fn check_retention(retention: &Option<Interval>) -> Result<(), PartitionError> {
    match retention {
        Some(r)
            if r.months() < 0
                || r.days() < 0
                || r.micros() < 0
                || (r.months() == 0 && r.days() == 0 && r.micros() == 0) =>
        {
            Err(invalid(
                "retention",
                format!("'{}'", interval_text(r)),
                "must be a positive interval, or NULL to keep every partition",
            ))
        }
        _ => Ok(()),
    }
}

/// The result row of a maintenance pass (pgrx needs it spelled out in each signature).
type Report = TableIterator<
    'static,
    (
        name!(parent, RegClass),
        name!(partitions_created, i32),
        name!(partitions_retired, i32),
        name!(rows_moved, i64),
        name!(privileges_synced, i32),
        name!(error, Option<String>),
    ),
>;

fn report(rows: Vec<maintenance::Outcome>) -> Report {
    TableIterator::new(rows.into_iter().map(|o| {
        (
            RegClass(o.parent),
            o.created,
            o.retired,
            o.moved,
            o.synced,
            o.error,
        )
    }))
}

/// Registers a table that is already `PARTITION BY RANGE` on a date, timestamp or
/// timestamptz column and creates its partitions: from `start` (default: now) to `premake`
/// steps ahead, plus a default partition. `step` is whole hours (up to 24), days (up to
/// 366) or months (up to 12); days and months follow the calendar of `time_zone` (default:
/// the session's) for timestamptz columns, hours are absolute. Partitions are named
/// `<parent>_pYYYYMMDD` (`_pYYYYMMDD_HH24MI` below a day) and get the parent's indexes,
/// constraints, owner and privileges. Retention (`drop` or `detach`) retires partitions
/// whose whole range is older than `retention`. All or nothing: on any error nothing is
/// registered or created.
#[pg_extern]
#[allow(clippy::too_many_arguments)]
fn partition_by_time(
    parent: RegClass,
    control: crate::sql::UnconvertedText,
    step: Interval,
    premake: default!(i32, 4),
    start: default!(Option<TimestampWithTimeZone>, "NULL"),
    retention: default!(Option<Interval>, "NULL"),
    retention_action: default!(crate::sql::UnconvertedText, "'drop'"),
    with_default: default!(bool, true),
    time_zone: default!(Option<crate::sql::UnconvertedText>, "NULL"),
) -> TableIterator<
    'static,
    (
        name!(parent, RegClass),
        name!(partitions_created, i32),
        name!(partitions_retired, i32),
        name!(rows_moved, i64),
        name!(privileges_synced, i32),
        name!(error, Option<String>),
    ),
> {
    let control = control.as_str();
    let retention_action = retention_action.as_str();
    let time_zone = time_zone.as_deref();
    let step_kind = parse_step(&step).or_raise();
    check_premake(premake).or_raise();
    check_retention(&retention).or_raise();
    RetentionAction::parse(retention_action).or_raise();
    let zone = if step_kind.is_sub_day() {
        "UTC".to_string()
    } else {
        match time_zone {
            Some(z) => z.to_string(),
            None => crate::sql::read::<String>("SELECT current_setting('TimeZone')", &[])
                .unwrap_or_else(|| "UTC".into()),
        }
    };
    // Refuses an unknown zone with PostgreSQL's own error (22023).
    crate::sql::read::<String>(
        "SELECT (now() AT TIME ZONE $1)::text",
        &[zone.as_str().into()],
    );
    let registered = crate::sql::read::<bool>(
        "SELECT EXISTS (SELECT 1 FROM platform.partition_config WHERE parent = $1)",
        &[parent.into()],
    )
    .unwrap_or(false);
    if registered {
        crate::error::raise(PartitionError::AlreadyRegistered(maintenance::label(
            parent.0,
        )));
    }
    crate::sql::modify(
        "INSERT INTO platform.partition_config
             (parent, control, step, premake, time_zone, retention, retention_action, with_default)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        &[
            parent.into(),
            control.into(),
            step.into(),
            premake.into(),
            zone.as_str().into(),
            retention.into(),
            retention_action.into(),
            with_default.into(),
        ],
    );
    let outcome = maintenance::maintain(parent.0, start, true);
    report(vec![outcome])
}

/// Creates missing partitions up to `premake` steps ahead, moves rows out of the default
/// partition into proper partitions (made as needed), applies retention and copies the
/// parent's owner and privileges to partitions that differ; for one registered table, or
/// for all (`NULL`). Idempotent and safe to run concurrently (per-table advisory lock).
/// With all tables, each is done in its own subtransaction: one that fails (for example on
/// `platform.maintenance_lock_timeout`) is reported in `error` and the others go on.
#[pg_extern]
fn run_maintenance(
    parent: default!(Option<RegClass>, "NULL"),
) -> TableIterator<
    'static,
    (
        name!(parent, RegClass),
        name!(partitions_created, i32),
        name!(partitions_retired, i32),
        name!(rows_moved, i64),
        name!(privileges_synced, i32),
        name!(error, Option<String>),
    ),
> {
    match parent {
        Some(p) => {
            maintenance::require_registered(p.0);
            report(vec![maintenance::maintain(p.0, None, false)])
        }
        None => report(maintenance::maintain_all()),
    }
}

/// Changes the retention policy of a registered table: `retention` NULL keeps every
/// partition; `retention_action` is `drop` or `detach`. Applied on the next maintenance.
#[pg_extern]
fn set_retention(
    parent: RegClass,
    retention: Option<Interval>,
    retention_action: default!(crate::sql::UnconvertedText, "'drop'"),
) {
    let retention_action = retention_action.as_str();
    check_retention(&retention).or_raise();
    RetentionAction::parse(retention_action).or_raise();
    maintenance::require_registered(parent.0);
    crate::sql::modify(
        "UPDATE platform.partition_config SET retention = $2, retention_action = $3 WHERE parent = $1",
        &[parent.into(), retention.into(), retention_action.into()],
    );
}

/// Changes how many partitions ahead of the current one maintenance keeps (0 to 1000).
#[pg_extern]
fn set_premake(parent: RegClass, premake: i32) {
    check_premake(premake).or_raise();
    maintenance::require_registered(parent.0);
    crate::sql::modify(
        "UPDATE platform.partition_config SET premake = $2 WHERE parent = $1",
        &[parent.into(), premake.into()],
    );
}

/// Stops managing a table: removes its registration and nothing else (partitions, data,
/// privileges stay as they are).
#[pg_extern]
fn undo_partitioning(parent: RegClass) {
    let removed = crate::sql::modify(
        "DELETE FROM platform.partition_config WHERE parent = $1",
        &[parent.into()],
    );
    if removed == 0 {
        crate::error::raise(PartitionError::NotRegistered(maintenance::label(parent.0)));
    }
}

pgrx::extension_sql!(
    r#"
CREATE TABLE platform.partition_config (
    parent           regclass PRIMARY KEY,
    control          text NOT NULL,
    step             interval NOT NULL,
    premake          integer NOT NULL CHECK (premake BETWEEN 0 AND 1000),
    time_zone        text NOT NULL,
    retention        interval,
    retention_action text NOT NULL DEFAULT 'drop' CHECK (retention_action IN ('drop', 'detach', 'archive')),
    with_default     boolean NOT NULL DEFAULT true,
    registered_at    timestamptz NOT NULL DEFAULT now(),
    registered_by    text NOT NULL DEFAULT session_user
);
COMMENT ON TABLE platform.partition_config IS 'Tables whose time partitions pg_platform manages (platform.partition_by_time). time_zone is the calendar the boundaries follow (UTC for steps below a day).';
SELECT pg_catalog.pg_extension_config_dump('platform.partition_config', '');
GRANT SELECT, INSERT, UPDATE, DELETE ON platform.partition_config TO platform_admin, platform_developer;
GRANT SELECT ON platform.partition_config TO platform_readonly;

CREATE VIEW platform.partitions AS
SELECT cfg.parent,
       p.oid::regclass AS partition,
       CASE WHEN b.lo <> '' THEN btrim(b.lo, '''') END AS lower_bound,
       CASE WHEN b.hi <> '' THEN btrim(b.hi, '''') END AS upper_bound,
       x.e = 'DEFAULT' AS is_default,
       CASE WHEN p.reltuples >= 0 THEN p.reltuples::bigint END AS rows_estimate,
       pg_catalog.pg_total_relation_size(p.oid) AS size_bytes,
       CASE WHEN b.lo LIKE '''%' THEN now() - btrim(b.lo, '''')::timestamptz END AS age
  FROM platform.partition_config cfg
  JOIN pg_catalog.pg_inherits i ON i.inhparent = cfg.parent
  JOIN pg_catalog.pg_class p ON p.oid = i.inhrelid
  CROSS JOIN LATERAL (SELECT pg_catalog.pg_get_expr(p.relpartbound, p.oid) AS e) x
  CROSS JOIN LATERAL (SELECT split_part(split_part(x.e, ') TO (', 1), 'FROM (', 2) AS lo,
                             rtrim(split_part(x.e, ') TO (', 2), ')') AS hi) b;
COMMENT ON VIEW platform.partitions IS 'Partitions of the tables pg_platform manages: bounds, estimated rows, size, whether default, age of the oldest time it may hold.';
GRANT SELECT ON platform.partitions TO platform_admin, platform_developer, platform_readonly;

-- A dropped table takes its registration with it (SECURITY DEFINER: the dropping role
-- need not see the platform schema).
CREATE FUNCTION platform.forget_dropped_partitioned_tables() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
BEGIN
    DELETE FROM platform.partition_config c
     USING pg_event_trigger_dropped_objects() d
     WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objsubid = 0
       AND d.objid = c.parent::oid;
END
$fn$;
REVOKE EXECUTE ON FUNCTION platform.forget_dropped_partitioned_tables() FROM PUBLIC;
CREATE EVENT TRIGGER platform_partition_dropped ON sql_drop
    WHEN TAG IN ('DROP TABLE', 'DROP SCHEMA', 'DROP OWNED')
    EXECUTE FUNCTION platform.forget_dropped_partitioned_tables();
"#,
    name = "partition_config",
);
