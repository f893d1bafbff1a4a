//! Claiming rows that several instances may want at once (the webhook dispatcher's due
//! deliveries): the one place that knows how each backend does it.

use super::{Backend, Db};

impl Db {
    /// `select` (a query choosing rows to claim, used as a subquery of the claiming `UPDATE`)
    /// made safe for concurrent claimers: on PostgreSQL, rows another transaction is claiming are
    /// skipped (`FOR UPDATE SKIP LOCKED`), so instances share the work without waiting on each
    /// other; SQLite has a single writer, so the query stands as it is.
    pub fn claimable(&self, select: &str) -> String {
        match self.backend {
            Backend::Postgres => format!("{select} FOR UPDATE SKIP LOCKED"),
            Backend::Sqlite => select.to_string(),
        }
    }
}
