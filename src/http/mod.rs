//! HTTP plumbing shared by every module: extractors, access, pagination, request ids.

pub mod accounting;
pub mod auth;
pub mod checks;
pub mod client_ip;
pub mod extract;
pub mod pagination;
pub mod ratelimit;
pub mod request_id;
