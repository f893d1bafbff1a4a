//! The cursor-paginated list query, written once for every list endpoint: the caller's filters,
//! the cursor's `id < $n`, newest first, one row more than the page to learn whether another
//! page follows (in the spirit of crates.io's `controllers/helpers/pagination.rs`).

use sqlx::any::AnyRow;

use super::{Db, Filters};
use crate::http::pagination::{Page, PageRequest};

/// Runs `select` (everything before `WHERE`, e.g. `SELECT … FROM contacts`) with `filters`, one
/// page of `req` ordered by `id_column` descending (ids sort by creation time).
pub async fn page<R>(
    db: &Db,
    select: &str,
    id_column: &'static str,
    mut filters: Filters,
    req: &PageRequest,
    id_of: impl Fn(&R) -> &str,
) -> Result<Page<R>, sqlx::Error>
where
    R: for<'r> sqlx::FromRow<'r, AnyRow> + Send + Unpin,
{
    if let Some(before) = &req.before_id {
        filters.push(id_column, "<", before.clone());
    }
    let sql = format!(
        "{select}{} ORDER BY {id_column} DESC LIMIT {}",
        filters.where_sql(),
        req.limit + 1
    );
    let mut q = sqlx::query_as::<_, R>(sqlx::AssertSqlSafe(sql));
    for a in filters.args {
        q = q.bind(a);
    }
    let rows = q.fetch_all(&db.pool).await?;
    Ok(Page::from_rows(rows, req, id_of))
}
