//! Tamper evidence. Each audit row carries the SHA-256 of its canonical content; blocks
//! seal rows into a hash chain by ranges of transaction ids: a block covers every row whose
//! transaction id is in `[xid_lo, xid_hi)` (within one cluster: see `Record::cluster_id`), where `xid_hi` was the oldest transaction still
//! running when the block was sealed, so no row can join a sealed range later. Writers
//! never wait for the chain: they only insert rows; one sealer at a time (an advisory lock
//! taken by sealers only) appends blocks.

use sha2::{Digest, Sha256};

/// One audit row's content as it is hashed (the table oid is left out: it changes with a
/// dump and restore, the qualified name does not).
#[derive(Debug, Clone, Default)]
pub struct Record {
    /// The database cluster's system identifier: transaction ids are only comparable within
    /// one cluster (a restore into another starts a new era of the chain).
    pub cluster_id: i64,
    /// Microseconds since 1970-01-01 UTC.
    pub event_time_us: i64,
    pub xid: u64,
    pub statement_seq: i32,
    pub row_seq: i32,
    pub operation: String,
    pub table_name: String,
    pub primary_key: Option<String>,
    pub old_values: Option<String>,
    pub new_values: Option<String>,
    pub session_user: String,
    pub current_user: String,
    pub role_class: String,
    pub client_addr: Option<String>,
    pub client_port: Option<i32>,
    pub application_name: Option<String>,
    pub backend_pid: i32,
    pub statement: Option<String>,
}

fn field(h: &mut Sha256, v: Option<&[u8]>) {
    match v {
        None => h.update([0u8]),
        Some(b) => {
            h.update([1u8]);
            h.update((b.len() as u64).to_be_bytes());
            h.update(b);
        }
    }
}

impl Record {
    /// SHA-256 over every field, each length-prefixed (or marked NULL), in a fixed order.
    pub fn hash(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"pg_platform audit row v1");
        field(&mut h, Some(&self.cluster_id.to_be_bytes()));
        field(&mut h, Some(&self.event_time_us.to_be_bytes()));
        field(&mut h, Some(&self.xid.to_be_bytes()));
        field(&mut h, Some(&self.statement_seq.to_be_bytes()));
        field(&mut h, Some(&self.row_seq.to_be_bytes()));
        for s in [
            Some(&self.operation),
            Some(&self.table_name),
            self.primary_key.as_ref(),
            self.old_values.as_ref(),
            self.new_values.as_ref(),
            Some(&self.session_user),
            Some(&self.current_user),
            Some(&self.role_class),
            self.client_addr.as_ref(),
        ] {
            field(&mut h, s.map(|s| s.as_bytes()));
        }
        field(
            &mut h,
            self.client_port
                .map(|p| p.to_be_bytes())
                .as_ref()
                .map(|b| &b[..]),
        );
        field(&mut h, self.application_name.as_ref().map(|s| s.as_bytes()));
        field(&mut h, Some(&self.backend_pid.to_be_bytes()));
        field(&mut h, self.statement.as_ref().map(|s| s.as_bytes()));
        h.finalize().into()
    }
}

/// A sealed block as it is hashed: its number, transaction range, time range, rows and
/// the previous block.
pub struct Block<'a> {
    pub block_no: i64,
    pub cluster_id: i64,
    pub xid_lo: u64,
    pub xid_hi: u64,
    pub row_count: i64,
    pub rows_hash: &'a [u8],
    pub prev_hash: &'a [u8],
    /// The log partition's bounds in Unix microseconds (None: unbounded). Both None for
    /// blocks sealed before the log was partitioned, which keep their version 1 hash.
    pub time_lo: Option<i64>,
    pub time_hi: Option<i64>,
}

impl Block<'_> {
    pub fn hash(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        let v2 = self.time_lo.is_some() || self.time_hi.is_some();
        h.update(if v2 {
            &b"pg_platform audit block v2"[..]
        } else {
            &b"pg_platform audit block v1"[..]
        });
        h.update(self.block_no.to_be_bytes());
        h.update(self.cluster_id.to_be_bytes());
        h.update(self.xid_lo.to_be_bytes());
        h.update(self.xid_hi.to_be_bytes());
        h.update(self.row_count.to_be_bytes());
        field(&mut h, Some(self.rows_hash));
        field(&mut h, Some(self.prev_hash));
        if v2 {
            // The time range is covered: moving a block's range would otherwise let its
            // rows pass for expired.
            for t in [self.time_lo, self.time_hi] {
                field(&mut h, t.map(|t| t.to_be_bytes()).as_ref().map(|b| &b[..]));
            }
        }
        h.finalize().into()
    }
}

/// The hash of a block's rows: SHA-256 over their row hashes in (xid, statement, row) order.
#[derive(Default)]
pub struct RowsHash(Sha256, i64);

impl RowsHash {
    pub fn add(&mut self, row_hash: &[u8]) {
        self.0.update(row_hash);
        self.1 += 1;
    }
    pub fn finish(self) -> ([u8; 32], i64) {
        (self.0.finalize().into(), self.1)
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn every_field_changes_the_row_hash_and_none_differs_from_empty() {
        let base = Record {
            operation: "INSERT".into(),
            table_name: "public.t".into(),
            new_values: Some("{\"a\":1}".into()),
            ..Record::default()
        };
        let h = base.hash();
        let mut r = base.clone();
        r.new_values = Some(String::new());
        assert_ne!(r.hash(), h);
        r.new_values = None;
        assert_ne!(r.hash(), h);
        let mut r = base.clone();
        r.row_seq = 2;
        assert_ne!(r.hash(), h);
        // Moving bytes between adjacent fields changes the hash (length prefixes).
        let mut a = base.clone();
        a.session_user = "ab".into();
        a.current_user = "c".into();
        let mut b = base.clone();
        b.session_user = "a".into();
        b.current_user = "bc".into();
        assert_ne!(a.hash(), b.hash());
    }

    #[test]
    fn block_hash_covers_the_previous_block_and_the_time_range() {
        let block = |prev: &'static [u8], lo: Option<i64>, hi: Option<i64>| {
            Block {
                block_no: 1,
                cluster_id: 7,
                xid_lo: 0,
                xid_hi: 10,
                row_count: 3,
                rows_hash: &[1; 32],
                prev_hash: prev,
                time_lo: lo,
                time_hi: hi,
            }
            .hash()
        };
        let a = block(&[0; 32], None, None);
        assert_ne!(a, block(&[9; 32], None, None));
        let b = block(&[0; 32], Some(0), Some(100));
        assert_ne!(a, b);
        assert_ne!(b, block(&[0; 32], Some(0), Some(99)));
        assert_ne!(b, block(&[0; 32], None, Some(100)));
        assert_ne!(
            block(&[0; 32], None, Some(100)),
            block(&[0; 32], Some(100), None)
        );
    }
}
