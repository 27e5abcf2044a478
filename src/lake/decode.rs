//! Reading the CDC plugin's binary messages (format_version 1, documented in the README).
//! Pure Rust: no PostgreSQL call, so it is tested on its own.

use super::LakeError;

/// A column of a relation message.
#[derive(Debug, Clone, PartialEq)]
pub struct RelColumn {
    pub name: String,
    pub pg_type: String,
    pub arrow: String,
    pub nullable: bool,
    pub key: bool,
}

/// A relation message: the shape of a table as of the changes that follow it.
#[derive(Debug, Clone, PartialEq)]
pub struct Relation {
    pub relid: u32,
    pub schema: String,
    pub table: String,
    pub fingerprint: String,
    pub replica_identity: u8,
    pub columns: Vec<RelColumn>,
    /// Indexes of the replica identity columns (computed once: read for every old tuple).
    keys: Vec<usize>,
}

impl Relation {
    /// Indexes of the replica identity columns, in relation order: the columns of an old
    /// tuple unless the identity is full.
    pub fn key_columns(&self) -> &[usize] {
        &self.keys
    }
}

/// The transaction fields every message head may carry.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Head {
    pub xid: u32,
    pub commit_lsn: u64,
    /// Microseconds since 1970-01-01 UTC.
    pub commit_time: i64,
    /// The change's LSN; in a commit message, the transaction's end LSN.
    pub lsn: u64,
    pub streamed: bool,
}

/// One message, with row changes left undecoded (their values are read straight into
/// column builders by the caller).
#[derive(Debug)]
pub enum Message<'a> {
    Relation(Relation),
    /// Begin and commit: a row carries its own transaction fields, so a batch needs none.
    Transaction,
    /// `I`, `U` or `D`, the relid, and the tuples that follow.
    Change {
        op: u8,
        head: Head,
        relid: u32,
        tuples: Reader<'a>,
    },
    Truncate {
        head: Head,
        relid: u32,
    },
    /// A logical message (`pg_logical_emit_message`): the lake reads its own watermarks.
    Logical {
        head: Head,
        prefix: &'a [u8],
        content: &'a [u8],
    },
    /// Anything a lake does not store (stream control).
    Other,
}

/// A cursor over one message's bytes.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf, pos: 0 }
    }

    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    pub fn pos(&self) -> usize {
        self.pos
    }

    /// The bytes between two positions of this reader.
    pub fn span(&self, from: usize, to: usize) -> &'a [u8] {
        &self.buf[from.min(self.buf.len())..to.min(self.buf.len())]
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8], LakeError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        let Some(end) = end else {
            return Err(LakeError::Decode(format!(
                "message ends at byte {} but {} more were expected",
                self.buf.len(),
                n
            )));
        };
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], LakeError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    pub fn u8(&mut self) -> Result<u8, LakeError> {
        Ok(self.take(1)?[0])
    }
    pub fn u16(&mut self) -> Result<u16, LakeError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    pub fn i16(&mut self) -> Result<i16, LakeError> {
        Ok(i16::from_le_bytes(self.array()?))
    }
    pub fn u32(&mut self) -> Result<u32, LakeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    pub fn i32(&mut self) -> Result<i32, LakeError> {
        Ok(i32::from_le_bytes(self.array()?))
    }
    pub fn u64(&mut self) -> Result<u64, LakeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    pub fn i64(&mut self) -> Result<i64, LakeError> {
        Ok(i64::from_le_bytes(self.array()?))
    }
    pub fn bytes(&mut self) -> Result<&'a [u8], LakeError> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    pub fn str(&mut self) -> Result<&'a str, LakeError> {
        std::str::from_utf8(self.bytes()?)
            .map_err(|_| LakeError::Decode("a string is not UTF-8".into()))
    }
}

fn head(r: &mut Reader) -> Result<Head, LakeError> {
    let flags = r.u8()?;
    let mut h = Head {
        streamed: flags & 8 != 0,
        ..Head::default()
    };
    if flags & 1 != 0 {
        h.xid = r.u32()?;
    }
    if flags & 2 != 0 {
        h.commit_lsn = r.u64()?;
        h.commit_time = r.i64()?;
    }
    if flags & 4 != 0 {
        h.lsn = r.u64()?;
    }
    Ok(h)
}

fn relation(r: &mut Reader) -> Result<Relation, LakeError> {
    let version = r.u8()?;
    if version != 1 {
        return Err(LakeError::Decode(format!(
            "relation message of format_version {version}"
        )));
    }
    let relid = r.u32()?;
    let schema = r.str()?.to_string();
    let table = r.str()?.to_string();
    let fingerprint = r.str()?.to_string();
    let replica_identity = r.u8()?;
    let n = r.u16()? as usize;
    let mut columns = Vec::with_capacity(n);
    for _ in 0..n {
        let name = r.str()?.to_string();
        let pg_type = r.str()?.to_string();
        let arrow = r.str()?.to_string();
        let flags = r.u8()?;
        columns.push(RelColumn {
            name,
            pg_type,
            arrow,
            nullable: flags & 1 != 0,
            key: flags & 2 != 0,
        });
    }
    let keys = (0..columns.len()).filter(|&i| columns[i].key).collect();
    Ok(Relation {
        relid,
        schema,
        table,
        fingerprint,
        replica_identity,
        columns,
        keys,
    })
}

/// Parses one message of the binary stream.
pub fn message(buf: &[u8]) -> Result<Message<'_>, LakeError> {
    let mut r = Reader::new(buf);
    let kind = r.u8()?;
    Ok(match kind {
        b'R' => Message::Relation(relation(&mut r)?),
        b'B' | b'C' | b'K' => {
            head(&mut r)?;
            Message::Transaction
        }
        b'I' | b'U' | b'D' => {
            let head = head(&mut r)?;
            let relid = r.u32()?;
            Message::Change {
                op: kind,
                head,
                relid,
                tuples: r,
            }
        }
        b'T' => {
            let head = head(&mut r)?;
            let relid = r.u32()?;
            Message::Truncate { head, relid }
        }
        b'M' => {
            let head = head(&mut r)?;
            let _transactional = r.u8()?;
            let prefix = r.bytes()?;
            let content = r.bytes()?;
            Message::Logical {
                head,
                prefix,
                content,
            }
        }
        _ => Message::Other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(buf: &mut Vec<u8>, v: &str) {
        buf.extend_from_slice(&(v.len() as u32).to_le_bytes());
        buf.extend_from_slice(v.as_bytes());
    }

    #[test]
    fn relation_and_change_heads_parse() {
        let mut b = vec![b'R', 1];
        b.extend_from_slice(&42u32.to_le_bytes());
        s(&mut b, "public");
        s(&mut b, "t");
        s(&mut b, "00ff");
        b.push(b'd');
        b.extend_from_slice(&1u16.to_le_bytes());
        s(&mut b, "id");
        s(&mut b, "integer");
        s(&mut b, "int32");
        b.push(2);
        let Ok(Message::Relation(rel)) = message(&b) else {
            panic!("not a relation")
        };
        assert_eq!(rel.relid, 42);
        assert_eq!(rel.columns[0].name, "id");
        assert!(rel.columns[0].key && !rel.columns[0].nullable);
        assert_eq!(rel.key_columns(), &[0]);

        let mut c = vec![b'I', 7];
        c.extend_from_slice(&9u32.to_le_bytes());
        c.extend_from_slice(&100u64.to_le_bytes());
        c.extend_from_slice(&5i64.to_le_bytes());
        c.extend_from_slice(&90u64.to_le_bytes());
        c.extend_from_slice(&42u32.to_le_bytes());
        c.push(b'N');
        let Ok(Message::Change {
            op,
            head,
            relid,
            mut tuples,
        }) = message(&c)
        else {
            panic!("not a change")
        };
        assert_eq!((op, relid), (b'I', 42));
        assert_eq!(
            head,
            Head {
                xid: 9,
                commit_lsn: 100,
                commit_time: 5,
                lsn: 90,
                streamed: false
            }
        );
        assert_eq!(tuples.u8().ok(), Some(b'N'));
        assert!(tuples.is_empty());
    }

    #[test]
    fn truncated_messages_are_errors_not_panics() {
        for b in [&b""[..], b"R", b"R\x01\x00", b"I\x07\x01", b"B\x02\x00\x00"] {
            assert!(message(b).is_err(), "{b:?}");
        }
    }
}
