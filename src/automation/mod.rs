//! Automation below the Lua binding: outbound HTTP, signature helpers, and
//! (in later commits) cron schedules and inbound script routes. Plain Rust,
//! no Lua: the engine binds each piece in a few lines.

pub mod cron;
pub mod crypto;
pub mod http;
pub mod net;
pub mod routes;
