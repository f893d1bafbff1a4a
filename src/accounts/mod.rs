//! People and their credentials: users, login sessions, passwords.

pub mod api_keys;
pub mod passwords;
pub mod sessions;
pub mod users;

use utoipa_axum::router::OpenApiRouter;

use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    sessions::router()
        .merge(users::router())
        .merge(api_keys::router())
}
