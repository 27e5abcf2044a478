//! One maintenance pass over a registered table, and the worker task that runs them.
//!
//! A pass reads the registration and the catalog in one query (the "survey"), plans in
//! Rust, and only when there is something to do takes the per-table advisory lock and a
//! SHARE ROW EXCLUSIVE lock on the parent: readers go on, writers wait for the few
//! milliseconds the DDL takes, and no insert can land in the default partition while rows
//! are moved out of it. `platform.maintenance_lock_timeout` bounds the wait for that lock,
//! so maintenance gives up (and retries next time) instead of queueing application traffic
//! behind it.

use super::calendar::{self, missing_ranges, Range, Step};
use super::{PartitionError, RetentionAction, MAX_NEW_PARTITIONS};
use crate::error::{raise, OrRaise};
use crate::sql::{self, LocalSetting};
use chrono::NaiveDateTime;
use pgrx::prelude::*;
use pgrx::spi::quote_literal;
use std::sync::atomic::{AtomicI64, Ordering};

/// What one pass did to one table.
#[derive(Debug, Default)]
pub struct Outcome {
    pub parent: pg_sys::Oid,
    pub created: i32,
    pub retired: i32,
    pub moved: i64,
    pub synced: i32,
    pub error: Option<String>,
}

/// First half of the advisory lock key: "part" in ASCII, so it is recognisable in pg_locks.
const LOCK_CLASS: i64 = 0x7061_7274;

const LOCAL_FORMAT: &str = "YYYY-MM-DD HH24:MI:SS.US";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    Date,
    Timestamp,
    Timestamptz,
}

#[derive(Debug)]
struct Part {
    name: String,
    range: Range,
    is_default: bool,
    in_sync: bool,
    default_size: i64,
}

/// A registered table as the registration and the catalog describe it now.
#[derive(Debug)]
struct Parent {
    oid: pg_sys::Oid,
    label: String,
    control: String,
    step: Interval,
    premake: i32,
    zone: String,
    action: String,
    with_default: bool,
    relkind: Option<String>,
    qualified: String,
    schema: String,
    relname: String,
    strategy: Option<String>,
    key_count: i32,
    key_column: Option<String>,
    key_type: Option<String>,
    is_owner: bool,
    control_exists: bool,
    now: Option<NaiveDateTime>,
    cutoff: Option<NaiveDateTime>,
    parts: Vec<Part>,
}

/// The validated shape of a parent, ready to plan with.
struct Shape {
    step: Step,
    kind: KeyKind,
    action: RetentionAction,
}

impl Parent {
    fn shape(&self) -> Result<Shape, PartitionError> {
        let Some(relkind) = &self.relkind else {
            return Err(PartitionError::ParentGone(self.label.clone()));
        };
        let table = self.qualified.clone();
        if relkind != "p" {
            return Err(PartitionError::NotPartitioned(table));
        }
        match self.strategy.as_deref() {
            Some("r") => {}
            Some("l") => return Err(PartitionError::NotRange(table, "list")),
            Some("h") => return Err(PartitionError::NotRange(table, "hash")),
            _ => return Err(PartitionError::NotRange(table, "an unknown strategy")),
        }
        if !self.control_exists {
            return Err(PartitionError::NoSuchColumn(table, self.control.clone()));
        }
        let (Some(key), 1) = (&self.key_column, self.key_count) else {
            return Err(PartitionError::KeyNotColumn(table));
        };
        if *key != self.control {
            return Err(PartitionError::WrongKeyColumn(
                table,
                key.clone(),
                self.control.clone(),
            ));
        }
        let key_type = self.key_type.clone().unwrap_or_default();
        let kind = match key_type.as_str() {
            "date" => KeyKind::Date,
            "timestamp without time zone" => KeyKind::Timestamp,
            "timestamp with time zone" => KeyKind::Timestamptz,
            _ => return Err(PartitionError::WrongKeyType(table, key.clone(), key_type)),
        };
        let step = super::parse_step(&self.step)?;
        if kind == KeyKind::Date && step.is_sub_day() {
            return Err(PartitionError::SubDayDate(format!(
                "'{}'",
                super::interval_text(&self.step)
            )));
        }
        if !self.is_owner {
            return Err(PartitionError::NotOwner(table));
        }
        let action = RetentionAction::parse(&self.action)?;
        Ok(Shape { step, kind, action })
    }

    /// The qualified table name, or the registration's label once the table is gone.
    fn display_name(&self) -> String {
        if self.qualified.is_empty() {
            self.label.clone()
        } else {
            self.qualified.clone()
        }
    }

    fn ranges(&self) -> Vec<Range> {
        self.parts
            .iter()
            .filter(|p| !p.is_default)
            .map(|p| p.range)
            .collect()
    }

    fn default_partition(&self) -> Option<&Part> {
        self.parts.iter().find(|p| p.is_default)
    }

    /// The partition `[lower, upper)` would be named, schema-qualified and quoted.
    fn partition_name(&self, suffix: &str) -> (String, String) {
        // Identifiers are at most 63 bytes: shorten the parent's part, never the suffix.
        let room = 63usize.saturating_sub(suffix.len() + 1);
        let mut base = self.relname.clone();
        while base.len() > room {
            base.pop();
        }
        let name = format!("{base}_{suffix}");
        let qualified = format!(
            "{}.{}",
            pgrx::spi::quote_identifier(&self.schema),
            pgrx::spi::quote_identifier(&name)
        );
        (name, qualified)
    }

    /// A SQL expression of the key column's type for a local boundary.
    fn literal(&self, kind: KeyKind, t: NaiveDateTime) -> String {
        let text = calendar::format_local(t);
        match kind {
            KeyKind::Date => format!("{}::date", quote_literal(&text[..10])),
            KeyKind::Timestamp => format!("{}::timestamp", quote_literal(&text)),
            KeyKind::Timestamptz => format!(
                "({}::timestamp AT TIME ZONE {})",
                quote_literal(&text),
                quote_literal(&self.zone)
            ),
        }
    }

    /// A SQL expression giving the local time of the key column.
    fn local_of_key(&self, kind: KeyKind) -> String {
        let col = pgrx::spi::quote_identifier(&self.control);
        match kind {
            KeyKind::Date => format!("{col}::timestamp"),
            KeyKind::Timestamp => col,
            KeyKind::Timestamptz => format!("({col} AT TIME ZONE {})", quote_literal(&self.zone)),
        }
    }
}

/// What a pass has to do, decided from one survey.
struct Plan {
    create_default: bool,
    check_default: bool,
    create: Vec<(NaiveDateTime, NaiveDateTime)>,
    retire: Vec<String>,
    sync: Vec<String>,
}

impl Plan {
    fn is_empty(&self) -> bool {
        !self.create_default
            && !self.check_default
            && self.create.is_empty()
            && self.retire.is_empty()
            && self.sync.is_empty()
    }
}

fn plan(p: &Parent, shape: &Shape, start: Option<NaiveDateTime>) -> Result<Plan, PartitionError> {
    let step = shape.step;
    let ranges = p.ranges();
    let mut create = Vec::new();
    if let Some(now) = p.now {
        let current = step.align(now);
        let premake = u32::try_from(p.premake).unwrap_or(0);
        let until = step.advance(now, premake + 1).unwrap_or(current);
        // From the current step on (or from `start` when registering). Gaps further back
        // are not refilled: that would undo retention; rows that arrive for such a time
        // land in the default partition and get their own partition on the next pass.
        let from = match start {
            Some(s) => current.min(step.align(s)),
            None => current,
        };
        create = missing_ranges(step, &ranges, from, until, MAX_NEW_PARTITIONS)
            .map_err(|n| PartitionError::TooManyPartitions(p.qualified.clone(), n))?;
        if let Some(cut) = p.cutoff {
            create.retain(|(_, upper)| *upper > cut);
        }
    }
    let retire = match p.cutoff {
        Some(cut) => {
            let mut old: Vec<&Part> = p
                .parts
                .iter()
                .filter(|part| !part.is_default && part.range.upper.is_some_and(|u| u <= cut))
                .collect();
            old.sort_by_key(|part| part.range.upper);
            old.into_iter().map(|part| part.name.clone()).collect()
        }
        None => Vec::new(),
    };
    let default = p.default_partition();
    Ok(Plan {
        create_default: p.with_default && default.is_none(),
        check_default: default.is_some_and(|d| d.default_size > 0),
        create,
        retire,
        sync: p
            .parts
            .iter()
            .filter(|part| !part.in_sync)
            .map(|part| part.name.clone())
            .collect(),
    })
}

/// Reads registrations and the catalog state of their tables: all of them, or one.
fn survey(parent: Option<pg_sys::Oid>) -> Vec<Parent> {
    let bound = |x: &str| {
        format!(
            "CASE WHEN {x} NOT LIKE '''%' THEN NULL
                  WHEN kt.name = 'date' THEN to_char(btrim({x}, '''')::date::timestamp, '{LOCAL_FORMAT}')
                  WHEN kt.name = 'timestamp without time zone' THEN to_char(btrim({x}, '''')::timestamp, '{LOCAL_FORMAT}')
                  WHEN kt.name = 'timestamp with time zone'
                       THEN to_char(btrim({x}, '''')::timestamptz AT TIME ZONE cfg.time_zone, '{LOCAL_FORMAT}')
             END"
        )
    };
    let acl = |rel: &str| {
        format!(
            "ARRAY(SELECT format('%s %s %s', e.grantee, e.privilege_type, e.is_grantable)
                     FROM pg_catalog.aclexplode(coalesce({rel}.relacl, pg_catalog.acldefault('r', {rel}.relowner))) e
                    WHERE e.grantee <> {rel}.relowner ORDER BY 1)"
        )
    };
    let query = format!(
        "SELECT cfg.parent::oid, cfg.parent::text, cfg.control, cfg.step, cfg.premake, cfg.time_zone,
                cfg.retention_action, cfg.with_default,
                c.relkind::text, CASE WHEN c.oid IS NOT NULL THEN format('%I.%I', n.nspname, c.relname) END, n.nspname::text, c.relname::text,
                pt.partstrat::text, pt.partnatts::int4, ka.attname::text, kt.name,
                coalesce(pg_catalog.pg_has_role(c.relowner, 'USAGE'), false),
                ca.attnum IS NOT NULL,
                to_char(now() AT TIME ZONE cfg.time_zone, '{LOCAL_FORMAT}'),
                to_char((now() AT TIME ZONE cfg.time_zone) - cfg.retention, '{LOCAL_FORMAT}'),
                parts.names, parts.lowers, parts.uppers, parts.defaults, parts.in_sync, parts.sizes
           FROM platform.partition_config cfg
           LEFT JOIN pg_catalog.pg_class c ON c.oid = cfg.parent
           LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
           LEFT JOIN pg_catalog.pg_partitioned_table pt ON pt.partrelid = c.oid
           LEFT JOIN pg_catalog.pg_attribute ka
                  ON ka.attrelid = c.oid AND pt.partnatts = 1 AND ka.attnum = pt.partattrs[0]
           LEFT JOIN pg_catalog.pg_attribute ca
                  ON ca.attrelid = c.oid AND ca.attname = cfg.control::name AND ca.attnum > 0 AND NOT ca.attisdropped
           LEFT JOIN LATERAL (SELECT pg_catalog.format_type(ka.atttypid, NULL) AS name) kt ON true
           LEFT JOIN LATERAL (SELECT {acl_c} AS acl) pa ON true
           LEFT JOIN LATERAL (
                SELECT array_agg(format('%I.%I', pn.nspname, p.relname) ORDER BY p.oid) AS names,
                       array_agg({lower} ORDER BY p.oid) AS lowers,
                       array_agg({upper} ORDER BY p.oid) AS uppers,
                       array_agg(b.dflt ORDER BY p.oid) AS defaults,
                       array_agg(p.relowner = c.relowner AND {acl_p} = pa.acl ORDER BY p.oid) AS in_sync,
                       array_agg(CASE WHEN b.dflt THEN pg_catalog.pg_relation_size(p.oid) ELSE 0 END
                                 ORDER BY p.oid) AS sizes
                  FROM pg_catalog.pg_inherits i
                  JOIN pg_catalog.pg_class p ON p.oid = i.inhrelid
                  JOIN pg_catalog.pg_namespace pn ON pn.oid = p.relnamespace
                  -- FOR VALUES FROM ('a') TO ('b'), or DEFAULT: split with string functions,
                  -- because a regular expression here costs more than the rest of the query.
                  CROSS JOIN LATERAL (SELECT pg_catalog.pg_get_expr(p.relpartbound, p.oid) AS e) x
                  CROSS JOIN LATERAL (
                       SELECT x.e = 'DEFAULT' AS dflt,
                              split_part(split_part(x.e, ') TO (', 1), 'FROM (', 2) AS lo,
                              rtrim(split_part(x.e, ') TO (', 2), ')') AS hi) b
                 WHERE i.inhparent = c.oid) parts ON true
          WHERE $1::oid IS NULL OR cfg.parent = $1::oid
          ORDER BY cfg.parent::text",
        lower = bound("b.lo"),
        upper = bound("b.hi"),
        acl_p = acl("p"),
        acl_c = acl("c"),
    );
    // The planner's estimate for this catalog query is high enough to trigger JIT, whose
    // compilation costs more than the query itself.
    let jit = LocalSetting::set(c"jit", "off");
    let parents = Spi::connect(|c| {
        let rows = c.select(&query, None, &[parent.into()])?;
        let mut out = Vec::new();
        for row in rows {
            let text = |i: usize| row.get::<String>(i);
            let local = |s: Option<String>| s.as_deref().and_then(calendar::parse_local);
            let names: Vec<Option<String>> = row.get(21)?.unwrap_or_default();
            let lowers: Vec<Option<String>> = row.get(22)?.unwrap_or_default();
            let uppers: Vec<Option<String>> = row.get(23)?.unwrap_or_default();
            let defaults: Vec<Option<bool>> = row.get(24)?.unwrap_or_default();
            let in_sync: Vec<Option<bool>> = row.get(25)?.unwrap_or_default();
            let sizes: Vec<Option<i64>> = row.get(26)?.unwrap_or_default();
            let parts = names
                .into_iter()
                .enumerate()
                .map(|(i, name)| Part {
                    name: name.unwrap_or_default(),
                    range: Range {
                        lower: local(lowers.get(i).cloned().flatten()),
                        upper: local(uppers.get(i).cloned().flatten()),
                    },
                    is_default: defaults.get(i).copied().flatten().unwrap_or(false),
                    in_sync: in_sync.get(i).copied().flatten().unwrap_or(true),
                    default_size: sizes.get(i).copied().flatten().unwrap_or(0),
                })
                .collect();
            out.push(Parent {
                oid: row.get(1)?.unwrap_or(pg_sys::InvalidOid),
                label: text(2)?.unwrap_or_default(),
                control: text(3)?.unwrap_or_default(),
                step: row.get(4)?.unwrap_or_else(|| Interval::from_days(1)),
                premake: row.get(5)?.unwrap_or(0),
                zone: text(6)?.unwrap_or_else(|| "UTC".into()),
                action: text(7)?.unwrap_or_default(),
                with_default: row.get(8)?.unwrap_or(true),
                relkind: text(9)?,
                qualified: text(10)?.unwrap_or_default(),
                schema: text(11)?.unwrap_or_default(),
                relname: text(12)?.unwrap_or_default(),
                strategy: text(13)?,
                key_count: row.get(14)?.unwrap_or(0),
                key_column: text(15)?,
                key_type: text(16)?,
                is_owner: row.get(17)?.unwrap_or(false),
                control_exists: row.get(18)?.unwrap_or(false),
                now: local(text(19)?),
                cutoff: local(text(20)?),
                parts,
            });
        }
        Ok::<_, pgrx::spi::SpiError>(out)
    })
    .map_err(crate::error::SpiFailure::from)
    .or_raise();
    jit.restore();
    parents
}

/// How a registration is named in messages: the table name, or its old oid once dropped.
pub fn label(parent: pg_sys::Oid) -> String {
    sql::read::<String>("SELECT $1::regclass::text", &[parent.into()]).unwrap_or_default()
}

pub fn require_registered(parent: pg_sys::Oid) {
    let registered = sql::read::<bool>(
        "SELECT EXISTS (SELECT 1 FROM platform.partition_config WHERE parent = $1)",
        &[parent.into()],
    )
    .unwrap_or(false);
    if !registered {
        raise(PartitionError::NotRegistered(label(parent)));
    }
}

fn survey_one(parent: pg_sys::Oid) -> Parent {
    match survey(Some(parent)).pop() {
        Some(p) => p,
        None => raise(PartitionError::NotRegistered(label(parent))),
    }
}

/// One full pass over one registered table, in the caller's transaction.
pub fn maintain(
    parent: pg_sys::Oid,
    start: Option<TimestampWithTimeZone>,
    registering: bool,
) -> Outcome {
    sql::modify(
        "SELECT pg_catalog.pg_advisory_xact_lock($1)",
        &[((LOCK_CLASS << 32) | i64::from(u32::from(parent))).into()],
    );
    let mut p = survey_one(parent);
    let shape = p.shape().or_raise();
    let start = start.and_then(|s| {
        let text = sql::read::<String>(
            &format!("SELECT to_char($1 AT TIME ZONE $2, '{LOCAL_FORMAT}')"),
            &[s.into(), p.zone.as_str().into()],
        );
        text.as_deref().and_then(calendar::parse_local)
    });
    let first = plan(&p, &shape, start).or_raise();
    let mut outcome = Outcome {
        parent,
        ..Outcome::default()
    };
    if first.is_empty() {
        return outcome;
    }
    let timeout = LocalSetting::set(
        c"lock_timeout",
        &format!("{}ms", crate::gucs::MAINTENANCE_LOCK_TIMEOUT.get()),
    );
    sql::run(&format!(
        "LOCK TABLE ONLY {} IN SHARE ROW EXCLUSIVE MODE",
        p.qualified
    ));

    let mut created: Vec<String> = Vec::new();
    if first.check_default {
        outcome.moved = rescue(&p, &shape, &mut created);
        if !created.is_empty() {
            p = survey_one(parent);
        }
    }
    if first.create_default {
        create_default(&p);
    }
    let work = plan(&p, &shape, start).or_raise();
    for (lower, upper) in &work.create {
        created.push(create_partition(&p, &shape, *lower, *upper, |_| {}));
    }
    for name in &work.retire {
        if let Err(why) = before_retire(&p, shape.action, name) {
            // Oldest first: a partition that must wait keeps the later ones too.
            log!(
                "pg_platform: {}: retention of {name} waits: {why}",
                p.qualified
            );
            break;
        }
        retire(&p, shape.action, name);
        outcome.retired += 1;
    }
    outcome.created = created.len() as i32;
    if !created.is_empty() || first.create_default || outcome.retired > 0 {
        p = survey_one(parent);
    }
    for part in p.parts.iter().filter(|part| !part.in_sync) {
        sync_privileges(&p, &part.name);
        if !created.contains(&part.name) {
            outcome.synced += 1;
            log!(
                "pg_platform: {}: owner and privileges of {} set to the parent's",
                p.qualified,
                part.name
            );
        }
    }
    timeout.restore();
    if registering {
        log!(
            "pg_platform: {} registered for partition management ({} partitions created)",
            p.qualified,
            outcome.created
        );
    }
    outcome
}

/// Whether a maintenance pass over the registered table `parent` would do anything.
pub fn needs_maintenance(parent: &str) -> bool {
    let Some(oid) = sql::read::<pg_sys::Oid>("SELECT to_regclass($1)::oid", &[parent.into()])
    else {
        return false;
    };
    survey(Some(oid)).first().is_some_and(needs_work)
}

/// Whether a pass over `p` would do anything (a registration that no longer fits its
/// table counts: the pass reports why).
fn needs_work(p: &Parent) -> bool {
    match p.shape() {
        Ok(shape) => !plan(p, &shape, None).is_ok_and(|plan| plan.is_empty()),
        Err(_) => true,
    }
}

/// Maintenance of every registered table, each in a subtransaction; tables with nothing
/// to do are recognised from one catalog query and cost no lock.
pub fn maintain_all() -> Vec<Outcome> {
    let mut out = Vec::new();
    for p in survey(None) {
        if !needs_work(&p) {
            out.push(Outcome {
                parent: p.oid,
                ..Outcome::default()
            });
            continue;
        }
        let oid = p.oid;
        match sql::in_subtransaction(move || maintain(oid, None, false)) {
            Ok(o) => out.push(o),
            Err(message) => {
                warning!(
                    "pg_platform: partition maintenance of {} failed: {message}",
                    p.display_name()
                );
                out.push(Outcome {
                    parent: oid,
                    error: Some(message),
                    ..Outcome::default()
                });
            }
        }
    }
    out
}

/// Moves the rows of the default partition into partitions made for them; returns how
/// many rows moved. The parent is locked against writes, so no row can slip past.
fn rescue(p: &Parent, shape: &Shape, created: &mut Vec<String>) -> i64 {
    let Some(default) = p.default_partition() else {
        return 0;
    };
    let key = pgrx::spi::quote_identifier(&p.control);
    let hours: Vec<String> = Spi::connect(|c| {
        let rows = c.select(
            &format!(
                "SELECT DISTINCT to_char(date_trunc('hour', {}), '{LOCAL_FORMAT}') FROM ONLY {} WHERE {key} IS NOT NULL",
                p.local_of_key(shape.kind),
                default.name
            ),
            None,
            &[],
        )?;
        let mut out = Vec::new();
        for row in rows {
            if let Some(h) = row.get::<String>(1)? {
                out.push(h);
            }
        }
        Ok::<_, pgrx::spi::SpiError>(out)
    })
    .map_err(crate::error::SpiFailure::from)
    .or_raise();
    let existing = p.ranges();
    let mut cells: Vec<(NaiveDateTime, NaiveDateTime)> = hours
        .iter()
        .filter_map(|h| calendar::parse_local(h))
        .filter_map(|t| calendar::cell_for(shape.step, &existing, t))
        .collect();
    cells.sort();
    cells.dedup();
    if cells.len() > MAX_NEW_PARTITIONS {
        raise(PartitionError::TooManyPartitions(
            p.qualified.clone(),
            cells.len(),
        ));
    }
    let columns = sql::read::<String>(
        "SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) FROM pg_catalog.pg_attribute
          WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped AND attgenerated = ''",
        &[p.oid.into()],
    )
    .unwrap_or_default();
    let mut moved = 0;
    for (lower, upper) in cells {
        let mut rows = 0;
        let qualified = create_partition(p, shape, lower, upper, |table| {
            // Filled before it is attached: the attach then finds no row of its range left
            // in the default partition.
            rows = sql::modify(
                &format!(
                    "WITH moved AS (DELETE FROM ONLY {default} WHERE {key} >= {lo} AND {key} < {hi} RETURNING {columns})
                     INSERT INTO {table} ({columns}) SELECT {columns} FROM moved",
                    default = default.name,
                    lo = p.literal(shape.kind, lower),
                    hi = p.literal(shape.kind, upper),
                ),
                &[],
            );
        });
        log!(
            "pg_platform: {}: moved {rows} rows from the default partition into {qualified}",
            p.qualified
        );
        moved += rows;
        created.push(qualified);
    }
    moved
}

/// A new, empty table shaped like the parent: same columns, defaults, constraints,
/// indexes, storage and statistics targets (foreign keys follow when it is attached).
fn create_table(p: &Parent, qualified: &str) {
    let taken = sql::read::<bool>("SELECT to_regclass($1) IS NOT NULL", &[qualified.into()])
        .unwrap_or(false);
    if taken {
        raise(PartitionError::NameTaken(
            qualified.to_string(),
            p.qualified.clone(),
        ));
    }
    sql::run(&format!(
        "CREATE TABLE {qualified} (LIKE {} INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING INDEXES
             INCLUDING STORAGE INCLUDING COMPRESSION INCLUDING GENERATED INCLUDING STATISTICS)",
        p.qualified
    ));
}

/// Creates the partition `[lower, upper)`: a table shaped like the parent, `fill`ed (rows
/// moved from the default partition, or nothing), then attached. Returns its name.
fn create_partition(
    p: &Parent,
    shape: &Shape,
    lower: NaiveDateTime,
    upper: NaiveDateTime,
    fill: impl FnOnce(&str),
) -> String {
    let (name, qualified) = p.partition_name(&shape.step.suffix(lower));
    create_table(p, &qualified);
    fill(&qualified);
    sql::run(&format!(
        "ALTER TABLE {} ATTACH PARTITION {qualified} FOR VALUES FROM ({}) TO ({})",
        p.qualified,
        p.literal(shape.kind, lower),
        p.literal(shape.kind, upper)
    ));
    log!(
        "pg_platform: {}: created partition {name} [{}, {})",
        p.qualified,
        calendar::format_local(lower),
        calendar::format_local(upper)
    );
    qualified
}

fn create_default(p: &Parent) {
    let (name, qualified) = p.partition_name("default");
    create_table(p, &qualified);
    sql::run(&format!(
        "ALTER TABLE {} ATTACH PARTITION {qualified} DEFAULT",
        p.qualified
    ));
    log!(
        "pg_platform: {}: created default partition {name}",
        p.qualified
    );
}

/// Tables of other capabilities that must have their say before a partition goes: the
/// audit log seals and records the partition first (and may ask to wait); `archive`
/// writes it to the lake first (and waits while no sink can take it).
fn before_retire(p: &Parent, action: RetentionAction, partition: &str) -> Result<(), String> {
    if p.qualified == "platform.audit_log" {
        let verb = match action {
            RetentionAction::Drop | RetentionAction::Archive => "drop",
            RetentionAction::Detach => "detach",
        };
        crate::audit::before_retire(partition, verb)?;
    }
    if action == RetentionAction::Archive {
        let sinks = crate::lake::archive_partition(&p.qualified, partition)?;
        log!(
            "pg_platform: {}: archived partition {partition} to {sinks} lake sink(s)",
            p.qualified
        );
    }
    Ok(())
}

fn retire(p: &Parent, action: RetentionAction, partition: &str) {
    match action {
        RetentionAction::Drop | RetentionAction::Archive => {
            sql::run(&format!("DROP TABLE {partition}"))
        }
        RetentionAction::Detach => sql::run(&format!(
            "ALTER TABLE {} DETACH PARTITION {partition}",
            p.qualified
        )),
    }
    let verb = match action {
        RetentionAction::Drop => "dropped",
        RetentionAction::Detach => "detached",
        RetentionAction::Archive => "archived and dropped",
    };
    log!(
        "pg_platform: {}: retention {verb} partition {partition}",
        p.qualified
    );
}

/// Gives a partition the parent's owner and exactly the parent's privileges.
fn sync_privileges(p: &Parent, partition: &str) {
    sql::copy_owner_and_grants(p.oid, partition);
}

/// Epoch seconds of the worker's last maintenance pass (per worker process).
static LAST_RUN: AtomicI64 = AtomicI64::new(0);

/// The worker's periodic task: every `platform.maintenance_interval`, maintenance of each
/// table that needs it in its own transaction; a failure is logged and retried next time.
pub fn worker_task() {
    use pgrx::bgworkers::BackgroundWorker;
    let interval = i64::from(crate::gucs::MAINTENANCE_INTERVAL.get());
    if interval == 0 {
        return;
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    if now - LAST_RUN.load(Ordering::Relaxed) < interval {
        return;
    }
    LAST_RUN.store(now, Ordering::Relaxed);
    let due: Vec<(pg_sys::Oid, String)> = BackgroundWorker::transaction(|| {
        survey(None)
            .into_iter()
            .filter(needs_work)
            .map(|p| (p.oid, p.display_name()))
            .collect()
    });
    for (oid, label) in due {
        BackgroundWorker::transaction(move || {
            match sql::in_subtransaction(move || maintain(oid, None, false)) {
                Ok(o) => {
                    if o.created + o.retired + o.synced > 0 || o.moved > 0 {
                        log!(
                            "pg_platform: partition maintenance of {label}: {} created, {} retired, {} rows moved, {} privileges synced",
                            o.created, o.retired, o.moved, o.synced
                        );
                    }
                }
                Err(message) => {
                    warning!("pg_platform: partition maintenance of {label} failed: {message}")
                }
            }
        });
    }
}
