//! HTTP plumbing shared by every module and knowing none: connections and their deadlines, body
//! and query extractors, field checks, pagination, request ids, client IPs, the rate limiter (local, or shared
//! through Redis) and the daily quota (shared through the database).

pub mod checks;
pub mod client_ip;
pub mod extract;
pub mod listener;
pub mod pagination;
pub mod quota;
pub mod ratelimit;
pub mod request_id;
pub mod shared_limits;

/// The `method` of a request as metrics and logs show it: the standard methods by name, anything a client invents as `other`, so a
/// client cannot add series (every label value must come from a fixed set).
pub fn method_label(m: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *m {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}
