//! Merging small bronze files: a table's files of one past commit day, already folded into
//! the current zone, become one file (and, for a day still being written, its small files
//! folded so far). Readers never see a row twice or miss one: the new
//! day directory (the merged file, plus hard links to the day's files that are not merged)
//! is built under `_pg_platform/<sink>/merging/`, recorded in a manifest
//! `commits/merge_<start>_<end>_<schema>.<table>.json`, then exchanged with the live day
//! directory in one `renameat2(RENAME_EXCHANGE)`; the old directory is removed after.

use super::compact::{read_file, read_pointer};
use super::files::{self, lsn_text, parse_lsn, Lake};
use super::LakeError;
use arrow_array::{new_null_array, ArrayRef, RecordBatch};
use arrow_schema::{Field, Schema};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use std::ffi::CString;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One table-day to merge: its files (relative paths, LSN order) and their LSN range.
#[derive(Debug, Clone)]
pub struct Group {
    pub schema: String,
    pub table: String,
    pub files: Vec<String>,
    pub start: u64,
    pub end: u64,
}

/// The manifest that records a merge (its existence: the merge was switched in or about to).
pub fn manifest_path(lake: &Lake, g: &Group) -> PathBuf {
    lake.control_dir().join("commits").join(format!(
        "merge_{:016X}_{:016X}_{}.{}.json",
        g.start, g.end, g.schema, g.table
    ))
}

fn exchange(a: &Path, b: &Path) -> Result<(), LakeError> {
    let ca = CString::new(a.as_os_str().as_bytes()).map_err(|_| LakeError::Io("path".into()))?;
    let cb = CString::new(b.as_os_str().as_bytes()).map_err(|_| LakeError::Io("path".into()))?;
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc != 0 {
        return Err(LakeError::io(b, std::io::Error::last_os_error()));
    }
    Ok(())
}

fn sync_dir(d: &Path) -> Result<(), LakeError> {
    File::open(d)
        .and_then(|f| f.sync_all())
        .map_err(|e| LakeError::io(d, e))
}

/// A Parquet file's Arrow schema, from its footer.
fn file_schema(path: &Path) -> Result<Arc<Schema>, LakeError> {
    let f = File::open(path).map_err(|e| LakeError::io(path, e))?;
    ParquetRecordBatchReaderBuilder::try_new(f)
        .map(|b| b.schema().clone())
        .map_err(|e| LakeError::Parquet(format!("{}: {e}", path.display())))
}

/// Merges one group; returns the merged file's relative path and its rows.
pub fn merge_group(lake: &Lake, g: &Group) -> Result<(String, u64), LakeError> {
    let Some(first) = g.files.first() else {
        return Err(LakeError::Corrupt("an empty merge group".into()));
    };
    let day_rel = Path::new(first)
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let live = lake.root.join(&day_rel);
    let staging = lake.control_dir().join("merging").join(&day_rel);
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(|e| LakeError::io(&staging, e))?;
    }
    files::ensure_dir(&lake.root, &staging)?;
    // The union of the files' columns, from their footers; then the rows, one file at a
    // time (memory bounded by one file, whatever the day holds).
    let mut fields: Vec<Field> = Vec::new();
    for f in &g.files {
        for f in file_schema(&lake.root.join(f))?.fields() {
            match fields.iter().find(|x| x.name() == f.name()) {
                Some(x) if x.data_type() != f.data_type() => {
                    return Err(LakeError::CompactType(
                        f.name().clone(),
                        x.data_type().to_string(),
                        f.data_type().to_string(),
                    ))
                }
                Some(_) => {}
                None => fields.push(f.as_ref().clone().with_nullable(true)),
            }
        }
    }
    let schema = Arc::new(Schema::new(fields));
    let name = format!("merged_{:016X}_{:016X}.parquet", g.start, g.end);
    let out = staging.join(&name);
    let file = File::create(&out).map_err(|e| LakeError::io(&out, e))?;
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .build();
    let mut w = ArrowWriter::try_new(file, schema.clone(), Some(props))
        .map_err(|e| LakeError::Parquet(e.to_string()))?;
    let mut rows = 0u64;
    for f in &g.files {
        for b in read_file(&lake.root.join(f))? {
            let cols: Vec<ArrayRef> = schema
                .fields()
                .iter()
                .map(|f| {
                    b.column_by_name(f.name())
                        .cloned()
                        .unwrap_or_else(|| new_null_array(f.data_type(), b.num_rows()))
                })
                .collect();
            let nb = RecordBatch::try_new(schema.clone(), cols)
                .map_err(|e| LakeError::Parquet(e.to_string()))?;
            rows += nb.num_rows() as u64;
            w.write(&nb)
                .map_err(|e| LakeError::Parquet(e.to_string()))?;
        }
    }
    let f = w
        .into_inner()
        .map_err(|e| LakeError::Parquet(e.to_string()))?;
    f.sync_all().map_err(|e| LakeError::io(&out, e))?;
    // Everything else of the live day directory stays: hard links, no copy.
    let merged: Vec<PathBuf> = g.files.iter().map(|f| lake.root.join(f)).collect();
    if let Ok(entries) = std::fs::read_dir(&live) {
        for e in entries.flatten() {
            let p = e.path();
            if !merged.contains(&p) {
                let target = staging.join(e.file_name());
                std::fs::hard_link(&p, &target).map_err(|err| LakeError::io(&target, err))?;
            }
        }
    }
    sync_dir(&staging)?;
    let rel = format!("{}/{name}", day_rel.display());
    let manifest = manifest_path(lake, g);
    let body = serde_json::json!({
        "format_version": 1,
        "merge_of": g.files,
        "table": format!("{}.{}", g.schema, g.table),
        "start_lsn": lsn_text(g.start),
        "end_lsn": lsn_text(g.end),
        "rows": rows,
        "files": [{"path": rel, "rows": rows}],
    });
    let mut text = serde_json::to_vec_pretty(&body).unwrap_or_default();
    text.push(b'\n');
    files::write_atomic(&manifest, &text)?;
    // The switch readers see: one directory for the other.
    exchange(&staging, &live)?;
    if let Some(parent) = live.parent() {
        sync_dir(parent)?;
    }
    if let Some(parent) = staging.parent() {
        sync_dir(parent)?;
    }
    std::fs::remove_dir_all(&staging).map_err(|e| LakeError::io(&staging, e))?;
    Ok((rel, rows))
}

/// Whether a file is the output of a merge (left alone by the merges of a day in progress).
fn is_merged(path: &str) -> bool {
    Path::new(path)
        .file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with("merged_"))
}

/// The groups worth merging: table-days before `before_day` (YYYY-MM-DD) with more than
/// one file, all folded into the table's current-zone cut already; with `recent`, also in
/// each later day (still being written) its small files folded so far, which become one
/// file per merge (earlier merges' files stay), so a day in progress holds a file per
/// merge plus the batches since the last one.
pub fn groups(
    lake: &Lake,
    sink: &str,
    before_day: &str,
    recent: bool,
) -> Result<Vec<Group>, LakeError> {
    let pointer = read_pointer(lake)?;
    type Day = (String, String, bool, Vec<String>, Vec<String>, Vec<String>);
    let rows: Vec<Day> = pgrx::spi::Spi::connect(|c| {
        let t = c.select(
            "SELECT schema_name, table_name, commit_day < $2::date,
                    array_agg(path ORDER BY start_lsn, path),
                    array_agg(start_lsn::text ORDER BY start_lsn, path),
                    array_agg(end_lsn::text ORDER BY start_lsn, path)
               FROM platform.lake_file
              WHERE sink = $1 AND ($3 OR commit_day < $2::date)
              GROUP BY schema_name, table_name, commit_day
             HAVING count(*) > 1
              ORDER BY 1, 2, min(start_lsn)",
            None,
            &[sink.into(), before_day.into(), recent.into()],
        )?;
        let mut out = Vec::new();
        for r in t {
            out.push((
                r.get::<String>(1)?.unwrap_or_default(),
                r.get::<String>(2)?.unwrap_or_default(),
                r.get::<bool>(3)?.unwrap_or(false),
                r.get::<Vec<String>>(4)?.unwrap_or_default(),
                r.get::<Vec<String>>(5)?.unwrap_or_default(),
                r.get::<Vec<String>>(6)?.unwrap_or_default(),
            ));
        }
        Ok::<_, pgrx::spi::SpiError>(out)
    })
    .map_err(|e| LakeError::Io(e.to_string()))?;
    let mut out = Vec::new();
    for (schema, table, past, paths, starts, ends) in rows {
        let qualified = format!("{schema}.{table}");
        let Some(cut) = pointer
            .tables
            .iter()
            .find(|t| t.0 == qualified)
            .map(|t| t.2)
        else {
            continue;
        };
        let mut files = Vec::new();
        let (mut start, mut end) = (u64::MAX, 0u64);
        let mut all_folded = true;
        for ((p, s), e) in paths.iter().zip(&starts).zip(&ends) {
            let (Some(s), Some(e)) = (parse_lsn(s), parse_lsn(e)) else {
                all_folded = false;
                continue;
            };
            if e > cut {
                all_folded = false;
                continue;
            }
            // A day in progress keeps its earlier merges' files as they are.
            if !past && is_merged(p) {
                continue;
            }
            files.push(p.clone());
            start = start.min(s);
            end = end.max(e);
        }
        if (past && !all_folded) || files.len() < 2 {
            continue;
        }
        out.push(Group {
            schema,
            table,
            files,
            start,
            end,
        });
    }
    Ok(out)
}
