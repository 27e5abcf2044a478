//! One batch of a lake sink, exactly once.
//!
//! The order of durable steps is what makes a crash at any point harmless:
//! 1. the batch intent (`_pg_platform/<sink>/intent`: the LSN range, then each data file
//!    before it is created), fsynced;
//! 2. the data files, written as `<name>.pending` (create-only), fsynced with their
//!    directories: readers globbing `*.parquet` never see them;
//! 3. the manifest `commits/<start>_<end>.json`, written atomically: the commit point;
//! 4. the `.pending` files renamed to their names, directories fsynced;
//! 5. the slot advanced to the batch's end (not transactional: only now);
//! 6. the batch recorded in `platform.lake_batch` / `lake_file` / `lake_sink`.
//!
//! The next run reads the intent first: with a manifest, the batch is committed (finish
//! the renames, advance the slot if it is behind, record it if the transaction of step 6
//! was lost); without one, its files are removed and the range is decoded again. The slot
//! only moves after the manifest is durable, and the range of a batch is fixed before it
//! starts, so a replay never duplicates or loses a change.

use super::backfill::{self, Chunks, Progress};
use super::columns::ColType;
use super::decode::{self, Message, Relation};
use super::files::{self, lsn_text, parse_lsn, BatchWriter, FileStat};
use super::{open_target, LakeError, Target, EXCLUDED_TABLES};
use crate::error::{raise, OrRaise, SpiFailure};
use pgrx::prelude::*;
use std::collections::HashMap;

pub struct SyncResult {
    pub start: u64,
    pub end: u64,
    pub files: usize,
    pub rows: u64,
    pub bytes: u64,
    pub recovered: bool,
}

struct Sink {
    name: String,
    url: String,
    slot: String,
    tables: Option<String>,
    last_end: u64,
}

struct Slot {
    plugin: String,
    confirmed: u64,
    wal_status: String,
    active_pid: Option<i32>,
    flush: u64,
}

/// An SPI result, or the ERROR of the SPI layer.
pub(super) fn spi<T>(r: Result<T, pgrx::spi::SpiError>) -> T {
    r.map_err(SpiFailure::from).or_raise()
}

/// The sink's row, locked: one batch of a sink at a time, whoever runs it.
fn lock_sink(name: &str) -> Sink {
    let row = spi(Spi::connect_mut(|c| {
        let t = c.update(
            "SELECT lake_url, slot_name::text, tables, last_end_lsn::text
               FROM platform.lake_sink WHERE name = $1 FOR UPDATE",
            Some(1),
            &[name.into()],
        )?;
        if t.is_empty() {
            return Ok(None);
        }
        let r = t.first();
        Ok(Some((
            r.get::<String>(1)?.unwrap_or_default(),
            r.get::<String>(2)?.unwrap_or_default(),
            r.get::<String>(3)?,
            r.get::<String>(4)?.unwrap_or_default(),
        )))
    }));
    let Some((url, slot, tables, last_end)) = row else {
        raise(LakeError::UnknownSink(name.into()));
    };
    Sink {
        name: name.into(),
        url,
        slot,
        tables,
        last_end: parse_lsn(&last_end).unwrap_or(0),
    }
}

fn slot_info(sink: &Sink) -> Slot {
    let row = spi(Spi::connect(|c| {
        let t = c.select(
            "SELECT coalesce(plugin::text, ''), coalesce(confirmed_flush_lsn::text, '0/0'),
                    coalesce(wal_status, ''), active_pid,
                    pg_catalog.pg_current_wal_flush_lsn()::text
               FROM pg_catalog.pg_replication_slots WHERE slot_name = $1",
            Some(1),
            &[sink.slot.as_str().into()],
        )?;
        if t.is_empty() {
            return Ok(None);
        }
        let r = t.first();
        Ok(Some(Slot {
            plugin: r.get::<String>(1)?.unwrap_or_default(),
            confirmed: parse_lsn(&r.get::<String>(2)?.unwrap_or_default()).unwrap_or(0),
            wal_status: r.get::<String>(3)?.unwrap_or_default(),
            active_pid: r.get::<i32>(4)?,
            flush: parse_lsn(&r.get::<String>(5)?.unwrap_or_default()).unwrap_or(0),
        }))
    }));
    let Some(slot) = row else {
        raise(LakeError::SlotMissing {
            sink: sink.name.clone(),
            slot: sink.slot.clone(),
        });
    };
    if slot.plugin != "pg_platform" {
        raise(LakeError::SlotPlugin(sink.slot.clone(), slot.plugin));
    }
    if slot.wal_status == "lost" {
        raise(LakeError::SlotLost {
            sink: sink.name.clone(),
            slot: sink.slot.clone(),
            status: slot.wal_status,
        });
    }
    if let Some(pid) = slot.active_pid {
        raise(LakeError::SlotActive(sink.slot.clone(), pid));
    }
    slot
}

fn advance(slot: &str, to: u64) {
    crate::sql::read::<String>(
        "SELECT end_lsn::text FROM pg_catalog.pg_replication_slot_advance($1, $2::pg_lsn)",
        &[slot.into(), lsn_text(to).as_str().into()],
    );
}

fn manifest_json(
    sink: &str,
    start: u64,
    end: u64,
    stats: &[FileStat],
    progress: &[Progress],
) -> Vec<u8> {
    let files: Vec<serde_json::Value> = stats
        .iter()
        .map(|s| {
            serde_json::json!({
                "path": s.path, "schema": s.schema, "table": s.table, "commit_day": s.day,
                "rows": s.rows, "bytes": s.bytes,
                "min_lsn": lsn_text(s.min_lsn), "max_lsn": lsn_text(s.max_lsn),
            })
        })
        .collect();
    let m = serde_json::json!({
        "format_version": 1,
        "sink": sink,
        "start_lsn": lsn_text(start),
        "end_lsn": lsn_text(end),
        "rows": stats.iter().map(|s| s.rows).sum::<u64>(),
        "files": files,
        "backfill": progress.iter().map(|p| serde_json::json!({
            "table": p.table, "last_key": p.last_key, "done": p.done, "rows": p.rows,
        })).collect::<Vec<_>>(),
    });
    let mut out = serde_json::to_vec_pretty(&m).unwrap_or_default();
    out.push(b'\n');
    out
}

fn read_manifest(path: &std::path::Path) -> Result<(Vec<FileStat>, Vec<Progress>), LakeError> {
    let text = std::fs::read(path).map_err(|e| LakeError::io(path, e))?;
    let v: serde_json::Value = serde_json::from_slice(&text)
        .map_err(|e| LakeError::Corrupt(format!("manifest {}: {e}", path.display())))?;
    let s = |f: &serde_json::Value, k: &str| f[k].as_str().unwrap_or_default().to_string();
    let lsn = |f: &serde_json::Value, k: &str| parse_lsn(f[k].as_str().unwrap_or_default());
    let mut out = Vec::new();
    for f in v["files"].as_array().into_iter().flatten() {
        let (Some(min_lsn), Some(max_lsn)) = (lsn(f, "min_lsn"), lsn(f, "max_lsn")) else {
            return Err(LakeError::Corrupt(format!(
                "manifest {} has a file without its LSN range",
                path.display()
            )));
        };
        out.push(FileStat {
            path: s(f, "path"),
            schema: s(f, "schema"),
            table: s(f, "table"),
            day: s(f, "commit_day"),
            rows: f["rows"].as_u64().unwrap_or(0),
            bytes: f["bytes"].as_u64().unwrap_or(0),
            min_lsn,
            max_lsn,
            arrow_schema: None,
        });
    }
    let progress = v["backfill"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|b| Progress {
            table: s(b, "table"),
            last_key: b["last_key"].as_array().map(|k| {
                k.iter()
                    .map(|x| x.as_str().unwrap_or_default().to_string())
                    .collect()
            }),
            done: b["done"].as_bool().unwrap_or(false),
            rows: b["rows"].as_u64().unwrap_or(0),
        })
        .collect();
    Ok((out, progress))
}

fn batch_recorded(sink: &str, start: u64) -> bool {
    crate::sql::read::<bool>(
        "SELECT true FROM platform.lake_batch WHERE sink = $1 AND start_lsn = $2::pg_lsn",
        &[sink.into(), lsn_text(start).as_str().into()],
    )
    .is_some()
}

/// Step 6: what the batch landed, in the database.
fn record(sink: &str, start: u64, end: u64, stats: &[FileStat], progress: &[Progress]) {
    for p in progress {
        crate::sql::modify(
            "UPDATE platform.lake_backfill
                SET last_key = $3, rows = rows + $4, chunks = chunks + 1,
                    state = CASE WHEN $5 THEN 'done' ELSE state END,
                    finished_at = CASE WHEN $5 THEN clock_timestamp() END
              WHERE sink = $1 AND table_name = $2 AND state = 'running'",
            &[
                sink.into(),
                p.table.as_str().into(),
                p.last_key.clone().into(),
                (p.rows as i64).into(),
                p.done.into(),
            ],
        );
    }
    let (s, e) = (lsn_text(start), lsn_text(end));
    let rows: u64 = stats.iter().map(|f| f.rows).sum();
    let bytes: u64 = stats.iter().map(|f| f.bytes).sum();
    if !stats.is_empty() {
        crate::sql::modify(
            "INSERT INTO platform.lake_batch (sink, start_lsn, end_lsn, files, rows, bytes, landed_at)
             VALUES ($1, $2::pg_lsn, $3::pg_lsn, $4, $5, $6, clock_timestamp())",
            &[
                sink.into(),
                s.as_str().into(),
                e.as_str().into(),
                (stats.len() as i32).into(),
                (rows as i64).into(),
                (bytes as i64).into(),
            ],
        );
        let col = |f: fn(&FileStat) -> String| stats.iter().map(f).collect::<Vec<String>>();
        crate::sql::modify(
            "INSERT INTO platform.lake_file (sink, path, schema_name, table_name, commit_day, rows, bytes,
                                             start_lsn, end_lsn, min_lsn, max_lsn, landed_at)
             SELECT $1, p, sc, t, d::date, r, b, $2::pg_lsn, $3::pg_lsn, mi::pg_lsn, ma::pg_lsn, clock_timestamp()
               FROM unnest($4::text[], $5::text[], $6::text[], $7::text[], $8::bigint[], $9::bigint[],
                           $10::text[], $11::text[]) AS u(p, sc, t, d, r, b, mi, ma)",
            &[
                sink.into(),
                s.as_str().into(),
                e.as_str().into(),
                col(|f| f.path.clone()).into(),
                col(|f| f.schema.clone()).into(),
                col(|f| f.table.clone()).into(),
                col(|f| f.day.clone()).into(),
                stats
                    .iter()
                    .map(|f| f.rows as i64)
                    .collect::<Vec<i64>>()
                    .into(),
                stats
                    .iter()
                    .map(|f| f.bytes as i64)
                    .collect::<Vec<i64>>()
                    .into(),
                col(|f| lsn_text(f.min_lsn)).into(),
                col(|f| lsn_text(f.max_lsn)).into(),
            ],
        );
    }
    crate::sql::modify(
        "UPDATE platform.lake_sink
            SET last_end_lsn = greatest(last_end_lsn, $2::pg_lsn),
                last_batch_at = CASE WHEN $3 > 0 THEN clock_timestamp() ELSE last_batch_at END,
                batches = batches + ($3 > 0)::int,
                rows_landed = rows_landed + $4, files_landed = files_landed + $3,
                bytes_landed = bytes_landed + $5, last_error = NULL, last_error_at = NULL
          WHERE name = $1",
        &[
            sink.into(),
            e.as_str().into(),
            (stats.len() as i32).into(),
            (rows as i64).into(),
            (bytes as i64).into(),
        ],
    );
}

fn result(start: u64, end: u64, stats: &[FileStat], recovered: bool) -> SyncResult {
    SyncResult {
        start,
        end,
        files: stats.len(),
        rows: stats.iter().map(|f| f.rows).sum(),
        bytes: stats.iter().map(|f| f.bytes).sum(),
        recovered,
    }
}

/// Finishes or undoes what the previous run left; returns a result when this run's work
/// was to record a batch the previous run committed to the lake but not to the database.
fn recover(sink: &Sink, target: &Target, slot: &mut Slot) -> Option<SyncResult> {
    let lake = &target.lake;
    let intent = files::read_intent(lake).or_raise()?;
    let manifest = lake.manifest_path(intent.start, intent.end);
    if manifest.exists() && batch_recorded(&sink.name, intent.start) {
        // Recorded, so published and advanced before (its files may since have been
        // merged); a slot position that went back in a crash is moved up below.
        files::remove_intent(lake).or_raise();
    } else if manifest.exists() {
        let (stats, progress) = read_manifest(&manifest).or_raise();
        let paths: Vec<String> = stats.iter().map(|f| f.path.clone()).collect();
        files::publish(lake, &paths, target.remote.is_some()).or_raise();
        upload(target, intent.start, intent.end, &stats);
        if slot.confirmed > intent.end {
            raise(gap(sink, slot.confirmed, intent.end));
        }
        if slot.confirmed < intent.end {
            // Behind the manifest (never advanced, or its saved position went back in a
            // crash): everything up to the manifest's end is in the lake.
            advance(&sink.slot, intent.end);
            slot.confirmed = intent.end;
        }
        record(&sink.name, intent.start, intent.end, &stats, &progress);
        // The intent stays until a later run sees this record committed.
        return Some(result(intent.start, intent.end, &stats, true));
    } else if intent.empty && slot.confirmed == intent.end {
        record(&sink.name, intent.start, intent.end, &[], &[]);
        files::remove_intent(lake).or_raise();
        if sink.last_end < intent.end {
            return Some(result(intent.start, intent.end, &[], true));
        }
    } else {
        files::discard(lake, &intent).or_raise();
    }
    None
}

fn gap(sink: &Sink, slot_lsn: u64, lake_lsn: u64) -> LakeError {
    LakeError::Gap {
        sink: sink.name.clone(),
        slot_lsn: lsn_text(slot_lsn),
        lake_lsn: lsn_text(lake_lsn),
    }
}

/// The test hook `platform.lake_fault`: fail right after `step`.
pub fn fault(step: &str) {
    let set = crate::gucs::LAKE_FAULT
        .get()
        .map(|c| c.to_string_lossy() == step)
        .unwrap_or(false);
    if set {
        pgrx::error!("pg_platform: lake batch failed on purpose {step} (platform.lake_fault)");
    }
}

/// The (schema, table) pairs a batch landed files of.
fn tables_of(stats: &[FileStat]) -> Vec<(String, String)> {
    let mut t: Vec<(String, String)> = stats
        .iter()
        .map(|s| (s.schema.clone(), s.table.clone()))
        .collect();
    t.sort();
    t.dedup();
    t
}

/// For an S3 sink: uploads what a committed batch staged (its files, schemas, manifest).
fn upload(target: &Target, start: u64, end: u64, stats: &[FileStat]) {
    if let Some(remote) = &target.remote {
        let lake = &target.lake;
        let paths: Vec<String> = stats.iter().map(|f| f.path.clone()).collect();
        let manifest = lake.relative(&lake.manifest_path(start, end));
        remote
            .upload(lake, &paths, &tables_of(stats), &manifest)
            .or_raise();
    }
}

pub fn run(name: &str) -> SyncResult {
    let sink = lock_sink(name);
    let target = open_target(&sink.name, &sink.url).or_raise();
    let lake = &target.lake;
    let mut slot = slot_info(&sink);
    if let Some(r) = recover(&sink, &target, &mut slot) {
        return r;
    }
    let expected = crate::sql::read::<String>(
        "SELECT last_end_lsn::text FROM platform.lake_sink WHERE name = $1",
        &[name.into()],
    )
    .and_then(|s| parse_lsn(&s))
    .unwrap_or(sink.last_end);
    if slot.confirmed > expected {
        raise(gap(&sink, slot.confirmed, expected));
    }
    if slot.confirmed < expected {
        // A slot's position is saved lazily; after a crash it can be behind what the lake
        // (and the committed record of it) already holds. Skip what was landed.
        advance(&sink.slot, expected);
        slot.confirmed = expected;
    }
    let start = slot.confirmed;
    let max_bytes = (crate::gucs::LAKE_BATCH_WAL_MB.get().max(1) as u64) << 20;
    // Backfill chunks are read only by a caught-up sink, so that their watermarks fall in
    // this batch's range (a chunk whose watermark does not is simply read again).
    let mut chunks = if slot.flush.saturating_sub(start) < max_bytes / 2 {
        backfill::read_chunks(&sink.name)
    } else {
        Chunks::default()
    };
    let flush = if chunks.is_empty() {
        slot.flush
    } else {
        crate::sql::read::<String>("SELECT pg_catalog.pg_current_wal_flush_lsn()::text", &[])
            .and_then(|s| parse_lsn(&s))
            .unwrap_or(slot.flush)
    };
    let end = flush.min(start.saturating_add(max_bytes));
    if end <= start {
        return result(start, start, &[], false);
    }
    lake.prepare().or_raise();
    let target_bytes = super::file_target_bytes();
    let mut w = BatchWriter::new(lake, start, end, target_bytes).or_raise();
    decode_range(&sink, end, &mut w, &mut chunks);
    let stats = w.finish().or_raise();
    let progress = chunks.progress();
    drop(chunks);
    fault("after_files");
    if !stats.is_empty() {
        files::write_atomic(
            &lake.manifest_path(start, end),
            &manifest_json(&sink.name, start, end, &stats, &progress),
        )
        .or_raise();
        let paths: Vec<String> = stats.iter().map(|f| f.path.clone()).collect();
        files::publish(lake, &paths, false).or_raise();
        files::publish_schemas(lake, &stats).or_raise();
        upload(&target, start, end, &stats);
    }
    fault("after_manifest");
    advance(&sink.slot, end);
    fault("after_advance");
    record(&sink.name, start, end, &stats, &progress);
    result(start, end, &stats, false)
}

/// Peeks the slot up to `end` and hands every change to the writer. The decoded stream is
/// materialised by PostgreSQL in a tuplestore (spilling to disk past work_mem) and read
/// through a cursor, so the backend's memory stays bounded whatever the transaction size.
fn decode_range(sink: &Sink, end: u64, w: &mut BatchWriter, chunks: &mut Chunks) {
    // Tables are selected here rather than by the plugin: a partition's changes belong to
    // the table at the root of its tree, which the patterns name.
    let options: Vec<String> = [
        "format",
        "binary",
        "include_messages",
        "on",
        "include_empty_transactions",
        "off",
        "exclude_tables",
        EXCLUDED_TABLES,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let filter = crate::cdc::table_filter(sink.tables.as_deref(), Some(EXCLUDED_TABLES)).or_raise();
    let mut d = Decoder {
        rels: HashMap::new(),
        wants: Box::new(move |s: &str, t: &str| filter.wants(s, t)),
        chunks,
    };
    let end_text = lsn_text(end);
    spi(Spi::connect(|c| {
        let mut cursor = c.try_open_cursor(
            "SELECT data FROM pg_catalog.pg_logical_slot_peek_binary_changes($1, $2::pg_lsn, NULL, VARIADIC $3::text[])",
            &[
                sink.slot.as_str().into(),
                end_text.as_str().into(),
                options.clone().into(),
            ],
        )?;
        loop {
            let t = cursor.fetch(1000)?;
            // The fetched rows live until freed here; left to the end of the SPI
            // connection they would add up to the whole batch. They are read in place:
            // pgrx's typed getters copy each value into a context that lives as long.
            let raw = unsafe { pg_sys::SPI_tuptable };
            if t.is_empty() || raw.is_null() {
                break;
            }
            unsafe {
                let td = (*raw).tupdesc;
                for i in 0..(*raw).numvals as usize {
                    let tuple = *(*raw).vals.add(i);
                    let mut is_null = false;
                    let datum = pg_sys::SPI_getbinval(tuple, td, 1, &mut is_null);
                    if is_null {
                        continue;
                    }
                    let v = pg_sys::pg_detoast_datum_packed(datum.cast_mut_ptr());
                    d.handle(w, pgrx::varlena::varlena_to_byte_slice(v))
                        .or_raise();
                }
                pg_sys::SPI_freetuptable(raw);
            }
        }
        Ok(())
    }));
}

/// A relation of the stream as the lake sees it: under its partition root's name, or
/// not landed at all.
struct LakeRel {
    rel: Relation,
    types: Vec<ColType>,
    root: u32,
}

/// Whether the sink lands a `schema.table`.
type TableFilter = Box<dyn Fn(&str, &str) -> bool>;

struct Decoder<'c> {
    rels: HashMap<u32, Option<LakeRel>>,
    wants: TableFilter,
    chunks: &'c mut Chunks,
}

/// The schema, name and oid of the root of `relid`'s partition tree (itself if none).
fn partition_root(relid: u32) -> Option<(String, String, u32)> {
    Spi::connect(|c| {
        let t = c.select(
            "SELECT n.nspname::text, r.relname::text, r.oid::int8
               FROM pg_catalog.pg_class r JOIN pg_catalog.pg_namespace n ON n.oid = r.relnamespace
              WHERE r.oid = coalesce(pg_catalog.pg_partition_root($1::oid), $1::oid)",
            Some(1),
            &[(relid as i64).into()],
        )?;
        if t.is_empty() {
            return Ok::<_, pgrx::spi::SpiError>(None);
        }
        let r = t.first();
        Ok(Some((
            r.get::<String>(1)?.unwrap_or_default(),
            r.get::<String>(2)?.unwrap_or_default(),
            r.get::<i64>(3)?.unwrap_or(0) as u32,
        )))
    })
    .unwrap_or(None)
}

impl Decoder<'_> {
    fn handle(&mut self, w: &mut BatchWriter, data: &[u8]) -> Result<(), LakeError> {
        match decode::message(data)? {
            Message::Relation(mut rel) => {
                let (root_schema, root_table, root) = partition_root(rel.relid).unwrap_or((
                    rel.schema.clone(),
                    rel.table.clone(),
                    rel.relid,
                ));
                if !(self.wants)(&root_schema, &root_table)
                    && !(self.wants)(&rel.schema, &rel.table)
                {
                    self.rels.insert(rel.relid, None);
                    return Ok(());
                }
                let types = rel
                    .columns
                    .iter()
                    .map(|c| ColType::parse(&c.arrow))
                    .collect::<Result<Vec<_>, _>>()?;
                rel.schema = root_schema;
                rel.table = root_table;
                self.rels
                    .insert(rel.relid, Some(LakeRel { rel, types, root }));
            }
            Message::Change {
                op,
                head,
                relid,
                tuples,
            } => {
                let Some(entry) = self.rels.get(&relid) else {
                    return Err(LakeError::Decode(format!(
                        "change of relation {relid} before its relation message"
                    )));
                };
                let Some(lr) = entry else {
                    return Ok(());
                };
                if op == b'D' && tuples.is_empty() {
                    return Err(LakeError::NoIdentity(format!(
                        "{}.{}",
                        lr.rel.schema, lr.rel.table
                    )));
                }
                if !self.chunks.is_empty() {
                    self.chunks.change(lr.root, &head, &tuples)?;
                }
                w.change(&lr.rel, &lr.types, op, &head, tuples)?;
            }
            Message::Truncate { head, relid } => {
                if let Some(Some(lr)) = self.rels.get(&relid) {
                    self.chunks.truncate(lr.root, &head);
                    w.change(&lr.rel, &lr.types, b'T', &head, decode::Reader::new(&[]))?;
                }
            }
            Message::Logical {
                head,
                prefix,
                content,
            } => {
                if prefix == backfill::MESSAGE_PREFIX.as_bytes() && !self.chunks.is_empty() {
                    let content = String::from_utf8_lossy(content);
                    self.chunks.message(head.lsn, &content, w)?;
                }
            }
            Message::Transaction | Message::Other => {}
        }
        Ok(())
    }
}
