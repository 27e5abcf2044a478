//! From the CDC plugin's Arrow type names to Arrow columns: each relation column gets a
//! builder that reads its binary values straight from the message, with no text parsing
//! except for decimals (sent as exact decimal strings).

use super::decode::Reader;
use super::LakeError;
use arrow_array::builder::{
    BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder, FixedSizeBinaryBuilder,
    Float32Builder, Float64Builder, Int16Builder, Int32Builder, Int64Builder, StringBuilder,
    Time64MicrosecondBuilder, TimestampMicrosecondBuilder,
};
use arrow_array::{ArrayRef, ListArray, StructArray};
use arrow_buffer::{NullBufferBuilder, OffsetBuffer};
use arrow_schema::{DataType, Field, Fields, TimeUnit};
use std::collections::HashMap;
use std::sync::Arc;

/// The Arrow type of a column, as named in the plugin's relation messages.
#[derive(Debug, Clone, PartialEq)]
pub enum ColType {
    Bool,
    I16,
    I32,
    I64,
    F32,
    F64,
    Decimal(u8, i8),
    /// utf8, and everything the plugin sends as text (unconstrained numeric, enums, inet).
    Utf8,
    Json,
    Binary,
    Date32,
    Time64,
    Timestamp {
        utc: bool,
    },
    /// interval as a struct of months, days and microseconds (Parquet has no lossless
    /// interval type and the Arrow writer refuses month_day_nano).
    Interval,
    Uuid,
    List(Box<ColType>),
}

impl ColType {
    pub fn parse(arrow: &str) -> Result<ColType, LakeError> {
        Ok(match arrow {
            "bool" => ColType::Bool,
            "int16" => ColType::I16,
            "int32" => ColType::I32,
            "int64" => ColType::I64,
            "float32" => ColType::F32,
            "float64" => ColType::F64,
            "utf8" | "utf8(decimal)" | "dictionary(int32,utf8)" => ColType::Utf8,
            "utf8(json)" => ColType::Json,
            "binary" => ColType::Binary,
            "date32" => ColType::Date32,
            "time64(us)" => ColType::Time64,
            "timestamp(us)" => ColType::Timestamp { utc: false },
            "timestamp(us,UTC)" => ColType::Timestamp { utc: true },
            "interval(month_day_nano)" => ColType::Interval,
            "fixed_size_binary(16,uuid)" => ColType::Uuid,
            _ => {
                if let Some(inner) = arrow
                    .strip_prefix("list(")
                    .and_then(|s| s.strip_suffix(')'))
                {
                    ColType::List(Box::new(ColType::parse(inner)?))
                } else if let Some(ps) = arrow
                    .strip_prefix("decimal128(")
                    .and_then(|s| s.strip_suffix(')'))
                {
                    let (p, s) = ps.split_once(',').unwrap_or((ps, "0"));
                    match (p.trim().parse::<u8>(), s.trim().parse::<i8>()) {
                        (Ok(p), Ok(s)) if (1..=38).contains(&p) => ColType::Decimal(p, s),
                        _ => return Err(LakeError::Decode(format!("arrow type {arrow}"))),
                    }
                } else {
                    return Err(LakeError::Decode(format!("unknown arrow type {arrow}")));
                }
            }
        })
    }

    /// Moves past one non-null value of this type.
    pub fn skip(&self, r: &mut Reader) -> Result<(), LakeError> {
        match self {
            ColType::Bool => r.take(1).map(|_| ()),
            ColType::I16 => r.take(2).map(|_| ()),
            ColType::I32 | ColType::F32 | ColType::Date32 => r.take(4).map(|_| ()),
            ColType::I64 | ColType::F64 | ColType::Time64 | ColType::Timestamp { .. } => {
                r.take(8).map(|_| ())
            }
            ColType::Interval | ColType::Uuid => r.take(16).map(|_| ()),
            ColType::Decimal(..) | ColType::Utf8 | ColType::Json | ColType::Binary => {
                r.bytes().map(|_| ())
            }
            ColType::List(elem) => {
                let ndim = r.u8()? as usize;
                let mut count: usize = if ndim == 0 { 0 } else { 1 };
                for _ in 0..ndim {
                    count = count.saturating_mul(r.u32()? as usize);
                }
                for _ in 0..count {
                    if r.u8()? != b'n' {
                        elem.skip(r)?;
                    }
                }
                Ok(())
            }
        }
    }

    pub fn data_type(&self) -> DataType {
        match self {
            ColType::Bool => DataType::Boolean,
            ColType::I16 => DataType::Int16,
            ColType::I32 => DataType::Int32,
            ColType::I64 => DataType::Int64,
            ColType::F32 => DataType::Float32,
            ColType::F64 => DataType::Float64,
            ColType::Decimal(p, s) => DataType::Decimal128(*p, *s),
            ColType::Utf8 | ColType::Json => DataType::Utf8,
            ColType::Binary => DataType::Binary,
            ColType::Date32 => DataType::Date32,
            ColType::Time64 => DataType::Time64(TimeUnit::Microsecond),
            ColType::Timestamp { utc } => {
                DataType::Timestamp(TimeUnit::Microsecond, utc.then(|| "UTC".into()))
            }
            ColType::Interval => DataType::Struct(interval_fields()),
            ColType::Uuid => DataType::FixedSizeBinary(16),
            ColType::List(elem) => {
                DataType::List(Arc::new(Field::new("item", elem.data_type(), true)))
            }
        }
    }

    /// The column's field; JSON and UUID carry their canonical Arrow extension names.
    pub fn field(&self, name: &str) -> Field {
        let f = Field::new(name, self.data_type(), true);
        let ext = match self {
            ColType::Json => "arrow.json",
            ColType::Uuid => "arrow.uuid",
            _ => return f,
        };
        f.with_metadata(HashMap::from([(
            "ARROW:extension:name".to_string(),
            ext.to_string(),
        )]))
    }
}

fn interval_fields() -> Fields {
    Fields::from(vec![
        Field::new("months", DataType::Int32, false),
        Field::new("days", DataType::Int32, false),
        Field::new("micros", DataType::Int64, false),
    ])
}

/// The three parts of interval values, and which are NULL.
pub struct IntervalParts {
    months: Int32Builder,
    days: Int32Builder,
    micros: Int64Builder,
    nulls: NullBufferBuilder,
}

/// Column values being collected for one file.
pub enum Builder {
    Bool(BooleanBuilder),
    I16(Int16Builder),
    I32(Int32Builder),
    I64(Int64Builder),
    F32(Float32Builder),
    F64(Float64Builder),
    Decimal(Decimal128Builder, u8, i8),
    Utf8(StringBuilder),
    Binary(BinaryBuilder),
    Date32(Date32Builder),
    Time64(Time64MicrosecondBuilder),
    Timestamp(TimestampMicrosecondBuilder, bool),
    Interval(Box<IntervalParts>),
    Uuid(FixedSizeBinaryBuilder),
    List {
        elem_type: ColType,
        values: Box<Builder>,
        offsets: Vec<i32>,
        nulls: NullBufferBuilder,
    },
}

impl Builder {
    pub fn new(t: &ColType) -> Builder {
        match t {
            ColType::Bool => Builder::Bool(BooleanBuilder::new()),
            ColType::I16 => Builder::I16(Int16Builder::new()),
            ColType::I32 => Builder::I32(Int32Builder::new()),
            ColType::I64 => Builder::I64(Int64Builder::new()),
            ColType::F32 => Builder::F32(Float32Builder::new()),
            ColType::F64 => Builder::F64(Float64Builder::new()),
            ColType::Decimal(p, s) => Builder::Decimal(Decimal128Builder::new(), *p, *s),
            ColType::Utf8 | ColType::Json => Builder::Utf8(StringBuilder::new()),
            ColType::Binary => Builder::Binary(BinaryBuilder::new()),
            ColType::Date32 => Builder::Date32(Date32Builder::new()),
            ColType::Time64 => Builder::Time64(Time64MicrosecondBuilder::new()),
            ColType::Timestamp { utc } => {
                Builder::Timestamp(TimestampMicrosecondBuilder::new(), *utc)
            }
            ColType::Interval => Builder::Interval(Box::new(IntervalParts {
                months: Int32Builder::new(),
                days: Int32Builder::new(),
                micros: Int64Builder::new(),
                nulls: NullBufferBuilder::new(0),
            })),
            ColType::Uuid => Builder::Uuid(FixedSizeBinaryBuilder::new(16)),
            ColType::List(elem) => Builder::List {
                elem_type: (**elem).clone(),
                values: Box::new(Builder::new(elem)),
                offsets: vec![0],
                nulls: NullBufferBuilder::new(0),
            },
        }
    }

    pub fn append_null(&mut self) {
        match self {
            Builder::Bool(b) => b.append_null(),
            Builder::I16(b) => b.append_null(),
            Builder::I32(b) => b.append_null(),
            Builder::I64(b) => b.append_null(),
            Builder::F32(b) => b.append_null(),
            Builder::F64(b) => b.append_null(),
            Builder::Decimal(b, ..) => b.append_null(),
            Builder::Utf8(b) => b.append_null(),
            Builder::Binary(b) => b.append_null(),
            Builder::Date32(b) => b.append_null(),
            Builder::Time64(b) => b.append_null(),
            Builder::Timestamp(b, _) => b.append_null(),
            Builder::Interval(p) => {
                p.months.append_value(0);
                p.days.append_value(0);
                p.micros.append_value(0);
                p.nulls.append_null();
            }
            Builder::Uuid(b) => b.append_null(),
            Builder::List { offsets, nulls, .. } => {
                offsets.push(offsets.last().copied().unwrap_or(0));
                nulls.append_null();
            }
        }
    }

    pub fn append_nulls(&mut self, n: usize) {
        for _ in 0..n {
            self.append_null();
        }
    }

    /// Reads one non-null value of this column's type from `r`.
    pub fn append(&mut self, r: &mut Reader) -> Result<(), LakeError> {
        match self {
            Builder::Bool(b) => b.append_value(r.u8()? != 0),
            Builder::I16(b) => b.append_value(r.i16()?),
            Builder::I32(b) => b.append_value(r.i32()?),
            Builder::I64(b) => b.append_value(r.i64()?),
            Builder::F32(b) => b.append_value(f32::from_bits(r.u32()?)),
            Builder::F64(b) => b.append_value(f64::from_bits(r.u64()?)),
            Builder::Decimal(b, _, s) => match decimal(r.str()?, *s) {
                Some(v) => b.append_value(v),
                // NaN has no decimal128 value; documented as NULL in the lake.
                None => b.append_null(),
            },
            Builder::Utf8(b) => b.append_value(r.str()?),
            Builder::Binary(b) => b.append_value(r.bytes()?),
            Builder::Date32(b) => b.append_value(r.i32()?),
            Builder::Time64(b) => b.append_value(r.i64()?),
            Builder::Timestamp(b, _) => b.append_value(r.i64()?),
            Builder::Interval(p) => {
                p.months.append_value(r.i32()?);
                p.days.append_value(r.i32()?);
                p.micros.append_value(r.i64()?);
                p.nulls.append_non_null();
            }
            Builder::Uuid(b) => b
                .append_value(r.take(16)?)
                .map_err(|e| LakeError::Decode(e.to_string()))?,
            Builder::List {
                values,
                offsets,
                nulls,
                ..
            } => {
                // Multi-dimensional arrays are flattened in row-major order.
                let ndim = r.u8()? as usize;
                let mut count: usize = if ndim == 0 { 0 } else { 1 };
                for _ in 0..ndim {
                    count = count.saturating_mul(r.u32()? as usize);
                }
                for _ in 0..count {
                    match r.u8()? {
                        b'n' => values.append_null(),
                        _ => values.append(r)?,
                    }
                }
                let last = offsets.last().copied().unwrap_or(0);
                offsets.push(last + count as i32);
                nulls.append_non_null();
            }
        }
        Ok(())
    }

    pub fn finish(&mut self) -> ArrayRef {
        match self {
            Builder::Bool(b) => Arc::new(b.finish()),
            Builder::I16(b) => Arc::new(b.finish()),
            Builder::I32(b) => Arc::new(b.finish()),
            Builder::I64(b) => Arc::new(b.finish()),
            Builder::F32(b) => Arc::new(b.finish()),
            Builder::F64(b) => Arc::new(b.finish()),
            Builder::Decimal(b, p, s) => Arc::new(
                b.finish()
                    .with_precision_and_scale(*p, *s)
                    .unwrap_or_else(|_| Decimal128Builder::new().finish()),
            ),
            Builder::Utf8(b) => Arc::new(b.finish()),
            Builder::Binary(b) => Arc::new(b.finish()),
            Builder::Date32(b) => Arc::new(b.finish()),
            Builder::Time64(b) => Arc::new(b.finish()),
            Builder::Timestamp(b, utc) => {
                let a = b.finish();
                Arc::new(if *utc { a.with_timezone("UTC") } else { a })
            }
            Builder::Interval(p) => Arc::new(StructArray::new(
                interval_fields(),
                vec![
                    Arc::new(p.months.finish()),
                    Arc::new(p.days.finish()),
                    Arc::new(p.micros.finish()),
                ],
                p.nulls.finish(),
            )),
            Builder::Uuid(b) => Arc::new(b.finish()),
            Builder::List {
                elem_type,
                values,
                offsets,
                nulls,
            } => {
                let taken = std::mem::replace(offsets, vec![0]);
                Arc::new(ListArray::new(
                    Arc::new(Field::new("item", elem_type.data_type(), true)),
                    OffsetBuffer::new(taken.into()),
                    values.finish(),
                    nulls.finish(),
                ))
            }
        }
    }
}

/// An exact decimal string as a decimal128 of `scale`; `None` for NaN and infinities.
pub fn decimal(s: &str, scale: i8) -> Option<i128> {
    let (neg, digits) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    let mut v: i128 = 0;
    let push = |v: i128, c: u8| -> Option<i128> {
        if !c.is_ascii_digit() {
            return None;
        }
        v.checked_mul(10)?.checked_add((c - b'0') as i128)
    };
    for c in int.bytes() {
        v = push(v, c)?;
    }
    let scale = scale.max(0) as usize;
    let fb = frac.as_bytes();
    for i in 0..scale {
        v = push(v, fb.get(i).copied().unwrap_or(b'0'))?;
    }
    Some(if neg { -v } else { v })
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::Array;

    #[test]
    fn every_plugin_type_name_parses() {
        for t in [
            "bool",
            "int16",
            "int32",
            "int64",
            "float32",
            "float64",
            "decimal128(38,10)",
            "utf8(decimal)",
            "utf8",
            "binary",
            "date32",
            "time64(us)",
            "timestamp(us)",
            "timestamp(us,UTC)",
            "interval(month_day_nano)",
            "fixed_size_binary(16,uuid)",
            "utf8(json)",
            "dictionary(int32,utf8)",
            "list(int32)",
            "list(list(utf8))",
        ] {
            assert!(ColType::parse(t).is_ok(), "{t}");
        }
        assert!(ColType::parse("decimal128(39,2)").is_err());
        assert!(ColType::parse("float16").is_err());
    }

    #[test]
    fn decimals_are_exact() {
        assert_eq!(decimal("123.45", 2), Some(12345));
        assert_eq!(decimal("-0.5", 3), Some(-500));
        assert_eq!(decimal("7", 2), Some(700));
        assert_eq!(
            decimal("1234567890123456789012345678.0123456789", 10),
            Some(12345678901234567890123456780123456789)
        );
        assert_eq!(decimal("NaN", 2), None);
        assert_eq!(decimal("Infinity", 2), None);
    }

    #[test]
    fn lists_keep_null_elements_and_null_lists() {
        let mut b = Builder::new(&ColType::List(Box::new(ColType::I32)));
        let mut buf = vec![1u8];
        buf.extend_from_slice(&3u32.to_le_bytes());
        buf.push(b'v');
        buf.extend_from_slice(&1i32.to_le_bytes());
        buf.push(b'n');
        buf.push(b'v');
        buf.extend_from_slice(&3i32.to_le_bytes());
        assert!(b.append(&mut Reader::new(&buf)).is_ok());
        b.append_null();
        assert!(b.append(&mut Reader::new(&[0u8])).is_ok());
        let a = b.finish();
        let l = a.as_any().downcast_ref::<ListArray>().expect("list");
        assert_eq!(l.len(), 3);
        assert_eq!(l.value_length(0), 3);
        assert!(l.value(0).is_null(1));
        assert!(l.is_null(1));
        assert_eq!(l.value_length(2), 0);
        assert!(!l.is_null(2));
    }
}
