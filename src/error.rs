//! One place where the modules' error types become PostgreSQL ERRORs.
//!
//! Each capability defines its own error enum (with `thiserror`) and implements
//! [`SqlError`] for it: the message names the object, the SQLSTATE fits the failure and the
//! hint says how to fix it. Nothing else in the crate calls `ereport` for user errors.

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::PgSqlErrorCode;

/// An error that knows how PostgreSQL should report it.
pub trait SqlError: std::fmt::Display {
    fn sqlstate(&self) -> PgSqlErrorCode;
    fn hint(&self) -> Option<String> {
        None
    }
}

/// Raise `err` as a PostgreSQL ERROR; the current transaction (or subtransaction) aborts.
pub fn raise<E: SqlError>(err: E) -> ! {
    let message = crate::sql::message_text(err.to_string());
    let mut report = ErrorReport::new(err.sqlstate(), message, "pg_platform");
    if let Some(hint) = err.hint() {
        report = report.set_hint(crate::sql::message_text(hint));
    }
    report.report(PgLogLevel::ERROR);
    unreachable!("ereport(ERROR) returned")
}

/// `result.or_raise()` turns a module error into a PostgreSQL ERROR.
pub trait OrRaise<T> {
    fn or_raise(self) -> T;
}

impl<T, E: SqlError> OrRaise<T> for Result<T, E> {
    fn or_raise(self) -> T {
        match self {
            Ok(v) => v,
            Err(e) => raise(e),
        }
    }
}

/// Failures of the SPI layer itself (not SQL errors, which PostgreSQL raises directly).
#[derive(Debug, thiserror::Error)]
#[error("pg_platform internal SPI failure: {0}")]
pub struct SpiFailure(#[from] pub pgrx::spi::SpiError);

impl SqlError for SpiFailure {
    fn sqlstate(&self) -> PgSqlErrorCode {
        PgSqlErrorCode::ERRCODE_INTERNAL_ERROR
    }
}
