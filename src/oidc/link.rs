//! A person at the provider becomes a local account here, and only here (browser sign-in and
//! bearer tokens alike).
//!
//! - A known (issuer, subject) is its linked account, whatever its address is today.
//! - A first sign-in links to the account with the same email only when both sides vouch for the
//!   address: the provider says `email_verified: true` AND the local address is verified. Else,
//!   when the address is taken, nothing is linked and the sign-in is refused (`EmailTaken`):
//!   emails are unique, so a second account cannot be made, and linking on an unproven address
//!   would hand someone else's account to whoever registered that address at the provider.
//! - No account with the address: a customer is created, verified when the provider says so (and
//!   then it receives what was granted to the address, as a verified address does).
//! - With `ECOSIRE_OIDC_ADMIN_GROUP`, the groups claim decides the role at every sign-in and every
//!   token that carries it: in the group, admin; not, customer. The provider wins over the
//!   `LAST_ADMIN` rule: someone removed from the admin group loses admin here even if no other
//!   admin remains (a warning says so; `ecosire users create-admin` is the way back). Keeping
//!   admin rights the provider withdrew would be the worse failure. A token without the claim
//!   changes nothing.

use serde_json::{Map, Value};

use super::Provider;
use crate::accounts::users::{self, EmailTrust, USER_COLUMNS, User};
use crate::auth::Role;
use crate::config::OidcConfig;
use crate::error::Result;
use crate::state::AppState;
use crate::timestamp::now_ms;

/// What the provider says about a person.
#[derive(Debug, Clone)]
pub struct Person {
    pub subject: String,
    /// Normalised; `None` when absent or not an address.
    pub email: Option<String>,
    pub email_verified: bool,
    pub name: Option<String>,
    /// `None` when the token does not carry the groups claim at all.
    pub groups: Option<Vec<String>>,
}

impl Person {
    pub fn from_claims(config: &OidcConfig, subject: &str, claims: &Map<String, Value>) -> Self {
        let text = |name: &str| claims.get(name).and_then(Value::as_str).map(str::to_string);
        Person {
            subject: subject.to_string(),
            email: text("email").and_then(|e| crate::http::checks::normalize_email(&e)),
            // Some providers send the boolean as a string.
            email_verified: matches!(claims.get("email_verified"), Some(Value::Bool(true)))
                || claims.get("email_verified").and_then(Value::as_str) == Some("true"),
            name: text("name").or_else(|| text("preferred_username")),
            groups: claims.get(&config.groups_claim).map(|g| match g {
                Value::Array(list) => list
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect(),
                Value::String(one) => vec![one.clone()],
                _ => vec![],
            }),
        }
    }
}

/// Why a person cannot sign in; each has its message on the sign-in page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The address belongs to an account that cannot be linked (unverified on either side).
    EmailTaken,
    /// No link yet, and the provider shares no address to make or find an account with.
    EmailMissing,
    /// The linked (or matching) account is disabled.
    Disabled,
}

impl Refusal {
    pub fn code(self) -> &'static str {
        match self {
            Refusal::EmailTaken => "email_taken",
            Refusal::EmailMissing => "email_missing",
            Refusal::Disabled => "disabled",
        }
    }
}

/// The role the provider's groups give, if it decides roles and the claim came along.
fn role_from_groups(config: &OidcConfig, person: &Person) -> Option<Role> {
    let group = config.admin_group.as_ref()?;
    let groups = person.groups.as_ref()?;
    Some(if groups.iter().any(|g| g == group) {
        Role::Admin
    } else {
        Role::Customer
    })
}

async fn linked(state: &AppState, issuer: &str, subject: &str) -> Result<Option<User>> {
    let columns = USER_COLUMNS
        .split(", ")
        .map(|c| format!("u.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "SELECT {columns} FROM oidc_identities i JOIN users u ON u.id = i.user_id \
         WHERE i.issuer = $1 AND i.subject = $2"
    );
    let row: Option<users::UserRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(issuer)
        .bind(subject)
        .fetch_optional(&state.db.pool)
        .await?;
    Ok(row.map(|r| r.user))
}

/// The local account of `person`, linked (or created) by the rules above, with its role synced.
pub async fn user_for(
    state: &AppState,
    provider: &Provider,
    person: &Person,
) -> Result<Result<User, Refusal>> {
    let config = &provider.config;
    // Twice at most: a concurrent first sign-in of the same person may link or create first.
    for _ in 0..2 {
        if let Some(user) = linked(state, &config.issuer, &person.subject).await? {
            if user.disabled.0 {
                return Ok(Err(Refusal::Disabled));
            }
            return Ok(Ok(
                sync_role(state, user, role_from_groups(config, person)).await?
            ));
        }
        let Some(email) = &person.email else {
            return Ok(Err(Refusal::EmailMissing));
        };
        let existing = users::find_by_email(state, email).await?.map(|r| r.user);
        if let Some(existing) = &existing {
            if existing.disabled.0 {
                return Ok(Err(Refusal::Disabled));
            }
            if !(person.email_verified && existing.email_verified_at.is_some()) {
                return Ok(Err(Refusal::EmailTaken));
            }
        }
        let mut tx = state.db.begin().await?;
        let mut granted = vec![];
        let user = match existing {
            Some(existing) => existing,
            None => {
                let trust = if person.email_verified {
                    EmailTrust::Server
                } else {
                    EmailTrust::SelfRegistered
                };
                let name = person
                    .name
                    .clone()
                    .filter(|n| !n.trim().is_empty())
                    .unwrap_or_else(|| email.split('@').next().unwrap_or(email).to_string());
                let Some(created) = users::insert_with_trust(
                    &mut tx,
                    email,
                    name.trim(),
                    None,
                    Role::Customer,
                    trust,
                )
                .await?
                else {
                    continue;
                };
                if person.email_verified {
                    granted = users::mark_verified(&mut tx, &created.user.id, email).await?;
                }
                created.user
            }
        };
        let now = now_ms();
        let inserted = sqlx::query(
            "INSERT INTO oidc_identities (issuer, subject, user_id, created_at, last_seen_at) \
             VALUES ($1, $2, $3, $4, $4) ON CONFLICT (issuer, subject) DO NOTHING",
        )
        .bind(&config.issuer)
        .bind(&person.subject)
        .bind(&user.id)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            // Linked meanwhile by a concurrent sign-in: follow that link.
            continue;
        }
        tx.commit().await?;
        for d in &granted {
            state.licenses.changed(&state.db, d).await;
        }
        tracing::info!(user_id = %user.id, issuer = %config.issuer, "OIDC: linked a provider identity to an account");
        let user = users::find_by_id(state, &user.id)
            .await?
            .map_or(user, |r| r.user);
        return Ok(Ok(
            sync_role(state, user, role_from_groups(config, person)).await?
        ));
    }
    Err(anyhow::anyhow!("the account of a provider identity could not be read back").into())
}

/// Sets the role the provider's groups give, when it differs.
async fn sync_role(state: &AppState, mut user: User, role: Option<Role>) -> Result<User> {
    let Some(role) = role.filter(|r| *r != user.role) else {
        return Ok(user);
    };
    sqlx::query("UPDATE users SET role = $2, updated_at = $3 WHERE id = $1")
        .bind(&user.id)
        .bind(role.as_str())
        .bind(now_ms())
        .execute(&state.db.pool)
        .await?;
    tracing::info!(user_id = %user.id, role = role.as_str(), "OIDC: role set from the provider's groups");
    if role == Role::Customer {
        let admins: i64 =
            sqlx::query_scalar("SELECT count(*) FROM users WHERE role = 'admin' AND disabled = 0")
                .fetch_one(&state.db.pool)
                .await?;
        if admins == 0 {
            tracing::warn!(
                user_id = %user.id,
                "OIDC: the provider removed the last active admin from the admin group; no admin remains (ecosire users create-admin makes one)"
            );
        }
    }
    user.role = role;
    Ok(user)
}

/// Notes a browser sign-in on the link.
pub async fn touch(state: &AppState, issuer: &str, subject: &str) -> Result<()> {
    sqlx::query("UPDATE oidc_identities SET last_seen_at = $3 WHERE issuer = $1 AND subject = $2")
        .bind(issuer)
        .bind(subject)
        .bind(now_ms())
        .execute(&state.db.pool)
        .await?;
    Ok(())
}

/// The local user a service account acts as: found by its configured address, or created as a
/// passwordless customer (the operator named the address, so it is trusted) on first use.
pub async fn service_user(state: &AppState, email: &str) -> Result<User> {
    if let Some(u) = users::find_by_email(state, email).await? {
        return Ok(u.user);
    }
    let name = format!("Service account {email}");
    if let Some(u) = users::insert(state, email, &name, None, Role::Customer).await? {
        tracing::info!(user_id = %u.user.id, "OIDC: created the user of a service account");
        return Ok(u.user);
    }
    // Created concurrently.
    users::find_by_email(state, email)
        .await?
        .map(|u| u.user)
        .ok_or_else(|| anyhow::anyhow!("the service account's user could not be read back").into())
}
