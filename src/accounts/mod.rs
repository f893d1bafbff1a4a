//! People and their credentials: users, login sessions, passwords.

/// Secrets in request types (passwords, session ids, tokens) never reach a log through `Debug`:
/// it shows only the named fields.
macro_rules! redacted_debug {
    ($t:ty, $($field:ident),*) => {
        impl std::fmt::Debug for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($t))$(.field(stringify!($field), &self.$field))*.finish_non_exhaustive()
            }
        }
    };
}

pub mod api_keys;
pub mod flows;
pub mod mailings;
pub mod passwords;
pub mod recovery;
pub mod sessions;
pub mod tokens;
pub mod users;

use utoipa_axum::router::OpenApiRouter;

use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    sessions::router()
        .merge(flows::router())
        .merge(users::router())
        .merge(api_keys::router())
}
