//! A small JSON reader that keeps numbers as their source text.
//!
//! Why not `serde_json::Value`: it turns every number into an `f64` first, and rounding
//! decimal → `f64` → `f32` can differ from decimal → `f32` by one ulp, which would break
//! bit-exactness with XGBoost (whose thresholds and leaves are `float`). Here a number is
//! parsed once, straight into the width the caller asks for. Nesting depth is bounded so
//! hostile input cannot overflow the stack; `NaN`/`Infinity` tokens (which XGBoost's own
//! writer may emit) are accepted as numbers so that the model validator, not the parser,
//! reports them precisely.

use super::error::{FraudError, Result};

/// Deepest nesting accepted; XGBoost models need 6.
pub const MAX_DEPTH: usize = 64;

/// A parsed JSON value borrowing number text from the input.
#[derive(Debug, Clone, PartialEq)]
pub enum Json<'a> {
    Null,
    Bool(bool),
    Num(&'a str),
    Str(String),
    Arr(Vec<Json<'a>>),
    Obj(Vec<(String, Json<'a>)>),
}

impl<'a> Json<'a> {
    /// The value of `key` in an object (the first one, if repeated).
    pub fn get(&self, key: &str) -> Option<&Json<'a>> {
        match self {
            Json::Obj(items) => items.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Json<'a>]> {
        match self {
            Json::Arr(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Json::Str(s) => Some(s),
            _ => None,
        }
    }

    /// A number's text, or a string's (XGBoost writes many numbers as strings).
    pub fn number_text(&self) -> Option<&str> {
        match self {
            Json::Num(s) => Some(s),
            Json::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The value as `f32`, correctly rounded from its decimal text.
    pub fn as_f32(&self) -> Option<f32> {
        self.number_text()
            .and_then(|s| s.trim().parse::<f32>().ok())
    }

    pub fn as_f64(&self) -> Option<f64> {
        self.number_text()
            .and_then(|s| s.trim().parse::<f64>().ok())
    }

    /// Integers, also when written as `1.0` or `"1"`.
    pub fn as_i64(&self) -> Option<i64> {
        let s = self.number_text()?.trim();
        if let Ok(i) = s.parse::<i64>() {
            return Some(i);
        }
        let f = s.parse::<f64>().ok()?;
        (f.fract() == 0.0 && f.abs() < 9.0e15).then_some(f as i64)
    }
}

/// Parses `text` as one JSON value (with nothing but whitespace after it).
pub fn parse(text: &str) -> Result<Json<'_>> {
    let mut p = Parser {
        s: text,
        b: text.as_bytes(),
        i: 0,
    };
    let v = p.value(0)?;
    p.ws();
    if p.i != p.b.len() {
        return Err(p.err("unexpected text after the JSON value"));
    }
    Ok(v)
}

struct Parser<'a> {
    s: &'a str,
    b: &'a [u8],
    i: usize,
}

impl<'a> Parser<'a> {
    fn err(&self, what: &str) -> FraudError {
        FraudError::Malformed(format!("JSON: {what} at byte {}", self.i))
    }

    fn ws(&mut self) {
        while let Some(c) = self.b.get(self.i) {
            if matches!(c, b' ' | b'\t' | b'\n' | b'\r') {
                self.i += 1;
            } else {
                break;
            }
        }
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn eat(&mut self, word: &str) -> bool {
        if self.b[self.i..].starts_with(word.as_bytes()) {
            self.i += word.len();
            true
        } else {
            false
        }
    }

    fn value(&mut self, depth: usize) -> Result<Json<'a>> {
        if depth > MAX_DEPTH {
            return Err(self.err("nesting too deep"));
        }
        self.ws();
        match self.peek() {
            None => Err(self.err("unexpected end of input")),
            Some(b'{') => {
                self.i += 1;
                let mut items = Vec::new();
                self.ws();
                if self.peek() == Some(b'}') {
                    self.i += 1;
                    return Ok(Json::Obj(items));
                }
                loop {
                    self.ws();
                    if self.peek() != Some(b'"') {
                        return Err(self.err("expected a string key"));
                    }
                    let k = self.string()?;
                    self.ws();
                    if self.peek() != Some(b':') {
                        return Err(self.err("expected ':'"));
                    }
                    self.i += 1;
                    let v = self.value(depth + 1)?;
                    items.push((k, v));
                    self.ws();
                    match self.peek() {
                        Some(b',') => self.i += 1,
                        Some(b'}') => {
                            self.i += 1;
                            return Ok(Json::Obj(items));
                        }
                        None => return Err(self.err("unexpected end of input")),
                        _ => return Err(self.err("expected ',' or '}'")),
                    }
                }
            }
            Some(b'[') => {
                self.i += 1;
                let mut items = Vec::new();
                self.ws();
                if self.peek() == Some(b']') {
                    self.i += 1;
                    return Ok(Json::Arr(items));
                }
                loop {
                    items.push(self.value(depth + 1)?);
                    self.ws();
                    match self.peek() {
                        Some(b',') => self.i += 1,
                        Some(b']') => {
                            self.i += 1;
                            return Ok(Json::Arr(items));
                        }
                        None => return Err(self.err("unexpected end of input")),
                        _ => return Err(self.err("expected ',' or ']'")),
                    }
                }
            }
            Some(b'"') => Ok(Json::Str(self.string()?)),
            Some(b't') if self.eat("true") => Ok(Json::Bool(true)),
            Some(b'f') if self.eat("false") => Ok(Json::Bool(false)),
            Some(b'n') if self.eat("null") => Ok(Json::Null),
            Some(b'N') if self.eat("NaN") => Ok(Json::Num("NaN")),
            Some(b'I') if self.eat("Infinity") => Ok(Json::Num("inf")),
            Some(b'-') if self.b[self.i..].starts_with(b"-Infinity") => {
                self.i += 9;
                Ok(Json::Num("-inf"))
            }
            Some(c) if c == b'-' || c.is_ascii_digit() => self.number(),
            Some(_) => Err(self.err("unexpected character")),
        }
    }

    /// -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
    fn number(&mut self) -> Result<Json<'a>> {
        let start = self.i;
        let digits = |p: &mut Self| {
            let s = p.i;
            while p.peek().is_some_and(|c| c.is_ascii_digit()) {
                p.i += 1;
            }
            p.i - s
        };
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        if digits(self) == 0 {
            return Err(self.err("malformed number"));
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if digits(self) == 0 {
                return Err(self.err("malformed number"));
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if digits(self) == 0 {
                return Err(self.err("malformed number"));
            }
        }
        // Only ASCII was consumed, so these are char boundaries.
        self.s
            .get(start..self.i)
            .map(Json::Num)
            .ok_or_else(|| self.err("malformed number"))
    }

    fn hex4(&mut self) -> Result<u32> {
        let h = self
            .s
            .get(self.i..self.i + 4)
            .and_then(|h| u32::from_str_radix(h, 16).ok())
            .ok_or_else(|| self.err("bad \\u escape"))?;
        self.i += 4;
        Ok(h)
    }

    fn string(&mut self) -> Result<String> {
        self.i += 1; // opening quote
        let mut out = String::new();
        loop {
            let start = self.i;
            while self
                .peek()
                .is_some_and(|c| c != b'"' && c != b'\\' && c >= 0x20)
            {
                self.i += 1;
            }
            // Stopped at an ASCII byte (or the end), so this is a char boundary.
            out.push_str(
                self.s
                    .get(start..self.i)
                    .ok_or_else(|| self.err("bad string"))?,
            );
            match self.peek() {
                None => return Err(self.err("unterminated string")),
                Some(b'"') => {
                    self.i += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.i += 1;
                    let c = self.peek().ok_or_else(|| self.err("unterminated string"))?;
                    self.i += 1;
                    match c {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => {
                            let hi = self.hex4()?;
                            let code = if (0xD800..0xDC00).contains(&hi) {
                                if !self.eat("\\u") {
                                    return Err(self.err("lone surrogate"));
                                }
                                let lo = self.hex4()?;
                                if !(0xDC00..0xE000).contains(&lo) {
                                    return Err(self.err("lone surrogate"));
                                }
                                0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                            } else {
                                hi
                            };
                            out.push(
                                char::from_u32(code).ok_or_else(|| self.err("bad \\u escape"))?,
                            );
                        }
                        _ => return Err(self.err("bad escape")),
                    }
                }
                Some(_) => return Err(self.err("control character in string")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_values() {
        let v =
            parse(r#" {"a": [1, -2.5e3, "5E-1", true, null], "b\u00e9\n": {}, "c": []} "#).unwrap();
        let a = v.get("a").unwrap().as_array().unwrap();
        assert_eq!(a[0].as_i64(), Some(1));
        assert_eq!(a[1].as_f64(), Some(-2500.0));
        assert_eq!(a[2].as_f32(), Some(0.5));
        assert_eq!(a[3], Json::Bool(true));
        assert_eq!(a[4], Json::Null);
        assert!(v.get("bé\n").is_some());
        assert_eq!(parse("NaN").unwrap().as_f64().map(f64::is_nan), Some(true));
        assert_eq!(
            parse("-Infinity").unwrap().as_f64(),
            Some(f64::NEG_INFINITY)
        );
        assert_eq!(parse(r#""\ud83d\ude00""#).unwrap(), Json::Str("😀".into()));
    }

    #[test]
    fn f32_is_parsed_directly() {
        // A decimal halfway-ish case: direct parse must equal Rust's correctly rounded f32.
        let t = "1.00000005960464477539062500001";
        assert_eq!(parse(t).unwrap().as_f32(), t.parse::<f32>().ok());
    }

    #[test]
    fn refuses_bad_json() {
        for bad in [
            "",
            "{",
            r#"{"a":1"#,
            r#"{"a" 1}"#,
            "[1,]",
            "01x",
            "1.",
            "-",
            r#""abc"#,
            r#""\x""#,
            r#""\ud800""#,
            "[1] 2",
            "tru",
        ] {
            assert!(
                matches!(parse(bad), Err(FraudError::Malformed(_))),
                "{bad:?} should be refused"
            );
        }
        let deep = "[".repeat(MAX_DEPTH + 2) + &"]".repeat(MAX_DEPTH + 2);
        assert!(matches!(parse(&deep), Err(FraudError::Malformed(_))));
    }
}
