//! moonwire: a personal bot host for WhatsApp.
//!
//! Layout (ARCHITECTURE.md): `lifecycle` is the pure machine, `channel` the protocol
//! clients, `store` the SQLite file, and `host` where they all meet.

pub mod api;
pub mod automation;
pub mod channel;
pub mod config;
pub mod host;
pub mod lifecycle;
pub mod script;
pub mod store;
