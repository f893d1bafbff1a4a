//! The messages accounts get, each queued in the transaction that causes it: the one place that
//! makes tokens into links (`ECOSIRE_PUBLIC_URL` + a dashboard path) and picks the template.

use super::tokens::{self, Purpose};
use crate::db::Tx;
use crate::error::Result;
use crate::mail::templates::{Context, Kind, LicenseLine, render};
use crate::state::AppState;

/// The dashboard pages the links open (each posts the token to the API).
pub const VERIFY_PATH: &str = "/account/verify-email";
pub const SET_PASSWORD_PATH: &str = "/account/set-password";
pub const RESET_PATH: &str = "/account/reset-password";

fn greeting(name: &str) -> String {
    let n = name.trim();
    if n.is_empty() {
        "there".into()
    } else {
        n.into()
    }
}

fn link(state: &AppState, path: &str, token: &str) -> String {
    format!("{}{path}?token={token}", state.config.public_base())
}

async fn queue(
    state: &AppState,
    tx: &mut Tx,
    kind: Kind,
    user_id: &str,
    to: &str,
    c: &Context,
) -> Result<()> {
    let message = render(kind, to, c);
    crate::mail::queue(tx, &state.keys.data, kind.as_str(), Some(user_id), &message).await
}

/// A message whose link carries a new token of `purpose` for `user_id` at `email`.
#[allow(clippy::too_many_arguments)]
async fn link_message(
    state: &AppState,
    tx: &mut Tx,
    kind: Kind,
    purpose: Purpose,
    path: &str,
    user_id: &str,
    email: &str,
    name: &str,
) -> Result<()> {
    let token = tokens::issue(tx, user_id, email, purpose).await?;
    let c = Context {
        name: greeting(name),
        site: state.config.public_base(),
        link: link(state, path, &token),
        valid_for: purpose.lifetime_words().into(),
        ..Default::default()
    };
    queue(state, tx, kind, user_id, email, &c).await
}

/// A link that confirms `email`, the address of `user_id`.
pub async fn verification(
    state: &AppState,
    tx: &mut Tx,
    user_id: &str,
    email: &str,
    name: &str,
) -> Result<()> {
    link_message(
        state,
        tx,
        Kind::Verify,
        Purpose::Verify,
        VERIFY_PATH,
        user_id,
        email,
        name,
    )
    .await
}

/// A password reset link.
pub async fn password_reset(
    state: &AppState,
    tx: &mut Tx,
    user_id: &str,
    email: &str,
    name: &str,
) -> Result<()> {
    link_message(
        state,
        tx,
        Kind::Reset,
        Purpose::Reset,
        RESET_PATH,
        user_id,
        email,
        name,
    )
    .await
}

/// A warning to the owner that the password changed.
pub async fn password_changed(
    state: &AppState,
    tx: &mut Tx,
    user_id: &str,
    email: &str,
    name: &str,
) -> Result<()> {
    let c = Context {
        name: greeting(name),
        site: state.config.public_base(),
        link: format!("{}{RESET_PATH}", state.config.public_base()),
        ..Default::default()
    };
    queue(state, tx, Kind::PasswordChanged, user_id, email, &c).await
}

/// A license just granted, for the message that tells its holder.
#[derive(Debug, Clone)]
pub struct Granted {
    pub product: String,
    pub key: String,
}

/// Tells `email` about licenses just granted to it (an admin's create by email, a checkout), in
/// `tx`: one message with every key. An account the server created without a password (nobody
/// has used it yet) is invited in the same message with a set-password link, whose use also
/// verifies the address. Nothing is sent to a disabled or erased account.
pub async fn licenses_granted(
    state: &AppState,
    tx: &mut Tx,
    email: &str,
    granted: &[Granted],
) -> Result<()> {
    if granted.is_empty() {
        return Ok(());
    }
    let user: Option<(String, String, Option<String>, i64)> =
        sqlx::query_as("SELECT id, name, password_hash, disabled FROM users WHERE email = $1")
            .bind(email)
            .fetch_optional(&mut **tx)
            .await?;
    let Some((user_id, name, password_hash, disabled)) = user else {
        return Ok(());
    };
    if disabled != 0 {
        return Ok(());
    }
    let invite = password_hash.is_none();
    let link = if invite {
        let token = tokens::issue(tx, &user_id, email, Purpose::Invite).await?;
        link(state, SET_PASSWORD_PATH, &token)
    } else {
        String::new()
    };
    let c = Context {
        name: greeting(&name),
        site: state.config.public_base(),
        link,
        valid_for: Purpose::Invite.lifetime_words().into(),
        licenses: granted
            .iter()
            .map(|g| LicenseLine {
                product: g.product.clone(),
                key: g.key.clone(),
            })
            .collect(),
        invite,
    };
    queue(state, tx, Kind::Licenses, &user_id, email, &c).await
}
