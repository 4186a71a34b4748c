//! What scripts use to reach the world outside WhatsApp, below the Lua
//! binding: plain Rust with no Lua in it, so the engine binds each piece in
//! a few lines and the rules are tested here once.
//!
//! How the engine is meant to use them:
//!
//! - [`http`] (`bot.http.request/get/post`): build one [`http::HttpClient`]
//!   per process from `[script.http]` ([`http::HttpPolicy::from_config`]),
//!   with the host's `Metrics` as its observer. A call becomes an
//!   [`http::HttpRequest`]; `client.request(instance, req)` is a `Send`
//!   future to await in the handler's coroutine, and its
//!   [`http::HttpError`] text is what `nil, err` carries. The client
//!   enforces the address rules, the timeout, the body limit and the
//!   per-instance slots; call `forget(instance)` when an instance is
//!   removed.
//! - [`crypto`] (`bot.crypto.hmac_sha256`, `bot.crypto.equal`): two pure
//!   functions.
//! - [`cron`] (`bot.cron`): make the default [`cron::Zone`] once from
//!   `[script] timezone` ([`cron::Zone::configured`]); per call, pick the
//!   zone ([`cron::Zone::pick`] with `{tz=}`), parse the spec
//!   ([`cron::Schedule::parse`]; its error becomes the load error with the
//!   script's file:line) and start a [`cron::CronTimer`] with the clock's
//!   now and the instant persisted for this cron (`None` the first time).
//!   Sleep until `next_due()`, call `poll(now)`, run the handler when it
//!   says so, and persist now again at registration and after each run.
//!   A timer is plain data: dropping it with its generation cancels it.
//! - [`routes`] (`bot.route`): collect a load's registrations in a
//!   [`routes::RouteTable`] (a duplicate is the load error, naming both
//!   places); when the load succeeds, [`routes::Routes::replace`] swaps it
//!   in for the instance, and on shutdown or removal
//!   [`routes::Routes::remove`] drops it. Implement
//!   [`routes::RouteDispatch`] to run the handler a [`routes::RouteId`]
//!   names, and hand the `Routes` and the dispatcher to the API with
//!   `ApiState::with_hooks`. A string return is [`routes::HookResponse::text`].
//!
//! [`net`] is the address classification and the `allow` list behind the
//! HTTP client; [`clock`] the wall clock crons run on (a manual one in
//! tests).

pub mod clock;
pub mod cron;
pub mod crypto;
pub mod http;
pub mod net;
pub mod routes;
