//! The current-state zone: each table's rows as of a committed batch end (the cut), with
//! updates and deletes applied and unchanged TOAST values resolved from the row's earlier
//! image. `platform.lake_compact(sink)` folds the bronze files landed since the table's
//! previous cut into its previous current file and writes
//! `<lake>/current/<schema>/<table>/<cut>.parquet`; the pointer
//! `_pg_platform/<sink>/current.json`, replaced atomically after every table's file is
//! durable, names the files of the cut, so readers that follow it see one consistent cut
//! across tables.

use super::files::{self, lsn_text, parse_lsn, Lake, META_COLUMNS};
use super::LakeError;
use arrow_array::cast::AsArray;
use arrow_array::types::{
    Date32Type, Decimal128Type, Int16Type, Int32Type, Int64Type, TimestampMicrosecondType,
};
use arrow_array::{new_null_array, Array, ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use std::collections::HashMap;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

/// What one table's compaction produced.
#[derive(Debug, Clone)]
pub struct Compacted {
    pub table: String,
    pub path: String,
    pub rows: u64,
    pub merged_files: usize,
}

/// The pointer to the current zone of a sink.
#[derive(Debug, Clone, Default)]
pub struct Pointer {
    pub cut: u64,
    /// Per table: (path relative to the lake, cut, rows, key columns).
    pub tables: Vec<(String, String, u64, u64, Vec<String>)>,
}

pub fn pointer_path(lake: &Lake) -> std::path::PathBuf {
    lake.control_dir().join("current.json")
}

pub fn read_pointer(lake: &Lake) -> Result<Pointer, LakeError> {
    let path = pointer_path(lake);
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Pointer::default()),
        Err(e) => return Err(LakeError::io(&path, e)),
    };
    let v: serde_json::Value = serde_json::from_slice(&text)
        .map_err(|e| LakeError::Corrupt(format!("{}: {e}", path.display())))?;
    let mut p = Pointer {
        cut: parse_lsn(v["cut_lsn"].as_str().unwrap_or("0/0")).unwrap_or(0),
        tables: Vec::new(),
    };
    for t in v["tables"].as_array().into_iter().flatten() {
        p.tables.push((
            t["table"].as_str().unwrap_or_default().to_string(),
            t["path"].as_str().unwrap_or_default().to_string(),
            parse_lsn(t["cut_lsn"].as_str().unwrap_or("0/0")).unwrap_or(0),
            t["rows"].as_u64().unwrap_or(0),
            t["key"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|k| k.as_str().map(String::from))
                .collect(),
        ));
    }
    Ok(p)
}

pub fn write_pointer(lake: &Lake, p: &Pointer) -> Result<(), LakeError> {
    let consistent = p.tables.iter().all(|t| t.2 == p.cut);
    let v = serde_json::json!({
        "format_version": 1,
        "cut_lsn": lsn_text(p.cut),
        "consistent": consistent,
        "tables": p.tables.iter().map(|(t, path, cut, rows, key)| serde_json::json!({
            "table": t, "path": path, "cut_lsn": lsn_text(*cut), "rows": rows, "key": key,
        })).collect::<Vec<_>>(),
    });
    let mut out = serde_json::to_vec_pretty(&v).unwrap_or_default();
    out.push(b'\n');
    files::write_atomic(&pointer_path(lake), &out)
}

pub fn read_file(path: &Path) -> Result<Vec<RecordBatch>, LakeError> {
    let f = File::open(path).map_err(|e| LakeError::io(path, e))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(f)
        .and_then(|b| b.with_batch_size(65_536).build())
        .map_err(|e| LakeError::Parquet(format!("{}: {e}", path.display())))?;
    reader
        .map(|b| b.map_err(|e| LakeError::Parquet(format!("{}: {e}", path.display()))))
        .collect()
}

/// A key column value as bytes (equal values, equal bytes).
fn key_part(a: &dyn Array, row: usize, out: &mut Vec<u8>) -> Result<(), LakeError> {
    if a.is_null(row) {
        out.push(0);
        return Ok(());
    }
    out.push(1);
    match a.data_type() {
        DataType::Int16 => {
            out.extend_from_slice(&a.as_primitive::<Int16Type>().value(row).to_le_bytes())
        }
        DataType::Int32 => {
            out.extend_from_slice(&a.as_primitive::<Int32Type>().value(row).to_le_bytes())
        }
        DataType::Int64 => {
            out.extend_from_slice(&a.as_primitive::<Int64Type>().value(row).to_le_bytes())
        }
        DataType::Date32 => {
            out.extend_from_slice(&a.as_primitive::<Date32Type>().value(row).to_le_bytes())
        }
        DataType::Timestamp(..) => out.extend_from_slice(
            &a.as_primitive::<TimestampMicrosecondType>()
                .value(row)
                .to_le_bytes(),
        ),
        DataType::Decimal128(..) => {
            out.extend_from_slice(&a.as_primitive::<Decimal128Type>().value(row).to_le_bytes())
        }
        DataType::Utf8 => {
            let v = a.as_string::<i32>().value(row).as_bytes();
            out.extend_from_slice(&(v.len() as u32).to_le_bytes());
            out.extend_from_slice(v);
        }
        DataType::Binary => {
            let v = a.as_binary::<i32>().value(row);
            out.extend_from_slice(&(v.len() as u32).to_le_bytes());
            out.extend_from_slice(v);
        }
        DataType::FixedSizeBinary(_) => out.extend_from_slice(a.as_fixed_size_binary().value(row)),
        DataType::Boolean => out.push(u8::from(a.as_boolean().value(row))),
        other => {
            return Err(LakeError::CompactKey(other.to_string()));
        }
    }
    Ok(())
}

/// Where a current row's values come from: a source row, and for columns an update left
/// unchanged (TOAST), the earlier row that holds them.
#[derive(Clone)]
struct Current {
    src: (usize, usize),
    overrides: Option<Vec<(usize, (usize, usize))>>,
}

impl Current {
    fn source_of(&self, col: usize) -> (usize, usize) {
        self.overrides
            .as_ref()
            .and_then(|o| o.iter().find(|(c, _)| *c == col).map(|(_, s)| *s))
            .unwrap_or(self.src)
    }
}

/// Adds `schema`'s fields (but those named in `skip`) missing from `fields`, nullable;
/// a column whose type changed is refused (files of one table are read as one schema).
pub fn union_fields(
    fields: &mut Vec<Field>,
    schema: &Schema,
    skip: &[&str],
) -> Result<(), LakeError> {
    for f in schema.fields() {
        if skip.contains(&f.name().as_str()) {
            continue;
        }
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
    Ok(())
}

/// `b`'s columns as `schema`'s (by name; a column `b` lacks is all NULL).
pub fn conform(b: &RecordBatch, schema: &Schema) -> Vec<ArrayRef> {
    schema
        .fields()
        .iter()
        .map(|f| {
            b.column_by_name(f.name())
                .cloned()
                .unwrap_or_else(|| new_null_array(f.data_type(), b.num_rows()))
        })
        .collect()
}

/// Folds `base` (the previous current file, if any) and `bronze` (files in LSN order) into
/// the current rows of one table, written to `out` (as `.pending`, then renamed).
pub fn compact_table(
    lake: &Lake,
    base: Option<&str>,
    bronze: &[String],
    key: &[String],
    out: &str,
) -> Result<u64, LakeError> {
    // Sources, and the union of their data columns (by name; a changed type is refused).
    let mut sources: Vec<(bool, RecordBatch)> = Vec::new();
    if let Some(b) = base {
        for batch in read_file(&lake.root.join(b))? {
            sources.push((true, batch));
        }
    }
    for f in bronze {
        for batch in read_file(&lake.root.join(f))? {
            sources.push((false, batch));
        }
    }
    let mut fields: Vec<Field> = Vec::new();
    for (_, b) in &sources {
        union_fields(&mut fields, &b.schema(), &META_COLUMNS)?;
    }
    for m in ["_commit_lsn", "_lsn", "_commit_ts"] {
        if let Some(f) = sources
            .iter()
            .find_map(|(_, b)| b.schema().field_with_name(m).ok().cloned())
        {
            if !fields.iter().any(|x| x.name() == m) {
                fields.push(f.with_nullable(true));
            }
        }
    }
    let schema = Arc::new(Schema::new(fields));
    // Every source as the target's columns (missing ones NULL).
    let columns: Vec<Vec<ArrayRef>> = sources.iter().map(|(_, b)| conform(b, &schema)).collect();
    let key_idx: Vec<usize> = key
        .iter()
        .map(|k| {
            schema
                .index_of(k)
                .map_err(|_| LakeError::CompactKey(format!("key column {k} is not in the lake")))
        })
        .collect::<Result<_, _>>()?;
    let col_idx: HashMap<&str, usize> = schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| (f.name().as_str(), i))
        .collect();

    // Changes in commit order (the base first: it is older than every bronze row).
    let mut order: Vec<(bool, i64, i64, usize, usize)> = Vec::new();
    for (si, (is_base, b)) in sources.iter().enumerate() {
        let cl = b
            .column_by_name("_commit_lsn")
            .map(|a| a.as_primitive::<Int64Type>().clone());
        let l = b
            .column_by_name("_lsn")
            .map(|a| a.as_primitive::<Int64Type>().clone());
        for row in 0..b.num_rows() {
            order.push((
                !is_base,
                cl.as_ref().map_or(0, |a| a.value(row)),
                l.as_ref().map_or(0, |a| a.value(row)),
                si,
                row,
            ));
        }
    }
    order.sort();
    let mut state: HashMap<Vec<u8>, Current> = HashMap::new();
    for (_, _, _, si, row) in order {
        let (is_base, b) = &sources[si];
        let op = if *is_base {
            "r".to_string()
        } else {
            match b.column_by_name("_op") {
                Some(a) => {
                    let d = a.as_any_dictionary();
                    let keys = d.normalized_keys();
                    d.values().as_string::<i32>().value(keys[row]).to_string()
                }
                None => "r".to_string(),
            }
        };
        if op == "t" {
            state.clear();
            continue;
        }
        let mut k = Vec::new();
        for &ki in &key_idx {
            key_part(columns[si][ki].as_ref(), row, &mut k)?;
        }
        if op == "d" {
            state.remove(&k);
            continue;
        }
        let mut cur = Current {
            src: (si, row),
            overrides: None,
        };
        // Unchanged TOAST columns keep the value of the row's earlier image.
        if let Some(list) = b.column_by_name("_unchanged_toast") {
            let list = list.as_list::<i32>();
            if !list.is_null(row) {
                let names = list.value(row);
                let names = names.as_string::<i32>();
                if let Some(prev) = state.get(&k) {
                    let mut o = Vec::new();
                    for i in 0..names.len() {
                        if let Some(&ci) = col_idx.get(names.value(i)) {
                            o.push((ci, prev.source_of(ci)));
                        }
                    }
                    cur.overrides = Some(o);
                }
            }
        }
        state.insert(k, cur);
    }

    let mut rows: Vec<(Vec<u8>, Current)> = state.into_iter().collect();
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    let abs = lake.root.join(out);
    if let Some(dir) = abs.parent() {
        files::ensure_dir(&lake.root, dir)?;
    }
    let pending = files::pending(&abs);
    let _ = std::fs::remove_file(&pending);
    let file = File::options()
        .write(true)
        .create_new(true)
        .open(&pending)
        .map_err(|e| LakeError::io(&pending, e))?;
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .build();
    let mut w = ArrowWriter::try_new(file, schema.clone(), Some(props))
        .map_err(|e| LakeError::Parquet(e.to_string()))?;
    for chunk in rows.chunks(65_536) {
        let mut arrays = Vec::with_capacity(schema.fields().len());
        for ci in 0..schema.fields().len() {
            let srcs: Vec<&dyn Array> = columns.iter().map(|c| c[ci].as_ref()).collect();
            let idx: Vec<(usize, usize)> = chunk.iter().map(|(_, c)| c.source_of(ci)).collect();
            arrays.push(
                arrow_select::interleave::interleave(&srcs, &idx)
                    .map_err(|e| LakeError::Parquet(e.to_string()))?,
            );
        }
        let batch = RecordBatch::try_new(schema.clone(), arrays)
            .map_err(|e| LakeError::Parquet(e.to_string()))?;
        w.write(&batch)
            .map_err(|e| LakeError::parquet(&pending, e))?;
    }
    let f = w
        .into_inner()
        .map_err(|e| LakeError::parquet(&pending, e))?;
    f.sync_all().map_err(|e| LakeError::io(&pending, e))?;
    std::fs::rename(&pending, &abs).map_err(|e| LakeError::io(&abs, e))?;
    if let Some(dir) = abs.parent() {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| LakeError::io(dir, e))?;
    }
    Ok(rows.len() as u64)
}
