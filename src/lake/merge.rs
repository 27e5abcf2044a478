//! Merging small bronze files: a table's files of one past commit day, already folded into
//! the current zone, become one file (and, for a day still being written, its small files
//! folded so far). Readers never see a row twice or miss one: the new
//! day directory (the merged file, plus hard links to the day's files that are not merged)
//! is built under `_pg_platform/<sink>/merging/`, recorded in a manifest
//! `commits/merge_<start>_<end>_<schema>.<table>.json`, then exchanged with the live day
//! directory in one `renameat2(RENAME_EXCHANGE)`; the old directory is removed after.

use super::compact::{conform, read_file, read_pointer, union_fields};
use super::files::{self, lsn_text, parse_lsn, Lake};
use super::s3::Remote;
use super::LakeError;
use arrow_array::RecordBatch;
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

/// The intent of a merge, written before anything else: a merge a crash interrupted is
/// finished (or, not switched in yet, forgotten) from it by the next `lake_merge`, before
/// new groups are chosen, which may differ once more files are folded.
pub fn intent_path(lake: &Lake, g: &Group) -> PathBuf {
    let name = manifest_path(lake, g)
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    lake.control_dir().join("merging").join(name)
}

fn write_intent(lake: &Lake, g: &Group) -> Result<(), LakeError> {
    let path = intent_path(lake, g);
    if path.exists() {
        return Ok(());
    }
    files::ensure_dir(&lake.root, &lake.control_dir().join("merging"))?;
    let body = serde_json::json!({
        "schema": g.schema,
        "table": g.table,
        "merge_of": g.files,
        "start_lsn": lsn_text(g.start),
        "end_lsn": lsn_text(g.end),
    });
    files::write_atomic(&path, body.to_string().as_bytes())
}

/// The merges begun and not known to be recorded: each group and its merged file's path.
pub fn intents(lake: &Lake) -> Vec<(Group, String)> {
    let Ok(entries) = std::fs::read_dir(lake.control_dir().join("merging")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let p = e.path();
        if p.extension().is_none_or(|x| x != "json") {
            continue;
        }
        let Some(v) = std::fs::read(&p)
            .ok()
            .and_then(|t| serde_json::from_slice::<serde_json::Value>(&t).ok())
        else {
            continue;
        };
        let text = |k: &str| v[k].as_str().unwrap_or_default().to_string();
        let (Some(start), Some(end)) = (parse_lsn(&text("start_lsn")), parse_lsn(&text("end_lsn")))
        else {
            continue;
        };
        let files: Vec<String> = v["merge_of"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|f| f.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        if files.is_empty() {
            continue;
        }
        let g = Group {
            schema: text("schema"),
            table: text("table"),
            files,
            start,
            end,
        };
        let path = format!("{}/{}", day_dir(&g).display(), merged_name(&g));
        out.push((g, path));
    }
    out.sort_by_key(|(g, _)| g.start);
    out
}

/// Forgets a merge's intent (recorded, or never switched in: its manifest goes too).
pub fn clear_intent(lake: &Lake, g: &Group, switched: bool) {
    if !switched {
        let _ = std::fs::remove_file(manifest_path(lake, g));
    }
    let _ = std::fs::remove_file(intent_path(lake, g));
}

/// The merged file's name for a group.
pub fn merged_name(g: &Group) -> String {
    format!("merged_{:016X}_{:016X}.parquet", g.start, g.end)
}

/// The group's day directory, relative to the lake.
pub fn day_dir(g: &Group) -> PathBuf {
    g.files
        .first()
        .and_then(|f| Path::new(f).parent())
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Writes the rows of the group's files (read from under `root`) into `out`, fsynced, with
/// the union of their columns; returns the rows. Streams one file at a time: memory is
/// bounded by one file, whatever the day holds.
pub fn write_merged(root: &Path, g: &Group, out: &Path) -> Result<u64, LakeError> {
    let mut fields: Vec<Field> = Vec::new();
    for f in &g.files {
        union_fields(&mut fields, file_schema(&root.join(f))?.as_ref(), &[])?;
    }
    let schema = Arc::new(Schema::new(fields));
    let file = File::create(out).map_err(|e| LakeError::io(out, e))?;
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .build();
    let mut w = ArrowWriter::try_new(file, schema.clone(), Some(props))
        .map_err(|e| LakeError::Parquet(e.to_string()))?;
    let mut rows = 0u64;
    for f in &g.files {
        for b in read_file(&root.join(f))? {
            let nb = RecordBatch::try_new(schema.clone(), conform(&b, &schema))
                .map_err(|e| LakeError::Parquet(e.to_string()))?;
            rows += nb.num_rows() as u64;
            w.write(&nb).map_err(|e| LakeError::parquet(out, e))?;
        }
    }
    let f = w.into_inner().map_err(|e| LakeError::parquet(out, e))?;
    f.sync_all().map_err(|e| LakeError::io(out, e))?;
    Ok(rows)
}

/// The manifest recording a merge: the files it replaces and the merged file.
pub fn write_manifest(lake: &Lake, g: &Group, m: &Merged) -> Result<(), LakeError> {
    let body = serde_json::json!({
        "format_version": 1,
        "merge_of": g.files,
        "table": format!("{}.{}", g.schema, g.table),
        "start_lsn": lsn_text(g.start),
        "end_lsn": lsn_text(g.end),
        "rows": m.rows,
        "files": [{"path": m.path, "rows": m.rows, "bytes": m.bytes}],
    });
    let mut text = serde_json::to_vec_pretty(&body).unwrap_or_default();
    text.push(b'\n');
    files::write_atomic(&manifest_path(lake, g), &text)
}

/// What a merge made: the merged file (relative path), its rows and size.
pub struct Merged {
    pub path: String,
    pub rows: u64,
    pub bytes: u64,
}

/// The merged file a manifest records (a merge done whose record was lost).
pub fn read_manifest(lake: &Lake, g: &Group) -> Merged {
    let v: serde_json::Value = std::fs::read(manifest_path(lake, g))
        .ok()
        .and_then(|t| serde_json::from_slice(&t).ok())
        .unwrap_or_default();
    let f = &v["files"][0];
    Merged {
        path: f["path"].as_str().unwrap_or_default().to_string(),
        rows: f["rows"].as_u64().unwrap_or(0),
        bytes: f["bytes"].as_u64().unwrap_or(0),
    }
}

/// Merges one group of a local lake; returns the merged file's relative path and its rows.
pub fn merge_group(lake: &Lake, g: &Group) -> Result<Merged, LakeError> {
    write_intent(lake, g)?;
    let day_rel = day_dir(g);
    let live = lake.root.join(&day_rel);
    let staging = lake.control_dir().join("merging").join(&day_rel);
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(|e| LakeError::io(&staging, e))?;
    }
    files::ensure_dir(&lake.root, &staging)?;
    let name = merged_name(g);
    let out = staging.join(&name);
    let rows = write_merged(&lake.root, g, &out)?;
    let bytes = std::fs::metadata(&out).map_or(0, |m| m.len());
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
    let m = Merged {
        path: format!("{}/{name}", day_rel.display()),
        rows,
        bytes,
    };
    write_manifest(lake, g, &m)?;
    // The switch readers see: one directory for the other.
    exchange(&staging, &live)?;
    if let Some(parent) = live.parent() {
        sync_dir(parent)?;
    }
    if let Some(parent) = staging.parent() {
        sync_dir(parent)?;
    }
    std::fs::remove_dir_all(&staging).map_err(|e| LakeError::io(&staging, e))?;
    Ok(m)
}

/// Merges one group of an S3 lake in its staging directory `lake`: the group's files are
/// fetched from the bucket, merged, the manifest staged (the merge's intent), then the
/// merged file uploaded (create-only: the switch for readers of `lake_read_sql`, which
/// skip the files a merged file's LSN range covers), then the manifest; the merged files
/// are deleted from the bucket last. Redone after a failure, it finishes what is left.
pub fn merge_group_s3(lake: &Lake, remote: &Remote, g: &Group) -> Result<Merged, LakeError> {
    let rel = format!("{}/{}", day_dir(g).display(), merged_name(g));
    let local = lake.root.join(&rel);
    let manifest = manifest_path(lake, g);
    write_intent(lake, g)?;
    let m = if manifest.exists() {
        read_manifest(lake, g)
    } else {
        for f in &g.files {
            remote.fetch(f, &lake.root.join(f))?;
        }
        let pending = local.with_extension("parquet.pending");
        let rows = write_merged(&lake.root, g, &pending)?;
        let bytes = std::fs::metadata(&pending).map_or(0, |m| m.len());
        std::fs::rename(&pending, &local).map_err(|e| LakeError::io(&local, e))?;
        let m = Merged {
            path: rel.clone(),
            rows,
            bytes,
        };
        write_manifest(lake, g, &m)?;
        m
    };
    // A merged file no longer staged was uploaded by an earlier try.
    if local.exists() {
        remote.put_file(&rel, &local, true)?;
    }
    remote.put_file(&lake.relative(&manifest), &manifest, true)?;
    for f in &g.files {
        remote.delete(f)?;
        let _ = std::fs::remove_file(lake.root.join(f));
    }
    let _ = std::fs::remove_file(&local);
    Ok(m)
}

/// The LSN range a file's name gives (`<start>_<end>[_<part>].parquet` for a batch,
/// `merged_<start>_<end>.parquet` for a merge, which the flag tells), or None (an archive).
pub fn name_range(path: &str) -> Option<(u64, u64, bool)> {
    let name = Path::new(path).file_name()?.to_str()?;
    let stem = name.strip_suffix(".parquet")?;
    let (merged, stem) = match stem.strip_prefix("merged_") {
        Some(s) => (true, s),
        None => (false, stem),
    };
    let hex = |t: &str| {
        (t.len() == 16
            && t.bytes()
                .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b)))
        .then(|| u64::from_str_radix(t, 16).ok())
        .flatten()
    };
    let mut parts = stem.split('_');
    let (s, e) = (hex(parts.next()?)?, hex(parts.next()?)?);
    match (parts.next(), parts.next(), merged) {
        (None, _, _) => Some((s, e, merged)),
        (Some(n), None, false) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
            Some((s, e, false))
        }
        _ => None,
    }
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
///
/// On S3 (`by_name`), a group holds only files named by their LSN range (batches and
/// merges; archives stay as they are), and only a run of them that no other such file of
/// the day falls inside: a merged file then supersedes exactly the files whose ranges it
/// covers, which is the rule `lake_read_sql` reads a bucket by.
pub fn groups(
    lake: &Lake,
    sink: &str,
    before_day: &str,
    recent: bool,
    by_name: bool,
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
            if by_name && name_range(p).is_none() {
                continue;
            }
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
        let inside_but_left = paths.iter().any(|p| {
            !files.contains(p) && name_range(p).is_some_and(|(s, e, _)| start <= s && e <= end)
        });
        if by_name && inside_but_left {
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

#[cfg(test)]
mod tests {
    use super::name_range;

    #[test]
    fn file_names_give_their_lsn_range() {
        let b = "public/t/_commit_year=2026/_commit_month=12/_commit_day=2";
        assert_eq!(
            name_range(&format!("{b}/00000000016B3A28_00000000016C0000.parquet")),
            Some((0x16B3A28, 0x16C0000, false))
        );
        assert_eq!(
            name_range(&format!("{b}/00000000016B3A28_00000000016C0000_2.parquet")),
            Some((0x16B3A28, 0x16C0000, false))
        );
        assert_eq!(
            name_range(&format!(
                "{b}/merged_00000000016B3A28_00000000016C0000.parquet"
            )),
            Some((0x16B3A28, 0x16C0000, true))
        );
        for other in [
            "archive_p20261101.parquet",
            "merged_00000000016B3A28_00000000016C0000_1.parquet",
            "00000000016b3a28_00000000016C0000.parquet",
            "00000000016B3A28_00000000016C0000.parquet.pending",
            "00000000016B3A28_00000000016C0000_.parquet",
            "0016B3A28_00000000016C0000.parquet",
        ] {
            assert_eq!(name_range(&format!("{b}/{other}")), None, "{other}");
        }
    }
}
