//! Partition retention's `archive` action: before an expiring partition is dropped, its
//! rows are written to the lake of every sink that lands its parent, in the same layout
//! (`<schema>/<parent>/_commit_year=.../archive_<partition>.parquet`, `_op = 'r'`, the day
//! and LSN of the archiving), with a manifest `commits/archive_<partition>.json`. The
//! manifest makes it idempotent: a retirement retried after a failure finds the partition
//! already archived and goes on to drop it; files of an archive interrupted before its
//! manifest are removed first.

use super::decode::{Head, Reader};
use super::files::{self, lsn_text, parse_lsn, BatchWriter, Lake};
use super::{open_target, LakeError, Target, EXCLUDED_TABLES};
use crate::error::SpiFailure;
use pgrx::prelude::*;
use std::ffi::CString;

/// Archives `partition` (of `parent`) into every sink that lands `parent`; returns how
/// many. An error is the reason the partition must not be dropped yet.
pub fn archive_partition(parent: &str, partition: &str) -> Result<usize, String> {
    let has_lake =
        crate::sql::read::<bool>("SELECT to_regclass('platform.lake_sink') IS NOT NULL", &[])
            .unwrap_or(false);
    let names = crate::sql::read::<Vec<String>>(
        "SELECT ARRAY[n.nspname::text, c.relname::text] FROM pg_catalog.pg_class c
           JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = $1::regclass",
        &[parent.into()],
    )
    .unwrap_or_default();
    let (Some(schema), Some(table)) = (names.first(), names.get(1)) else {
        return Err(format!("{parent} is not a table"));
    };
    let sinks: Vec<(String, String, Option<String>)> = if has_lake {
        Spi::connect_mut(|c| {
            let t = c.update(
                "SELECT name, lake_url, tables FROM platform.lake_sink ORDER BY name FOR UPDATE",
                None,
                &[],
            )?;
            let mut out = Vec::new();
            for r in t {
                out.push((
                    r.get::<String>(1)?.unwrap_or_default(),
                    r.get::<String>(2)?.unwrap_or_default(),
                    r.get::<String>(3)?,
                ));
            }
            Ok::<_, pgrx::spi::SpiError>(out)
        })
        .map_err(|e| SpiFailure::from(e).to_string())?
    } else {
        Vec::new()
    };
    let mut archived = 0;
    for (name, url, tables) in sinks {
        let filter = crate::cdc::table_filter(tables.as_deref(), Some(EXCLUDED_TABLES))
            .map_err(|e| e.to_string())?;
        if !filter.wants(schema, table) {
            continue;
        }
        let target = open_target(&name, &url).map_err(|e| e.to_string())?;
        archive_into(&target, schema, table, partition).map_err(|e| e.to_string())?;
        archived += 1;
    }
    if archived == 0 {
        return Err(format!(
            "retention_action archive: no lake sink lands {schema}.{table}; create one (platform.create_lake_sink) or use drop or detach"
        ));
    }
    Ok(archived)
}

fn archive_into(
    target: &Target,
    schema: &str,
    table: &str,
    partition: &str,
) -> Result<(), LakeError> {
    let lake = &target.lake;
    let short = partition
        .rsplit('.')
        .next()
        .unwrap_or(partition)
        .replace('"', "");
    let manifest = lake
        .control_dir()
        .join("commits")
        .join(format!("archive_{short}.json"));
    let intent_path = lake.control_dir().join("archive-intent");
    if manifest.exists() {
        // Archived by an earlier try (whose retirement may have failed afterwards, rolling
        // back its record): its files made visible (and uploaded) if a crash came first,
        // then recorded again from the manifest.
        let text = std::fs::read(&manifest).map_err(|e| LakeError::io(&manifest, e))?;
        let body: serde_json::Value = serde_json::from_slice(&text)
            .map_err(|e| LakeError::Corrupt(format!("manifest {}: {e}", manifest.display())))?;
        let paths: Vec<String> = body["files"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| f["path"].as_str().map(str::to_string))
            .collect();
        finish(target, &paths, &manifest, &intent_path)?;
        record(lake, schema, table, partition, &body);
        return Ok(());
    }
    lake.prepare()?;
    if let Some(old) = files::read_intent_at(&intent_path)? {
        files::remove_pending(lake, &old)?;
    }
    let lsn =
        crate::sql::read::<String>("SELECT pg_catalog.pg_current_wal_insert_lsn()::text", &[])
            .and_then(|s| parse_lsn(&s))
            .unwrap_or(0);
    let oid = crate::sql::read::<pg_sys::Oid>("SELECT $1::regclass::oid", &[partition.into()])
        .ok_or_else(|| LakeError::Decode(format!("partition {partition} is gone")))?;
    let (info, mut rel, types) = super::backfill::relation_of(oid)?;
    rel.schema = schema.to_string();
    rel.table = table.to_string();
    let target_bytes = super::file_target_bytes();
    let mut w = BatchWriter::archive(lake, lsn, target_bytes, &intent_path, &short)?;
    let head = Head {
        xid: 0,
        commit_lsn: lsn,
        commit_time: super::backfill::now_micros(),
        lsn,
        streamed: false,
    };
    let sql = CString::new(format!("SELECT * FROM {partition}"))
        .map_err(|_| LakeError::Decode("partition name".into()))?;
    Spi::connect(|_c| unsafe {
        let plan = pg_sys::SPI_prepare(sql.as_ptr(), 0, std::ptr::null_mut());
        if plan.is_null() {
            return Err(LakeError::Decode(format!("cannot read {partition}")));
        }
        let portal = pg_sys::SPI_cursor_open(
            std::ptr::null(),
            plan,
            std::ptr::null_mut(),
            std::ptr::null(),
            true,
        );
        let mut row = Vec::new();
        // Output functions (numeric, inet, ...) allocate per value: in a context reset per
        // fetch, so a partition of any size is archived in bounded memory.
        let mut rows_cx = pgrx::PgMemoryContexts::new("pg_platform lake archive rows");
        loop {
            pg_sys::SPI_cursor_fetch(portal, true, 10_000);
            let n = pg_sys::SPI_processed as usize;
            let tt = pg_sys::SPI_tuptable;
            if n == 0 || tt.is_null() {
                break;
            }
            let mut enc = super::backfill::RowEncoder::new((*tt).tupdesc);
            let done: Result<(), LakeError> = rows_cx.switch_to(|_| {
                for i in 0..n {
                    enc.encode(&mut row, &info, *(*tt).vals.add(i));
                    w.change(&rel, &types, b'R', &head, Reader::new(&row))?;
                }
                Ok(())
            });
            rows_cx.reset();
            done?;
            pg_sys::SPI_freetuptable(tt);
        }
        pg_sys::SPI_cursor_close(portal);
        Ok(())
    })?;
    let stats = w.finish()?;
    let paths: Vec<String> = stats.iter().map(|f| f.path.clone()).collect();
    let body = serde_json::json!({
        "format_version": 1,
        "archive_of": partition,
        "table": format!("{schema}.{table}"),
        "lsn": lsn_text(lsn),
        "rows": stats.iter().map(|f| f.rows).sum::<u64>(),
        "files": stats.iter().map(|f| serde_json::json!({
            "path": f.path, "schema": f.schema, "table": f.table, "commit_day": f.day,
            "rows": f.rows, "bytes": f.bytes,
            "min_lsn": lsn_text(f.min_lsn.min(f.max_lsn)), "max_lsn": lsn_text(f.max_lsn),
        })).collect::<Vec<_>>(),
    });
    let mut out = serde_json::to_vec_pretty(&body).unwrap_or_default();
    out.push(b'\n');
    files::write_atomic(&manifest, &out)?;
    finish(target, &paths, &manifest, &intent_path)?;
    record(lake, schema, table, partition, &body);
    Ok(())
}

/// After an archive's manifest: its files made visible, uploaded for an S3 lake (the
/// manifest last), the intent removed.
fn finish(
    target: &Target,
    paths: &[String],
    manifest: &std::path::Path,
    intent_path: &std::path::Path,
) -> Result<(), LakeError> {
    let lake = &target.lake;
    files::publish(lake, paths, target.remote.is_some())?;
    if let Some(remote) = &target.remote {
        remote.upload(lake, paths, &[], &lake.relative(manifest))?;
    }
    files::remove_intent_at(intent_path)
}

/// Records an archive (its manifest's content) in `platform.lake_archive`, which
/// `platform.lake_files` counts; in the retirement's transaction, so a retirement that
/// fails leaves no record of a partition still in the table.
fn record(lake: &Lake, schema: &str, table: &str, partition: &str, body: &serde_json::Value) {
    let files = body["files"].as_array().map_or(&[][..], |f| f.as_slice());
    let days: Vec<&str> = files
        .iter()
        .filter_map(|f| f["commit_day"].as_str())
        .collect();
    let bytes: i64 = files.iter().filter_map(|f| f["bytes"].as_i64()).sum();
    crate::sql::as_extension_owner(|| {
        crate::sql::modify(
            "INSERT INTO platform.lake_archive (sink, partition_name, schema_name, table_name, lsn,
                                                files, rows, bytes, first_day, last_day)
             VALUES ($1, $2, $3, $4, $5::pg_lsn, $6, $7, $8, $9::date, $10::date)
             ON CONFLICT (sink, partition_name) DO NOTHING",
            &[
                lake.sink.as_str().into(),
                partition.into(),
                schema.into(),
                table.into(),
                body["lsn"].as_str().unwrap_or("0/0").into(),
                (files.len() as i32).into(),
                body["rows"].as_i64().unwrap_or(0).into(),
                bytes.into(),
                days.iter().min().copied().into(),
                days.iter().max().copied().into(),
            ],
        );
    });
}
