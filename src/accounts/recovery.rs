//! Account tools for the command line (`ecosire users …`), working on the database without a
//! running server: the documented way back in after a lost admin password. A running server sees
//! the change at once (sessions live in the database).

use super::users::{EmailTrust, USER_COLUMNS as COLUMNS, User, UserRow, insert_with_trust};
use crate::auth::Role;
use crate::db::Db;
use crate::timestamp::now_ms;

/// Every user, oldest first.
pub async fn list(db: &Db) -> anyhow::Result<Vec<User>> {
    let sql = format!("SELECT {COLUMNS} FROM users ORDER BY created_at, id");
    let rows: Vec<UserRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .fetch_all(&db.pool)
        .await?;
    Ok(rows.into_iter().map(|r| r.user).collect())
}

fn check_password(password: &str) -> anyhow::Result<()> {
    let n = password.chars().count();
    anyhow::ensure!(
        (8..=1024).contains(&n),
        "the password must be 8 to 1024 characters"
    );
    Ok(())
}

fn normalized(email: &str) -> anyhow::Result<String> {
    crate::http::checks::normalize_email(email)
        .ok_or_else(|| anyhow::anyhow!("{email:?} is not a valid email address"))
}

/// Sets the password of `email`'s account and ends its sessions and password links.
pub async fn set_password(db: &Db, email: &str, password: String) -> anyhow::Result<User> {
    check_password(&password)?;
    let email = normalized(email)?;
    let hash = super::passwords::hash(password).await?;
    let mut tx = db.begin().await?;
    let id: Option<String> = sqlx::query_scalar("SELECT id FROM users WHERE email = $1")
        .bind(&email)
        .fetch_optional(&mut *tx)
        .await?;
    let Some(id) = id else {
        anyhow::bail!("no user has the email {email} (ecosire users list shows them)");
    };
    super::users::replace_password(&mut tx, &id, &hash, None)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    tx.commit().await?;
    user(db, &id).await
}

async fn user(db: &Db, id: &str) -> anyhow::Result<User> {
    let sql = format!("SELECT {COLUMNS} FROM users WHERE id = $1");
    let row: UserRow = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_one(&db.pool)
        .await?;
    Ok(row.user)
}

/// Makes `email` an active admin with this password: a new account (its address counts as
/// verified: the operator vouches for it), or an existing one promoted, re-enabled and given the
/// password, its old sessions ended. Answers the user and whether it was created.
pub async fn create_admin(db: &Db, email: &str, password: String) -> anyhow::Result<(User, bool)> {
    check_password(&password)?;
    let email = normalized(email)?;
    let hash = super::passwords::hash(password).await?;
    let mut tx = db.begin().await?;
    let existing: Option<String> = sqlx::query_scalar("SELECT id FROM users WHERE email = $1")
        .bind(&email)
        .fetch_optional(&mut *tx)
        .await?;
    let (id, created) = match existing {
        Some(id) => {
            sqlx::query(
                "UPDATE users SET role = 'admin', disabled = 0, updated_at = $2 WHERE id = $1",
            )
            .bind(&id)
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
            super::users::replace_password(&mut tx, &id, &hash, None)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            (id, false)
        }
        None => {
            let name = "Administrator";
            let row = insert_with_trust(
                &mut tx,
                &email,
                name,
                Some(&hash),
                Role::Admin,
                EmailTrust::Server,
            )
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .ok_or_else(|| anyhow::anyhow!("{email} was taken at the same moment; try again"))?;
            sqlx::query("UPDATE users SET email_verified_at = $2 WHERE id = $1")
                .bind(&row.user.id)
                .bind(now_ms())
                .execute(&mut *tx)
                .await?;
            (row.user.id, true)
        }
    };
    tx.commit().await?;
    Ok((user(db, &id).await?, created))
}
