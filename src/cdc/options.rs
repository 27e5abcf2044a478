//! Startup options of the output plugin, as given to `pg_logical_slot_get_changes(...,
//! VARIADIC options)` or `pg_recvlogical -o name=value`.

use crate::error::SqlError;
use pgrx::pg_sys;
use pgrx::PgSqlErrorCode;
use std::ffi::CStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Binary,
}

#[derive(Debug, Clone)]
pub struct Options {
    pub format: Format,
    pub format_version: u32,
    pub include_tables: Vec<Pattern>,
    pub exclude_tables: Vec<Pattern>,
    pub include_old_rows: bool,
    pub include_xids: bool,
    pub include_timestamps: bool,
    pub include_lsns: bool,
    pub include_messages: bool,
    pub include_empty_transactions: bool,
    pub streaming: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            format: Format::Json,
            format_version: 1,
            include_tables: Vec::new(),
            exclude_tables: Vec::new(),
            include_old_rows: true,
            include_xids: true,
            include_timestamps: true,
            include_lsns: true,
            include_messages: true,
            include_empty_transactions: false,
            streaming: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OptionError {
    #[error("pg_platform output plugin: unknown option \"{0}\"")]
    Unknown(String),
    #[error("pg_platform output plugin: option \"{0}\" must be a boolean, got \"{1}\"")]
    NotBoolean(String, String),
    #[error("pg_platform output plugin: format \"{0}\" is not supported")]
    Format(String),
    #[error("pg_platform output plugin: format_version \"{0}\" is not supported")]
    FormatVersion(String),
    #[error("pg_platform output plugin: invalid table pattern \"{0}\"")]
    Pattern(String),
}

impl SqlError for OptionError {
    fn sqlstate(&self) -> PgSqlErrorCode {
        PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE
    }

    fn hint(&self) -> Option<String> {
        Some(match self {
            Self::Unknown(_) => "Valid options: format, format_version, include_tables, exclude_tables, include_old_rows, include_xids, include_timestamps, include_lsns, include_messages, include_empty_transactions, streaming.".into(),
            Self::NotBoolean(..) => "Use true or false (also on/off, 1/0).".into(),
            Self::Format(_) => "Use format json (the default) or binary.".into(),
            Self::FormatVersion(_) => "This version of pg_platform writes format_version 1.".into(),
            Self::Pattern(_) => "Patterns are schema.table, each part a name or a glob with * and ?, separated by commas: public.*,payments.transaction".into(),
        })
    }
}

/// A `schema.table` glob.
#[derive(Debug, Clone)]
pub struct Pattern {
    schema: String,
    table: String,
}

impl Pattern {
    fn parse(text: &str) -> Result<Pattern, OptionError> {
        let text = text.trim();
        match text.split_once('.') {
            Some((s, t)) if !s.is_empty() && !t.is_empty() && !t.contains('.') => Ok(Pattern {
                schema: s.to_string(),
                table: t.to_string(),
            }),
            _ => Err(OptionError::Pattern(text.to_string())),
        }
    }

    pub fn matches(&self, schema: &str, table: &str) -> bool {
        glob(self.schema.as_bytes(), schema.as_bytes())
            && glob(self.table.as_bytes(), table.as_bytes())
    }
}

/// Glob match with `*` (any run) and `?` (one character), iterative with backtracking.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some(p);
            mark = t;
            p += 1;
        } else if let Some(s) = star {
            p = s + 1;
            mark += 1;
            t = mark;
        } else {
            return false;
        }
    }
    while p < pattern.len() && pattern[p] == b'*' {
        p += 1;
    }
    p == pattern.len()
}

fn boolean(name: &str, value: &str) -> Result<bool, OptionError> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "on" | "1" | "yes" | "t" => Ok(true),
        "false" | "off" | "0" | "no" | "f" => Ok(false),
        _ => Err(OptionError::NotBoolean(name.into(), value.into())),
    }
}

fn patterns(value: &str) -> Result<Vec<Pattern>, OptionError> {
    value
        .split(',')
        .filter(|p| !p.trim().is_empty())
        .map(Pattern::parse)
        .collect()
}

impl Options {
    /// Parses name/value pairs; a missing value means `true` for booleans.
    pub fn parse<'a>(
        pairs: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
    ) -> Result<Options, OptionError> {
        let mut o = Options::default();
        for (name, value) in pairs {
            let v = value.unwrap_or("true");
            match name {
                "format" => {
                    o.format = match v {
                        "json" => Format::Json,
                        "binary" => Format::Binary,
                        other => return Err(OptionError::Format(other.into())),
                    }
                }
                "format_version" => {
                    if v.trim() != "1" {
                        return Err(OptionError::FormatVersion(v.into()));
                    }
                    o.format_version = 1;
                }
                "include_tables" => o.include_tables = patterns(v)?,
                "exclude_tables" => o.exclude_tables = patterns(v)?,
                "include_old_rows" => o.include_old_rows = boolean(name, v)?,
                "include_xids" => o.include_xids = boolean(name, v)?,
                "include_timestamps" => o.include_timestamps = boolean(name, v)?,
                "include_lsns" => o.include_lsns = boolean(name, v)?,
                "include_messages" => o.include_messages = boolean(name, v)?,
                "include_empty_transactions" => o.include_empty_transactions = boolean(name, v)?,
                "streaming" => o.streaming = boolean(name, v)?,
                other => return Err(OptionError::Unknown(other.into())),
            }
        }
        Ok(o)
    }

    /// Reads the options list PostgreSQL hands to the startup callback.
    ///
    /// # Safety
    /// `list` is a PostgreSQL `List` of `DefElem` (or NULL).
    pub unsafe fn from_list(list: *mut pg_sys::List) -> Result<Options, OptionError> {
        let mut pairs: Vec<(String, Option<String>)> = Vec::new();
        if !list.is_null() {
            for i in 0..(*list).length as usize {
                let def = (*(*list).elements.add(i)).ptr_value as *mut pg_sys::DefElem;
                let name = CStr::from_ptr((*def).defname)
                    .to_string_lossy()
                    .into_owned();
                let value = if (*def).arg.is_null() {
                    None
                } else {
                    // In the database's encoding, as the names it is matched with.
                    Some(
                        crate::sql::server_to_utf8_lossy(
                            CStr::from_ptr(pg_sys::defGetString(def)).to_bytes(),
                        )
                        .into_owned(),
                    )
                };
                pairs.push((name, value));
            }
        }
        Options::parse(pairs.iter().map(|(n, v)| (n.as_str(), v.as_deref())))
    }

    /// Whether changes of `schema.table` are decoded.
    pub fn wants(&self, schema: &str, table: &str) -> bool {
        (self.include_tables.is_empty()
            || self.include_tables.iter().any(|p| p.matches(schema, table)))
            && !self.exclude_tables.iter().any(|p| p.matches(schema, table))
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob(b"*", b"anything"));
        assert!(glob(b"pay*", b"payments"));
        assert!(glob(b"t?x", b"tax"));
        assert!(!glob(b"t?x", b"taax"));
        assert!(glob(b"*_p2026*", b"transaction_p20260101"));
        assert!(!glob(b"customer", b"customers"));
    }

    #[test]
    fn include_and_exclude() {
        let o = Options::parse([
            ("include_tables", Some("payments.*")),
            ("exclude_tables", Some("payments.device")),
        ])
        .unwrap_or_default();
        assert!(o.wants("payments", "transaction"));
        assert!(!o.wants("payments", "device"));
        assert!(!o.wants("public", "t"));
    }

    #[test]
    fn bad_options() {
        assert!(matches!(
            Options::parse([("colour", Some("red"))]),
            Err(OptionError::Unknown(_))
        ));
        assert!(matches!(
            Options::parse([("include_xids", Some("maybe"))]),
            Err(OptionError::NotBoolean(..))
        ));
        assert!(matches!(
            Options::parse([("format_version", Some("2"))]),
            Err(OptionError::FormatVersion(_))
        ));
        assert!(matches!(
            Options::parse([("include_tables", Some("nodot"))]),
            Err(OptionError::Pattern(_))
        ));
        assert!(matches!(
            Options::parse([("format", Some("xml"))]),
            Err(OptionError::Format(_))
        ));
    }
}
