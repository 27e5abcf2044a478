//! The crate's SPI helpers: every statement a capability runs goes through here, so a
//! failure of the SPI layer is reported the same way everywhere.
//!
//! Reads use read-only SPI on purpose: pgrx's `Spi::get_one*` helpers run in "update" mode
//! and assign a transaction id, which burns xids (a worker round every minute) and makes
//! PostgreSQL refuse to create a logical slot later in the same transaction. They also
//! error when the query returns no row; [`read`] returns `None` instead.

use crate::error::{OrRaise, SpiFailure};
use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;

/// The first column of the first row of a read-only query, `None` for no row or NULL.
pub fn read<T: FromDatum + IntoDatum>(sql: &str, args: &[DatumWithOid]) -> Option<T> {
    Spi::connect(|c| {
        let table = c.select(sql, Some(1), args)?;
        if table.is_empty() {
            return Ok(None);
        }
        table.first().get_one::<T>()
    })
    .map_err(SpiFailure::from)
    .or_raise()
}

/// Runs a statement that changes something (DDL, DML, GRANT).
pub fn run(sql: &str) {
    Spi::run(sql).map_err(SpiFailure::from).or_raise()
}

/// Runs an INSERT/UPDATE/DELETE and returns the rows it processed.
pub fn modify(sql: &str, args: &[DatumWithOid]) -> i64 {
    Spi::connect_mut(|c| c.update(sql, None, args).map(|t| t.len() as i64))
        .map_err(SpiFailure::from)
        .or_raise()
}
