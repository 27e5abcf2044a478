//! The lake on a local file system: layout, durable writes, and the Parquet files of one
//! batch. Nothing here calls PostgreSQL.
//!
//! Layout under the lake root:
//! `<schema>/<table>/_commit_year=YYYY/_commit_month=MM/_commit_day=DD/<start>_<end>[_<part>].parquet`
//! and `_pg_platform/<sink>/` for the sink's intent file and `commits/` (one manifest per
//! batch, the commit point). LSNs in names are 16 hex digits, so names sort by LSN.

use super::columns::{Builder, ColType};
use super::decode::{Head, Reader, Relation};
use super::LakeError;
use arrow_array::builder::{
    Int64Builder, ListBuilder, StringBuilder, StringDictionaryBuilder, TimestampMicrosecondBuilder,
};
use arrow_array::types::Int8Type;
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The lake metadata columns every file carries after the table's own columns, and the
/// partition keys: a table with a column of one of these names is refused.
pub const META_COLUMNS: [&str; 6] = [
    "_op",
    "_lsn",
    "_commit_lsn",
    "_commit_ts",
    "_xid",
    "_unchanged_toast",
];
pub const PARTITION_KEYS: [&str; 3] = ["_commit_year", "_commit_month", "_commit_day"];

/// Rows collected in memory before they are handed to the Parquet writer.
const FLUSH_ROWS: usize = 65_536;
/// Rows per Parquet row group (the writer buffers one row group).
const ROW_GROUP_ROWS: usize = 131_072;

pub fn lsn_text(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xffff_ffff)
}

pub fn parse_lsn(s: &str) -> Option<u64> {
    let (hi, lo) = s.split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

fn lsn_name(lsn: u64) -> String {
    format!("{lsn:016X}")
}

/// fsync a directory, so that the names created in it survive a crash.
fn sync_dir(dir: &Path) -> Result<(), LakeError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| LakeError::io(dir, e))
}

/// Creates `dir` and its missing parents below `root`, each made durable in its parent.
pub fn ensure_dir(root: &Path, dir: &Path) -> Result<(), LakeError> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        if parent != root && parent.starts_with(root) {
            ensure_dir(root, parent)?;
        }
        match std::fs::create_dir(dir) {
            Ok(()) => sync_dir(parent)?,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(LakeError::io(dir, e)),
        }
    }
    Ok(())
}

/// Writes `bytes` to `path` atomically: a temporary file, fsynced, renamed, directory fsynced.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), LakeError> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp).map_err(|e| LakeError::io(&tmp, e))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| LakeError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| LakeError::io(path, e))?;
    if let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    Ok(())
}

/// A sink's place in the lake.
#[derive(Debug, Clone)]
pub struct Lake {
    pub root: PathBuf,
    pub sink: String,
}

impl Lake {
    pub fn control_dir(&self) -> PathBuf {
        self.root.join("_pg_platform").join(&self.sink)
    }
    pub fn intent_path(&self) -> PathBuf {
        self.control_dir().join("intent")
    }
    /// `path` (under the root) relative to the root, as the lake's names are.
    pub fn relative(&self, path: &Path) -> String {
        path.strip_prefix(&self.root)
            .unwrap_or(path)
            .display()
            .to_string()
    }
    pub fn manifest_path(&self, start: u64, end: u64) -> PathBuf {
        self.control_dir().join("commits").join(format!(
            "{}_{}.json",
            lsn_name(start),
            lsn_name(end)
        ))
    }

    /// Makes the control directories; checks the lake is writable by the server.
    pub fn prepare(&self) -> Result<(), LakeError> {
        ensure_dir(&self.root, &self.control_dir().join("commits"))?;
        let probe = self.control_dir().join(".probe");
        File::create(&probe)
            .and_then(|mut f| f.write_all(b"ok"))
            .map_err(|e| LakeError::io(&probe, e))?;
        let _ = std::fs::remove_file(&probe);
        Ok(())
    }
}

/// The intent of a batch, written before any of its data files: which LSN range it covers
/// and, line by line, each data file it is about to create. After a crash it tells what to
/// finish (a manifest exists) or to remove (none does).
#[derive(Debug, Clone, PartialEq)]
pub struct Intent {
    pub start: u64,
    pub end: u64,
    /// Data files (paths relative to the lake root, without `.pending`).
    pub files: Vec<String>,
    /// The batch had no rows: the slot may have been advanced without a manifest.
    pub empty: bool,
}

pub struct IntentFile {
    file: File,
}

impl IntentFile {
    pub fn create(lake: &Lake, start: u64, end: u64) -> Result<IntentFile, LakeError> {
        IntentFile::create_at(&lake.intent_path(), start, end)
    }

    pub fn create_at(path: &Path, start: u64, end: u64) -> Result<IntentFile, LakeError> {
        let path = path.to_path_buf();
        write_atomic(
            &path,
            format!("batch {} {}\n", lsn_text(start), lsn_text(end)).as_bytes(),
        )?;
        let file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|e| LakeError::io(&path, e))?;
        Ok(IntentFile { file })
    }

    fn line(&mut self, line: &str) -> Result<(), LakeError> {
        writeln!(self.file, "{line}")
            .and_then(|_| self.file.sync_data())
            .map_err(|e| LakeError::Io(format!("writing the batch intent: {e}")))
    }
}

pub fn read_intent(lake: &Lake) -> Result<Option<Intent>, LakeError> {
    read_intent_at(&lake.intent_path())
}

pub fn read_intent_at(path: &Path) -> Result<Option<Intent>, LakeError> {
    let path = path.to_path_buf();
    let f = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(LakeError::io(&path, e)),
    };
    let mut intent: Option<Intent> = None;
    for line in std::io::BufReader::new(f).lines() {
        let line = line.map_err(|e| LakeError::io(&path, e))?;
        let mut parts = line.splitn(3, ' ');
        match (parts.next(), parts.next(), parts.next(), intent.as_mut()) {
            (Some("batch"), Some(s), Some(e), None) => {
                if let (Some(start), Some(end)) = (parse_lsn(s), parse_lsn(e)) {
                    intent = Some(Intent {
                        start,
                        end,
                        files: Vec::new(),
                        empty: false,
                    });
                }
            }
            (Some("file"), Some(p), None, Some(i)) => i.files.push(p.to_string()),
            (Some("empty"), None, None, Some(i)) => i.empty = true,
            // A torn last line (crash while appending): its file was never created.
            _ => {}
        }
    }
    Ok(intent)
}

pub fn remove_intent(lake: &Lake) -> Result<(), LakeError> {
    remove_intent_at(&lake.intent_path())
}

pub fn remove_intent_at(path: &Path) -> Result<(), LakeError> {
    let path = path.to_path_buf();
    match std::fs::remove_file(&path) {
        Ok(()) => match path.parent() {
            Some(dir) => sync_dir(dir),
            None => Ok(()),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(LakeError::io(&path, e)),
    }
}

pub fn pending(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".pending");
    PathBuf::from(p)
}

/// Makes the files of a committed batch visible: each `.pending` renamed to its name.
/// With `uploaded_ok` (an S3 sink's staging directory), a file that is gone was uploaded
/// and removed by an earlier try.
pub fn publish(lake: &Lake, files: &[String], uploaded_ok: bool) -> Result<(), LakeError> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    for f in files {
        let path = lake.root.join(f);
        let p = pending(&path);
        if p.exists() {
            std::fs::rename(&p, &path).map_err(|e| LakeError::io(&path, e))?;
        } else if !path.exists() && uploaded_ok {
            continue;
        } else if !path.exists() {
            return Err(LakeError::Corrupt(format!(
                "data file {} of a committed batch is missing",
                path.display()
            )));
        }
        if let Some(d) = path.parent() {
            if !dirs.iter().any(|x| x == d) {
                dirs.push(d.to_path_buf());
            }
        }
    }
    for d in dirs {
        sync_dir(&d)?;
    }
    Ok(())
}

/// Removes what an uncommitted batch left behind.
pub fn discard(lake: &Lake, intent: &Intent) -> Result<(), LakeError> {
    remove_pending(lake, intent)?;
    remove_intent(lake)
}

/// Removes the pending files an intent lists.
pub fn remove_pending(lake: &Lake, intent: &Intent) -> Result<(), LakeError> {
    for f in &intent.files {
        let p = pending(&lake.root.join(f));
        match std::fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(LakeError::io(&p, e)),
        }
    }
    Ok(())
}

/// What a batch landed in one file.
#[derive(Debug, Clone, PartialEq)]
pub struct FileStat {
    pub path: String,
    pub schema: String,
    pub table: String,
    pub day: String,
    pub rows: u64,
    pub bytes: u64,
    pub min_lsn: u64,
    pub max_lsn: u64,
    /// The file's Arrow schema as JSON (published next to the table's files), when known.
    pub arrow_schema: Option<String>,
}

/// A schema as the JSON published in `<lake>/<schema>/<table>/_schema.json`.
fn schema_json(
    schema: &Schema,
    pg_types: &HashMap<String, String>,
    fingerprints: &[String],
) -> String {
    let fields: Vec<serde_json::Value> = schema
        .fields()
        .iter()
        .map(|f| {
            serde_json::json!({
                "name": f.name(),
                "arrow_type": f.data_type().to_string(),
                "nullable": f.is_nullable(),
                "extension": f.metadata().get("ARROW:extension:name"),
                "pg_type": pg_types.get(f.name()),
            })
        })
        .collect();
    serde_json::json!({
        "format_version": 1,
        "fields": fields,
        "partition_keys": PARTITION_KEYS.iter().map(|k| serde_json::json!({"name": k, "type": "INTEGER"})).collect::<Vec<_>>(),
        "schema_fingerprints": fingerprints,
    })
    .to_string()
}

/// Publishes the newest schema of each table the batch landed, next to its files.
pub fn publish_schemas(lake: &Lake, stats: &[FileStat]) -> Result<(), LakeError> {
    let mut latest: HashMap<(&str, &str), &str> = HashMap::new();
    for s in stats {
        if let Some(j) = &s.arrow_schema {
            latest.insert((&s.schema, &s.table), j);
        }
    }
    for ((schema, table), json) in latest {
        let path = lake.root.join(schema).join(table).join("_schema.json");
        write_atomic(&path, json.as_bytes())?;
    }
    Ok(())
}

/// A column of a file: its name, type and values so far.
struct FileColumn {
    name: String,
    ty: ColType,
    values: Builder,
}

/// The lake columns after the table's.
struct MetaColumns {
    op: StringDictionaryBuilder<Int8Type>,
    lsn: Int64Builder,
    commit_lsn: Int64Builder,
    commit_ts: TimestampMicrosecondBuilder,
    xid: Int64Builder,
    unchanged: ListBuilder<StringBuilder>,
}

impl MetaColumns {
    fn new() -> MetaColumns {
        MetaColumns {
            op: StringDictionaryBuilder::new(),
            lsn: Int64Builder::new(),
            commit_lsn: Int64Builder::new(),
            commit_ts: TimestampMicrosecondBuilder::new(),
            xid: Int64Builder::new(),
            unchanged: ListBuilder::new(StringBuilder::new()),
        }
    }

    fn fields() -> Vec<Field> {
        vec![
            Field::new(
                "_op",
                DataType::Dictionary(Box::new(DataType::Int8), Box::new(DataType::Utf8)),
                false,
            ),
            Field::new("_lsn", DataType::Int64, false),
            Field::new("_commit_lsn", DataType::Int64, false),
            Field::new(
                "_commit_ts",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                false,
            ),
            Field::new("_xid", DataType::Int64, false),
            Field::new(
                "_unchanged_toast",
                DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
                true,
            ),
        ]
    }

    fn finish(&mut self) -> Vec<ArrayRef> {
        vec![
            Arc::new(self.op.finish()),
            Arc::new(self.lsn.finish()),
            Arc::new(self.commit_lsn.finish()),
            Arc::new(self.commit_ts.finish().with_timezone("UTC")),
            Arc::new(self.xid.finish()),
            Arc::new(self.unchanged.finish()),
        ]
    }
}

/// One Parquet file being written: a table's rows of one commit day in one batch.
struct TableFile {
    stat: FileStat,
    abs: PathBuf,
    columns: Vec<FileColumn>,
    meta: MetaColumns,
    buffered: usize,
    writer: Option<ArrowWriter<File>>,
    /// PostgreSQL type of each column, for the published schema.
    pg_types: HashMap<String, String>,
    /// Relation fingerprint the mapping below was made for, and for each relation
    /// column its file column.
    shape: String,
    map: Vec<usize>,
    fingerprints: Vec<String>,
    /// Reused per row: which file columns the row filled.
    filled: Vec<bool>,
}

/// Days since 1970 of a commit time, and the Hive path part for it.
fn day_of(commit_time: i64) -> (i64, String) {
    let day = commit_time.div_euclid(86_400_000_000);
    let date = chrono::DateTime::from_timestamp(day * 86_400, 0)
        .map(|d| d.date_naive())
        .unwrap_or_default();
    (
        day,
        format!(
            "_commit_year={}/_commit_month={:02}/_commit_day={:02}",
            chrono::Datelike::year(&date),
            chrono::Datelike::month(&date),
            chrono::Datelike::day(&date)
        ),
    )
}

/// A day since 1970 as YYYY-MM-DD.
fn iso_day(day: i64) -> String {
    chrono::DateTime::from_timestamp(day * 86_400, 0)
        .map(|d| d.date_naive().to_string())
        .unwrap_or_default()
}

/// All files of one batch, keyed by table and commit day.
pub struct BatchWriter {
    lake: Lake,
    start: u64,
    end: u64,
    intent: IntentFile,
    /// File names' stem: `<start>_<end>` for a batch, `archive_<partition>` for an archive.
    base: String,
    open: HashMap<(String, String, i64), TableFile>,
    parts: HashMap<(String, String, i64), u32>,
    done: Vec<FileStat>,
    target_file_bytes: usize,
}

impl BatchWriter {
    pub fn new(
        lake: &Lake,
        start: u64,
        end: u64,
        target_file_bytes: usize,
    ) -> Result<BatchWriter, LakeError> {
        Ok(BatchWriter {
            lake: lake.clone(),
            start,
            end,
            intent: IntentFile::create(lake, start, end)?,
            base: format!("{}_{}", lsn_name(start), lsn_name(end)),
            open: HashMap::new(),
            parts: HashMap::new(),
            done: Vec::new(),
            target_file_bytes,
        })
    }

    /// A writer for one archived partition: its own intent file and file names.
    pub fn archive(
        lake: &Lake,
        lsn: u64,
        target_file_bytes: usize,
        intent_path: &Path,
        partition: &str,
    ) -> Result<BatchWriter, LakeError> {
        Ok(BatchWriter {
            lake: lake.clone(),
            start: lsn,
            end: lsn,
            intent: IntentFile::create_at(intent_path, lsn, lsn)?,
            base: format!("archive_{partition}"),
            open: HashMap::new(),
            parts: HashMap::new(),
            done: Vec::new(),
            target_file_bytes,
        })
    }

    fn check_names(rel: &Relation) -> Result<(), LakeError> {
        for c in &rel.columns {
            if META_COLUMNS.contains(&c.name.as_str()) || PARTITION_KEYS.contains(&c.name.as_str())
            {
                return Err(LakeError::ReservedColumn(
                    format!("{}.{}", rel.schema, rel.table),
                    c.name.clone(),
                ));
            }
        }
        Ok(())
    }

    fn open_file(
        &mut self,
        rel: &Relation,
        types: &[ColType],
        day: i64,
        day_path: &str,
    ) -> Result<TableFile, LakeError> {
        Self::check_names(rel)?;
        let key = (rel.schema.clone(), rel.table.clone(), day);
        let part = self.parts.entry(key).or_insert(0);
        let suffix = if *part == 0 {
            String::new()
        } else {
            format!("_{part}")
        };
        *part += 1;
        let rel_path = format!(
            "{}/{}/{}/{}{}.parquet",
            rel.schema, rel.table, day_path, self.base, suffix
        );
        let abs = self.lake.root.join(&rel_path);
        if let Some(dir) = abs.parent() {
            ensure_dir(&self.lake.root, dir)?;
        }
        // Durable before the file exists, so a crash can never leave a file nobody knows.
        self.intent.line(&format!("file {rel_path}"))?;
        let columns = rel
            .columns
            .iter()
            .zip(types)
            .map(|(c, t)| FileColumn {
                name: c.name.clone(),
                ty: t.clone(),
                values: Builder::new(t),
            })
            .collect::<Vec<_>>();
        let n = columns.len();
        Ok(TableFile {
            stat: FileStat {
                path: rel_path,
                schema: rel.schema.clone(),
                table: rel.table.clone(),
                day: iso_day(day),
                rows: 0,
                bytes: 0,
                min_lsn: u64::MAX,
                max_lsn: 0,
                arrow_schema: None,
            },
            abs,
            columns,
            pg_types: rel
                .columns
                .iter()
                .map(|c| (c.name.clone(), c.pg_type.clone()))
                .collect(),
            meta: MetaColumns::new(),
            buffered: 0,
            writer: None,
            shape: rel.fingerprint.clone(),
            map: (0..n).collect(),
            fingerprints: vec![rel.fingerprint.clone()],
            filled: vec![false; n],
        })
    }

    /// Writes the rows of one change message (`I`, `U`, `D`), a snapshot row (`R`) or a
    /// truncate (`T`, no tuples).
    pub fn change(
        &mut self,
        rel: &Relation,
        types: &[ColType],
        op: u8,
        head: &Head,
        mut tuples: Reader,
    ) -> Result<(), LakeError> {
        let (day, day_path) = day_of(head.commit_time);
        let key = (rel.schema.clone(), rel.table.clone(), day);
        let mut file = match self.open.remove(&key) {
            Some(f) => f,
            None => self.open_file(rel, types, day, &day_path)?,
        };
        if file.shape != rel.fingerprint && !file.adapt(rel, types)? {
            let rolled = file.close(self.start, self.end)?;
            self.done.push(rolled);
            file = self.open_file(rel, types, day, &day_path)?;
        }
        let result = (|| {
            if op == b'T' {
                return file.row(rel, b't', head, None, &mut Reader::new(&[]));
            }
            while !tuples.is_empty() {
                let which = tuples.u8()?;
                let n = tuples.u16()? as usize;
                let row_op = match (op, which) {
                    (b'I', _) => b'i',
                    (b'R', _) => b'r',
                    // The old image of an update (key changed, or identity full) is the
                    // removal of that row; the new image follows.
                    (b'U', b'O') | (b'D', _) => b'd',
                    _ => b'u',
                };
                let cols: Option<&[usize]> = if n == rel.columns.len() {
                    None
                } else {
                    Some(rel.key_columns())
                };
                if let Some(c) = cols {
                    if c.len() != n {
                        return Err(LakeError::Decode(format!(
                            "tuple of {n} columns for {}.{}",
                            rel.schema, rel.table
                        )));
                    }
                }
                file.row(rel, row_op, head, cols, &mut tuples)?;
            }
            Ok(())
        })();
        if result.is_ok() && file.buffered >= FLUSH_ROWS {
            file.flush(self.start, self.end)?;
            if file.size() >= self.target_file_bytes {
                let rolled = file.close(self.start, self.end)?;
                self.done.push(rolled);
                return result;
            }
        }
        self.open.insert(key, file);
        result
    }

    /// Closes every file (fsynced); returns what the batch landed. The files are still
    /// `.pending`: [`publish`] makes them visible once the manifest is written.
    pub fn finish(mut self) -> Result<Vec<FileStat>, LakeError> {
        let mut open: Vec<_> = self.open.drain().collect();
        open.sort_by(|a, b| a.0.cmp(&b.0));
        for (_, f) in open {
            let stat = f.close(self.start, self.end)?;
            self.done.push(stat);
        }
        let mut dirs: Vec<PathBuf> = Vec::new();
        for s in &self.done {
            if let Some(d) = self.lake.root.join(&s.path).parent() {
                if !dirs.iter().any(|x| x == d) {
                    dirs.push(d.to_path_buf());
                }
            }
        }
        for d in dirs {
            sync_dir(&d)?;
        }
        if self.done.is_empty() {
            self.intent.line("empty")?;
        }
        Ok(self.done)
    }
}

impl TableFile {
    fn size(&self) -> usize {
        self.writer
            .as_ref()
            .map(|w| w.bytes_written() + w.in_progress_size())
            .unwrap_or(0)
    }

    /// Maps a new shape of the relation onto this file's columns. Columns keep flowing
    /// while only added or dropped (dropped ones get NULLs); a changed type, or a new
    /// column once rows were handed to the writer, needs a new file (false).
    fn adapt(&mut self, rel: &Relation, types: &[ColType]) -> Result<bool, LakeError> {
        let mut map = Vec::with_capacity(rel.columns.len());
        let mut added = Vec::new();
        for (c, t) in rel.columns.iter().zip(types) {
            match self.columns.iter().position(|f| f.name == c.name) {
                Some(i) if self.columns[i].ty == *t => map.push(i),
                Some(_) => return Ok(false),
                None => {
                    map.push(self.columns.len() + added.len());
                    added.push((c.name.clone(), t.clone()));
                }
            }
        }
        if !added.is_empty() && self.writer.is_some() {
            return Ok(false);
        }
        BatchWriter::check_names(rel)?;
        for c in &rel.columns {
            self.pg_types.insert(c.name.clone(), c.pg_type.clone());
        }
        for (name, ty) in added {
            let mut values = Builder::new(&ty);
            values.append_nulls(self.buffered);
            self.columns.push(FileColumn { name, ty, values });
        }
        self.filled.resize(self.columns.len(), false);
        self.map = map;
        self.shape = rel.fingerprint.clone();
        if !self.fingerprints.contains(&rel.fingerprint) {
            self.fingerprints.push(rel.fingerprint.clone());
        }
        Ok(true)
    }

    /// One row: the tuple's values (all columns, or those named by `cols`), then the
    /// lake columns.
    fn row(
        &mut self,
        rel: &Relation,
        op: u8,
        head: &Head,
        cols: Option<&[usize]>,
        r: &mut Reader,
    ) -> Result<(), LakeError> {
        self.filled.iter_mut().for_each(|f| *f = false);
        let mut unchanged: Vec<&str> = Vec::new();
        let n = if op == b't' {
            0
        } else {
            cols.map_or(rel.columns.len(), |c| c.len())
        };
        for k in 0..n {
            let rc = cols.map_or(k, |c| c[k]);
            let fc = self.map[rc];
            let col = &mut self.columns[fc];
            match r.u8()? {
                b'v' => col.values.append(r)?,
                b'u' => {
                    col.values.append_null();
                    unchanged.push(&rel.columns[rc].name);
                }
                _ => col.values.append_null(),
            }
            self.filled[fc] = true;
        }
        for (i, c) in self.columns.iter_mut().enumerate() {
            if !self.filled[i] {
                c.values.append_null();
            }
        }
        let m = &mut self.meta;
        m.op.append_value(match op {
            b'i' => "i",
            b'u' => "u",
            b'd' => "d",
            b'r' => "r",
            _ => "t",
        });
        m.lsn.append_value(head.lsn as i64);
        m.commit_lsn.append_value(head.commit_lsn as i64);
        m.commit_ts.append_value(head.commit_time);
        m.xid.append_value(head.xid as i64);
        if unchanged.is_empty() {
            m.unchanged.append_null();
        } else {
            for u in unchanged {
                m.unchanged.values().append_value(u);
            }
            m.unchanged.append(true);
        }
        self.buffered += 1;
        self.stat.rows += 1;
        self.stat.min_lsn = self.stat.min_lsn.min(head.lsn);
        self.stat.max_lsn = self.stat.max_lsn.max(head.lsn);
        Ok(())
    }

    fn schema(&self) -> Arc<Schema> {
        let mut fields: Vec<Field> = self.columns.iter().map(|c| c.ty.field(&c.name)).collect();
        fields.extend(MetaColumns::fields());
        Arc::new(Schema::new(fields))
    }

    fn flush(&mut self, start: u64, end: u64) -> Result<(), LakeError> {
        if self.buffered == 0 && self.writer.is_some() {
            return Ok(());
        }
        let schema = self.schema();
        if self.writer.is_none() {
            let p = pending(&self.abs);
            let file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&p)
                .map_err(|e| LakeError::io(&p, e))?;
            let props = WriterProperties::builder()
                .set_compression(Compression::ZSTD(ZstdLevel::default()))
                .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
                .set_key_value_metadata(Some(vec![
                    KeyValue::new("pg_platform.format_version".into(), "1".to_string()),
                    KeyValue::new("pg_platform.start_lsn".into(), lsn_text(start)),
                    KeyValue::new("pg_platform.end_lsn".into(), lsn_text(end)),
                ]))
                .build();
            let w = ArrowWriter::try_new(file, schema.clone(), Some(props))
                .map_err(|e| LakeError::parquet(&p, e))?;
            self.writer = Some(w);
        }
        let mut arrays: Vec<ArrayRef> =
            self.columns.iter_mut().map(|c| c.values.finish()).collect();
        arrays.extend(self.meta.finish());
        let batch =
            RecordBatch::try_new(schema, arrays).map_err(|e| LakeError::Parquet(e.to_string()))?;
        if let Some(w) = self.writer.as_mut() {
            w.write(&batch)
                .map_err(|e| LakeError::parquet(&pending(&self.abs), e))?;
        }
        self.buffered = 0;
        Ok(())
    }

    fn close(mut self, start: u64, end: u64) -> Result<FileStat, LakeError> {
        self.flush(start, end)?;
        let Some(mut w) = self.writer.take() else {
            return Ok(self.stat);
        };
        w.append_key_value_metadata(KeyValue::new(
            "pg_platform.schema_fingerprints".into(),
            self.fingerprints.join(","),
        ));
        self.stat.arrow_schema = Some(schema_json(
            &self.schema(),
            &self.pg_types,
            &self.fingerprints,
        ));
        let file = w
            .into_inner()
            .map_err(|e| LakeError::parquet(&pending(&self.abs), e))?;
        file.sync_all().map_err(|e| LakeError::io(&self.abs, e))?;
        self.stat.bytes = file
            .metadata()
            .map(|m| m.len())
            .map_err(|e| LakeError::io(&self.abs, e))?;
        Ok(self.stat)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lake(name: &str) -> Lake {
        let root =
            std::env::temp_dir().join(format!("pg_platform-files-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        assert!(std::fs::create_dir_all(&root).is_ok());
        let lake = Lake {
            root,
            sink: "s".into(),
        };
        assert!(lake.prepare().is_ok());
        lake
    }

    #[test]
    fn lsns_print_and_parse_like_postgresql() {
        assert_eq!(lsn_text(0x016B_3748), "0/16B3748");
        assert_eq!(lsn_text(0x2_0000_0010), "2/10");
        assert_eq!(parse_lsn("2/10"), Some(0x2_0000_0010));
        assert_eq!(parse_lsn("nope"), None);
        assert_eq!(lsn_name(0x2_0000_0010), "0000000200000010");
    }

    #[test]
    fn an_intent_lists_the_files_made_before_a_crash_and_ignores_a_torn_line() {
        let l = lake("intent");
        let mut i = match IntentFile::create(&l, 16, 32) {
            Ok(i) => i,
            Err(e) => panic!("{e}"),
        };
        assert!(i.line("file public/t/a.parquet").is_ok());
        assert!(i.line("file public/t/b.parquet").is_ok());
        // A crash while appending leaves part of a line.
        let path = l.intent_path();
        let mut f = OpenOptions::new().append(true).open(&path).expect("intent");
        assert!(f.write_all(b"file public/t/c.par").is_ok());
        let got = read_intent(&l).ok().flatten().expect("an intent");
        assert_eq!((got.start, got.end, got.empty), (16, 32, false));
        assert_eq!(
            got.files,
            vec!["public/t/a.parquet", "public/t/b.parquet", "public/t/c.par"]
        );
        // Discarding removes the pending files it names and the intent; absent ones are fine.
        let a = l.root.join("public/t/a.parquet");
        assert!(ensure_dir(&l.root, a.parent().expect("dir")).is_ok());
        assert!(std::fs::write(pending(&a), b"x").is_ok());
        assert!(discard(&l, &got).is_ok());
        assert!(!pending(&a).exists());
        assert!(read_intent(&l).ok().flatten().is_none());
        let _ = std::fs::remove_dir_all(&l.root);
    }

    #[test]
    fn publishing_a_committed_batch_twice_is_harmless_and_a_lost_file_is_reported() {
        let l = lake("publish");
        let a = l.root.join("public/t/a.parquet");
        assert!(ensure_dir(&l.root, a.parent().expect("dir")).is_ok());
        assert!(std::fs::write(pending(&a), b"x").is_ok());
        let files = vec!["public/t/a.parquet".to_string()];
        assert!(publish(&l, &files, false).is_ok());
        assert!(a.exists() && !pending(&a).exists());
        assert!(
            publish(&l, &files, false).is_ok(),
            "a replay after the renames"
        );
        let missing = vec!["public/t/gone.parquet".to_string()];
        assert!(matches!(
            publish(&l, &missing, false),
            Err(LakeError::Corrupt(_))
        ));
        assert!(
            publish(&l, &missing, true).is_ok(),
            "staged for S3: uploaded and removed"
        );
        let _ = std::fs::remove_dir_all(&l.root);
    }
}
