//! The lifecycle fault matrix, end to end: the real host and whatsapp-rust
//! client against the mock WhatsApp server, one case per row of the close-reason
//! table (injected while `open` and while pairing), the logout paths, a
//! flapping server, and a host restart.
//!
//! Its own `main` (no libtest): it prints one line per case,
//! `case … expected … got … ok|FAILED`, then `N passed, N failed`, and
//! exits non-zero if any case failed. `cargo test --test fault_matrix`
//! runs it; words after `--` keep only the cases whose name contains one.
//!
//! A case's `got` is built from what was observed (the state after the
//! fault, the reason and row persisted with it, the hooks the script saw,
//! what happened next, whether the keys survived); `expected` is written
//! from the table, in the same words.

mod support;

use std::future::Future;
use std::pin::Pin;
use std::process::ExitCode;
use std::time::Duration;

use futures_util::StreamExt;
use moonwire::host::HostSettings;
use moonwire::lifecycle::{LogoutBy, Settings, State, StateName};
use support::rig::{INSTANCE, Rig, WAIT, fast_settings, pairing_code};
use support::{Failure, MockServer};

type Run = Pin<Box<dyn Future<Output = Result<String, String>> + Send>>;

struct Case {
    name: String,
    expected: String,
    run: Box<dyn FnOnce() -> Run + Send>,
}

fn case<F>(name: impl Into<String>, expected: impl Into<String>, run: F) -> Case
where
    F: Future<Output = Result<String, String>> + Send + 'static,
{
    Case {
        name: name.into(),
        expected: expected.into(),
        run: Box::new(move || Box::pin(run)),
    }
}

/// How long one case may take before it counts as failed.
const CASE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long "stays" watches for an attempt that should not come.
const QUIET: Duration = Duration::from_millis(400);

fn main() -> ExitCode {
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let cases: Vec<Case> = cases()
        .into_iter()
        .filter(|c| filters.is_empty() || filters.iter().any(|f| c.name.contains(f.as_str())))
        .collect();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fault matrix: no runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let width = cases.iter().map(|c| c.name.len()).max().unwrap_or(0);
    let (passed, failed) = runtime.block_on(async {
        let mut passed = 0usize;
        let mut failed = 0usize;
        // A few at a time: each case is a server, a host, a client and a Lua
        // engine, and the machine has two cores.
        let mut results = futures_util::stream::iter(cases.into_iter().map(|c| async move {
            let handle = tokio::spawn(async move {
                match tokio::time::timeout(CASE_TIMEOUT, (c.run)()).await {
                    Ok(r) => r,
                    Err(_) => Err(format!("timed out after {CASE_TIMEOUT:?}")),
                }
            });
            let got = match handle.await {
                Ok(Ok(got)) => got,
                Ok(Err(e)) => format!("error: {e}"),
                Err(e) => format!("panicked: {}", panic_text(e)),
            };
            (c.name, c.expected, got)
        }))
        .buffered(3);
        while let Some((name, expected, got)) = results.next().await {
            let ok = got == expected;
            if ok {
                passed += 1;
            } else {
                failed += 1;
            }
            println!(
                "case {name:<width$}  expected {expected}  got {got}  {}",
                if ok { "ok" } else { "FAILED" }
            );
        }
        (passed, failed)
    });
    println!("{passed} passed, {failed} failed");
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn panic_text(e: tokio::task::JoinError) -> String {
    match e.try_into_panic() {
        Ok(p) => p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "(no message)".into()),
        Err(e) => e.to_string(),
    }
}

/// Where the instance is when the fault hits.
#[derive(Clone, Copy)]
enum From {
    Open,
    Pairing,
}

#[derive(Clone)]
enum Fault {
    StreamError(u16),
    Conflict,
    Failure(Failure),
    StreamEnd,
    DropTcp,
    /// The server stops answering; only the ping watchdog can tell.
    Silence,
    /// The TCP connection drops and the next dials are refused for a while.
    DropThenRefuse,
}

impl Fault {
    fn label(&self) -> String {
        match self {
            Fault::StreamError(c) => format!("stream:error {c}"),
            Fault::Conflict => "conflict replaced".into(),
            Fault::Failure(f) => match f.expire {
                Some(s) => format!("failure {} expire={s}s", f.reason),
                None => format!("failure {}", f.reason),
            },
            Fault::StreamEnd => "xmlstreamend".into(),
            Fault::DropTcp => "tcp drop".into(),
            Fault::Silence => "silent server".into(),
            Fault::DropThenRefuse => "tcp drop, dials refused".into(),
        }
    }

    /// Answers how many connections it reached.
    fn inject(&self, server: &MockServer) -> usize {
        match self {
            Fault::StreamError(c) => server.close_with_stream_error(*c),
            Fault::Conflict => server.replace_session(),
            Fault::Failure(f) => server.send_failure(f.clone()),
            Fault::StreamEnd => server.end_stream(),
            Fault::DropTcp => server.drop_tcp(),
            Fault::Silence => {
                server.go_silent(true);
                1
            }
            Fault::DropThenRefuse => {
                server.refuse_connections(true);
                server.drop_tcp()
            }
        }
    }
}

/// What a fault row should come to, in the words `got` uses.
struct Expect {
    state: &'static str,
    reason: &'static str,
    timing: &'static str,
    hook: &'static str,
    then: &'static str,
    keys: &'static str,
}

impl Expect {
    fn line(&self) -> String {
        let status = match self.state {
            "connecting" | "reconnecting" => "connecting",
            _ => "close",
        };
        format!(
            "{} {} {} row={status} hooks=[{}] then={} keys={}",
            self.state, self.reason, self.timing, self.hook, self.then, self.keys
        )
    }
}

/// A reconnect with backoff after `reason`, back to where it was.
fn backoff(reason: &'static str, from: From, hook: &'static str) -> Expect {
    Expect {
        state: "reconnecting",
        reason,
        timing: "backoff",
        hook,
        then: back(from),
        keys: "kept",
    }
}

fn back(from: From) -> &'static str {
    match from {
        From::Open => "open",
        From::Pairing => "pairing",
    }
}

fn stays_closed(reason: &'static str, hook: &'static str) -> Expect {
    Expect {
        state: "closed",
        reason,
        timing: "never",
        hook,
        then: "stays",
        keys: "kept",
    }
}

/// `hook` lists both calls: `on_close` is told of every close (its answer
/// ignored here), then `on_logout`.
fn logged_out(reason: &'static str, hook: &'static str) -> Expect {
    Expect {
        state: "logged_out",
        reason,
        timing: "never",
        hook,
        then: "stays",
        keys: "deleted",
    }
}

fn cases() -> Vec<Case> {
    let mut cases = vec![case(
        "pair: qr scan, 515, open",
        "pairing → connecting restart_required/515 → open jid=15551234567@s.whatsapp.net keys=paired",
        pair_by_qr(),
    )];

    for from in [From::Open, From::Pairing] {
        let rows: Vec<(Fault, Expect)> = vec![
            (
                Fault::StreamError(515),
                Expect {
                    state: "connecting",
                    reason: "restart_required/515",
                    timing: "now",
                    // Told, though its answer is ignored (no override).
                    hook: "on_close:restart_required",
                    then: back(from),
                    keys: "kept",
                },
            ),
            (
                Fault::StreamEnd,
                backoff("connection_closed/428", from, "on_close:connection_closed"),
            ),
            (
                Fault::DropTcp,
                backoff("connection_lost/408", from, "on_close:connection_lost"),
            ),
            (
                Fault::StreamError(500),
                backoff("bad_session/500", from, "on_close:bad_session"),
            ),
            (
                Fault::Failure(Failure::reason(500)),
                backoff("bad_session/500", from, "on_close:bad_session"),
            ),
            (
                Fault::StreamError(503),
                backoff(
                    "service_unavailable/503",
                    from,
                    "on_close:service_unavailable",
                ),
            ),
            (
                Fault::Failure(Failure::reason(503)),
                backoff(
                    "service_unavailable/503",
                    from,
                    "on_close:service_unavailable",
                ),
            ),
            (
                Fault::StreamError(429),
                Expect {
                    timing: "long_backoff",
                    ..backoff("rate_limited/429", from, "on_close:rate_limited")
                },
            ),
            (
                Fault::StreamError(440),
                stays_closed("replaced/440", "on_close:replaced"),
            ),
            (
                Fault::Conflict,
                stays_closed("replaced/440", "on_close:replaced"),
            ),
            (
                Fault::StreamError(409),
                stays_closed("replaced/440", "on_close:replaced"),
            ),
            (
                Fault::Failure(Failure {
                    reason: 402,
                    expire: Some(1),
                }),
                Expect {
                    state: "closed",
                    reason: "temp_banned/402",
                    timing: "at_ban_expiry",
                    hook: "on_close:temp_banned",
                    then: back(from),
                    keys: "kept",
                },
            ),
            (
                Fault::Failure(Failure::reason(405)),
                stays_closed("client_outdated/405", "on_close:client_outdated"),
            ),
            (
                Fault::StreamError(401),
                logged_out("logged_out/401", "on_close:logged_out,on_logout:logged_out"),
            ),
            (
                Fault::StreamError(516),
                logged_out("logged_out/401", "on_close:logged_out,on_logout:logged_out"),
            ),
            (
                Fault::Failure(Failure::reason(401)),
                logged_out("logged_out/401", "on_close:logged_out,on_logout:logged_out"),
            ),
            (
                Fault::Failure(Failure::reason(403)),
                logged_out("forbidden/403", "on_close:forbidden,on_logout:forbidden"),
            ),
            (
                Fault::Failure(Failure::reason(406)),
                logged_out(
                    "unknown_logout/406",
                    "on_close:unknown_logout,on_logout:unknown_logout",
                ),
            ),
        ];
        let mut rows = rows;
        rows.push((
            Fault::Silence,
            backoff("connection_lost/408", from, "on_close:connection_lost"),
        ));
        if let From::Open = from {
            rows.push((
                Fault::DropThenRefuse,
                Expect {
                    then: "transport_error,open",
                    ..backoff(
                        "connection_lost/408",
                        from,
                        "on_close:connection_lost,on_close:transport_error",
                    )
                },
            ));
        }
        for (fault, expect) in rows {
            let name = format!(
                "{} × {}",
                match from {
                    From::Open => "open",
                    From::Pairing => "pairing",
                },
                fault.label()
            );
            cases.push(case(name, expect.line(), fault_case(from, fault)));
        }
    }
    cases.push(case(
        "connecting × login never answered",
        "reconnecting connection_lost/408 backoff row=connecting then=open",
        login_never_answered(),
    ));
    cases.push(case(
        "pairing × dial refused",
        "reconnecting transport_error backoff then=pairing",
        dial_refused_while_pairing(),
    ));

    cases.push(case(
        "logout while open",
        "logged_out by=user row=close/logged_out unlink_iqs=1 keys=deleted on_logout=1 reconnects=0",
        logout_while_open(),
    ));
    cases.push(case(
        "logout twice",
        "first=logged_out second=logged_out unlink_iqs=1 on_logout=1 reconnects=0",
        logout_twice(),
    ));
    cases.push(case(
        "logout while the server is silent",
        "logged_out by=user row=close/logged_out unlink_iqs=1 keys=deleted on_logout=1 reconnects=0",
        logout_silent_server(),
    ));
    cases.push(case(
        "logout while connecting",
        "logged_out by=user row=close/logged_out keys=deleted on_logout=1 reconnects=0",
        logout_while_connecting(),
    ));
    cases.push(case(
        "logout, socket killed mid-unlink",
        "logged_out by=user row=close/logged_out unlink_iqs=1 keys=deleted on_logout=1 reconnects=0",
        logout_socket_killed(),
    ));
    cases.push(case(
        "flapping server (drop 100 ms after login)",
        "attempts<=6 bound=held delays=grew final_wait>=30s",
        flapping(),
    ));
    cases.push(case(
        "restart reconnects through IK",
        "open jid=15551234567@s.whatsapp.net ik=1 new_qr=0",
        restart_uses_ik(),
    ));
    cases
}

fn state_word(s: &State) -> &'static str {
    s.name().as_str()
}

/// The first `from`-kind state (open or a QR) and its index.
async fn reach(rig: &Rig, server: &MockServer, from: From) -> Result<usize, String> {
    match from {
        From::Open => Ok(rig.pair(server).await),
        From::Pairing => rig
            .states
            .wait_for_within(WAIT, 0, "pairing", |s| pairing_code(s).is_some())
            .await
            .map(|(i, _)| i),
    }
}

/// Only the close and logout hooks (on_open comes with every reconnect).
fn close_hooks(calls: &[String]) -> String {
    calls
        .iter()
        .filter(|c| c.starts_with("on_close") || c.starts_with("on_logout"))
        .cloned()
        .collect::<Vec<_>>()
        .join(",")
}

async fn fault_case(from: From, fault: Fault) -> Result<String, String> {
    let server = MockServer::start().await;
    let rig = Rig::start(&server);
    let start = reach(&rig, &server, from).await?;
    let calls_before = rig.hook_calls().len();
    if fault.inject(&server) == 0 {
        return Err("the fault reached no connection".into());
    }
    // The first state after the fault (a QR rotation is not one).
    let (i, next) = rig
        .states
        .wait_for_within(WAIT, start + 1, "a state after the fault", |s| {
            !matches!(s, State::Pairing { .. })
        })
        .await?;
    let connections_then = server.connections();
    let row = rig.states.row(i);
    let reason = format!(
        "{}/{}",
        row.last_reason_kind.map(|k| k.as_str()).unwrap_or("-"),
        row.last_reason_code
            .map(|c| c.to_string())
            .unwrap_or("-".into())
    );
    let base = fast_settings().reconnect.base_ms;
    let timing = match &next {
        State::Connecting { .. } => "now",
        // The first failure's plain backoff is at most the base; the long
        // one (rate limits) is at least twice it.
        State::Reconnecting { delay_ms, .. } if *delay_ms > base => "long_backoff",
        State::Reconnecting { .. } => "backoff",
        State::Closed {
            retry_at: Some(_), ..
        } => "at_ban_expiry",
        State::Closed { .. } | State::LoggedOut { .. } => "never",
        _ => "unexpected",
    };
    // Whatever the fault left behind is lifted: what follows is the host's
    // own doing.
    server.go_silent(false);
    let then = match (&fault, timing) {
        (_, "never") => {
            tokio::time::sleep(QUIET).await;
            if server.connections() == connections_then && rig.states.len() == i + 1 {
                "stays".to_string()
            } else {
                let names: Vec<_> = rig.states.since(i + 1).iter().map(state_word).collect();
                format!("moved:{}", names.join(","))
            }
        }
        (Fault::DropThenRefuse, _) => {
            let (j, _) = rig
                .states
                .wait_for_within(WAIT, i + 1, "a refused dial", |s| {
                    matches!(s, State::Reconnecting { reason, .. }
                        if reason.kind.as_str() == "transport_error")
                })
                .await?;
            server.refuse_connections(false);
            let (_, s) = rig
                .states
                .wait_for_within(WAIT, j + 1, "back", |s| {
                    matches!(s, State::Open { .. } | State::Pairing { .. })
                })
                .await?;
            format!("transport_error,{}", state_word(&s))
        }
        _ => {
            let (_, s) = rig
                .states
                .wait_for_within(WAIT, i + 1, "back", |s| {
                    matches!(s, State::Open { .. } | State::Pairing { .. })
                })
                .await?;
            state_word(&s).to_string()
        }
    };
    let hooks = close_hooks(
        &rig.hook_calls_after(calls_before, Duration::from_millis(500))
            .await,
    );
    let keys = if rig
        .app
        .store
        .session_exists(INSTANCE)
        .map_err(|e| e.to_string())?
    {
        "kept"
    } else {
        "deleted"
    };
    let got = format!(
        "{} {reason} {timing} row={} hooks=[{hooks}] then={then} keys={keys}",
        state_word(&next),
        row.connection_status.as_str(),
    );
    rig.stop().await;
    Ok(got)
}

/// The server takes the handshake, then says nothing: no `<success>`, no
/// pairing refs. The attempt must not sit in `connecting`.
async fn login_never_answered() -> Result<String, String> {
    let server = MockServer::start().await;
    let rig = Rig::start(&server);
    let open = rig.pair(&server).await;
    server.go_silent(true);
    server.drop_tcp();
    let (c, _) = rig
        .states
        .wait_for_within(WAIT, open + 1, "connecting", |s| {
            matches!(s, State::Connecting { .. })
        })
        .await?;
    // The first reconnect is the drop's; the one after it is the silence's.
    let (i, next) = rig
        .states
        .wait_for_within(WAIT, c + 1, "the attempt given up", |s| {
            !matches!(s, State::Connecting { .. })
        })
        .await?;
    server.go_silent(false);
    let row = rig.states.row(i);
    let (_, back) = rig
        .states
        .wait_for_within(WAIT, i + 1, "open again", |s| {
            matches!(s, State::Open { .. })
        })
        .await?;
    let got = format!(
        "{} {}/{} {} row={} then={}",
        state_word(&next),
        row.last_reason_kind.map(|k| k.as_str()).unwrap_or("-"),
        row.last_reason_code
            .map(|c| c.to_string())
            .unwrap_or("-".into()),
        match next {
            State::Reconnecting { .. } => "backoff",
            _ => "-",
        },
        row.connection_status.as_str(),
        state_word(&back),
    );
    rig.stop().await;
    Ok(got)
}

async fn dial_refused_while_pairing() -> Result<String, String> {
    let server = MockServer::start().await;
    server.refuse_connections(true);
    let rig = Rig::start(&server);
    let (i, next) = rig
        .states
        .wait_for_within(WAIT, 0, "a refused dial", |s| {
            matches!(
                s,
                State::Reconnecting { .. } | State::Closed { .. } | State::Open { .. }
            )
        })
        .await?;
    let reason = match &next {
        State::Reconnecting { reason, .. } => reason.kind.as_str(),
        _ => "-",
    };
    server.refuse_connections(false);
    let (_, s) = rig
        .states
        .wait_for_within(WAIT, i + 1, "pairing", |s| {
            matches!(s, State::Pairing { .. } | State::Open { .. })
        })
        .await?;
    let got = format!(
        "{} {reason} backoff then={}",
        state_word(&next),
        state_word(&s)
    );
    rig.stop().await;
    Ok(got)
}

async fn pair_by_qr() -> Result<String, String> {
    let server = MockServer::start().await;
    let rig = Rig::start(&server);
    let open = rig.pair(&server).await;
    let seen = rig.states.since(0);
    let mut words = Vec::new();
    for (k, s) in seen.iter().enumerate().take(open + 1) {
        let w = match s {
            State::Connecting { .. } if k > 0 => {
                let row = rig.states.row(k);
                format!(
                    "connecting {}/{}",
                    row.last_reason_kind.map(|k| k.as_str()).unwrap_or("-"),
                    row.last_reason_code
                        .map(|c| c.to_string())
                        .unwrap_or("-".into())
                )
            }
            State::Connecting { .. } => continue, // the first dial
            State::Open { jid } => format!("open jid={}", jid.as_deref().unwrap_or("-")),
            other => state_word(other).to_string(),
        };
        // Rotated codes are one pairing step.
        if words.last() != Some(&w) {
            words.push(w);
        }
    }
    let keys = match rig.stored_device() {
        Some(d) if d["pn"]["user"] == "15551234567" => "paired",
        _ => "unpaired",
    };
    rig.stop().await;
    Ok(format!("{} keys={keys}", words.join(" → ")))
}

fn logout_settings() -> HostSettings {
    HostSettings {
        unlink_timeout: Duration::from_millis(500),
        ..fast_settings()
    }
}

/// What a finished logout left: the state, the row, the unlink IQs the
/// server saw, the keys, the `on_logout` calls, and attempts after it.
async fn after_logout(
    rig: &Rig,
    server: &MockServer,
    row: &moonwire::lifecycle::StatusRow,
    unlink: bool,
) -> String {
    let connections = server.connections();
    tokio::time::sleep(QUIET).await;
    let state = rig.handle.snapshot().state;
    let by = match &state {
        State::LoggedOut { by, .. } => match by {
            LogoutBy::User => "user",
            LogoutBy::Server => "server",
            LogoutBy::Script => "script",
        },
        _ => "-",
    };
    let keys = match rig.app.store.session_exists(INSTANCE) {
        Ok(false) => "deleted",
        Ok(true) => "kept",
        Err(_) => "unreadable",
    };
    let on_logout = rig
        .hook_calls_after(0, Duration::from_millis(500))
        .await
        .iter()
        .filter(|c| c.starts_with("on_logout"))
        .count();
    let unlinks = if unlink {
        format!(" unlink_iqs={}", server.unlinks().len())
    } else {
        String::new()
    };
    format!(
        "{} by={by} row={}/{}{unlinks} keys={keys} on_logout={on_logout} reconnects={}",
        state_word(&state),
        row.connection_status.as_str(),
        row.state.as_str(),
        server.connections() - connections,
    )
}

/// Pairs, lets `prepare` set the server up, logs out while open and
/// reports what the logout left.
async fn logout_when_open(prepare: impl FnOnce(&MockServer)) -> Result<String, String> {
    let server = MockServer::start().await;
    let rig = Rig::start_with(&server, logout_settings());
    rig.pair(&server).await;
    prepare(&server);
    let row = rig.handle.logout(LogoutBy::User).await;
    let got = after_logout(&rig, &server, &row, true).await;
    rig.stop().await;
    Ok(got)
}

async fn logout_while_open() -> Result<String, String> {
    logout_when_open(|_| {}).await
}

async fn logout_twice() -> Result<String, String> {
    let server = MockServer::start().await;
    let rig = Rig::start_with(&server, logout_settings());
    rig.pair(&server).await;
    let first = rig.handle.logout(LogoutBy::User).await;
    let connections = server.connections();
    let second = rig.handle.logout(LogoutBy::User).await;
    tokio::time::sleep(QUIET).await;
    let on_logout = rig
        .hook_calls()
        .iter()
        .filter(|c| c.starts_with("on_logout"))
        .count();
    let got = format!(
        "first={} second={} unlink_iqs={} on_logout={on_logout} reconnects={}",
        first.state.as_str(),
        second.state.as_str(),
        server.unlinks().len(),
        server.connections() - connections,
    );
    rig.stop().await;
    Ok(got)
}

async fn logout_silent_server() -> Result<String, String> {
    logout_when_open(|server| server.go_silent(true)).await
}

async fn logout_while_connecting() -> Result<String, String> {
    let server = MockServer::start().await;
    let rig = Rig::start_with(&server, logout_settings());
    let open = rig.pair(&server).await;
    // The next login gets no `<success>`: the attempt hangs in connecting.
    server.go_silent(true);
    server.drop_tcp();
    rig.states
        .wait_for_within(WAIT, open + 1, "connecting", |s| {
            matches!(s, State::Connecting { .. })
        })
        .await?;
    server
        .wait_until(WAIT, "the silent login's handshake", |s| {
            s.handshakes() >= 3
        })
        .await;
    let row = rig.handle.logout(LogoutBy::User).await;
    let got = after_logout(&rig, &server, &row, false).await;
    rig.stop().await;
    Ok(got)
}

async fn logout_socket_killed() -> Result<String, String> {
    logout_when_open(|server| server.drop_on_unlink(true)).await
}

async fn flapping() -> Result<String, String> {
    const MAX: u32 = 6;
    let server = MockServer::start().await;
    let settings = HostSettings {
        reconnect: Settings {
            base_ms: 20,
            cap_ms: 400,
            max_per_minute: MAX,
            ..Settings::default()
        },
        ..HostSettings::default()
    };
    let rig = Rig::start_with(&server, settings);
    let open = rig.pair(&server).await;
    server.flap(Some(Duration::from_millis(100)));
    server.drop_tcp();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let seen = rig.states.since(0);
    let attempts = seen
        .iter()
        .filter(|s| s.name() == StateName::Connecting)
        .count();
    let delays: Vec<u64> = rig
        .states
        .since(open + 1)
        .iter()
        .filter_map(|s| match s {
            State::Reconnecting { delay_ms, .. } => Some(*delay_ms),
            _ => None,
        })
        .collect();
    let bound = if attempts <= MAX as usize {
        "held"
    } else {
        "broken"
    };
    // Full jitter makes single delays random; what must grow is the
    // ceiling, so compare the early ones with the later ones.
    let grew = match delays.as_slice() {
        [first, .., last] if last > first => "grew",
        _ => "flat",
    };
    let final_wait = match delays.last() {
        Some(d) if *d >= 30_000 => ">=30s".to_string(),
        Some(d) => format!("={d}ms"),
        None => "=none".into(),
    };
    server.flap(None);
    rig.stop().await;
    let attempts = if attempts <= MAX as usize {
        format!("attempts<={MAX}")
    } else {
        format!("attempts={attempts}")
    };
    Ok(format!(
        "{attempts} bound={bound} delays={grew} final_wait{final_wait}"
    ))
}

async fn restart_uses_ik() -> Result<String, String> {
    let server = MockServer::start().await;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let rig = Rig::start_in(&server, dir.path(), fast_settings());
    rig.pair(&server).await;
    rig.stop().await;
    let ik_before = server.ik_handshakes();
    let qr_before = server.qr_codes_sent().len();

    let rig = Rig::start_in(&server, dir.path(), fast_settings());
    let (_, open) = rig
        .states
        .wait_for_within(WAIT, 0, "open after the restart", |s| {
            matches!(s, State::Open { .. } | State::Pairing { .. })
        })
        .await?;
    let jid = match &open {
        State::Open { jid } => jid.clone().unwrap_or("-".into()),
        other => format!("({})", state_word(other)),
    };
    let got = format!(
        "{} jid={jid} ik={} new_qr={}",
        state_word(&open),
        server.ik_handshakes() - ik_before,
        server.qr_codes_sent().len() - qr_before,
    );
    rig.stop().await;
    Ok(got)
}
