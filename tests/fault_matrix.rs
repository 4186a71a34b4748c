//! The lifecycle fault matrix, end to end: the real host and whatsapp-rust
//! client against the mock WhatsApp server, one case per row of the
//! close-reason table (README, "Connection lifecycle"; injected while `open`
//! and while pairing), the logout paths, a flapping server, and a host
//! restart.
//!
//! Its own `main` (no libtest): it prints one line per case,
//! `case … expected … got … ok|FAILED`, then `N passed, N failed`, and
//! exits non-zero if any case failed. `cargo test --test fault_matrix`
//! runs it; words after `--` keep only the cases whose name contains one.
//!
//! A case's `got` is built from what was observed, not from what the
//! machine said it would do: the state after the fault; the reason and the
//! row as read back from the SQLite file when that state was shown; the
//! timing class as measured from when the next dial reached the mock
//! (`measure::timing`); the hooks the script recorded; what happened next;
//! whether the keys survived. `expected` is written from the table, in the
//! same words. Faults are injected once the scripts are loaded (a close
//! before that reaches no `on_close`).

#[path = "fault_matrix/measure.rs"]
mod measure;
#[path = "fault_matrix/scenarios.rs"]
mod scenarios;
mod support;

use std::future::Future;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use measure::{DialLog, dials, quiet_dials, timing};
use moonwire::host::HostSettings;
use moonwire::lifecycle::{LogoutBy, Settings, State};
use scenarios::{
    flapping, logout_silent_server, logout_socket_killed, logout_twice, logout_while_connecting,
    logout_while_open, restart_uses_ik,
};
use support::rig::{DbRow, INSTANCE, Rig, WAIT, fast_settings, pairing_code};
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
const CASE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long "stays" watches for an attempt that should not come.
const QUIET: Duration = Duration::from_millis(400);

/// Backoff long enough to measure: a first failure waits up to 200 ms, a
/// rate limit 400–800 ms, so a dial that ignores its timer shows as early.
fn matrix_settings() -> HostSettings {
    HostSettings {
        reconnect: Settings {
            base_ms: 200,
            cap_ms: 2_000,
            ..Settings::default()
        },
        ..fast_settings()
    }
}

/// `row=` and the reason, from the file.
fn file_row(row: &Option<DbRow>) -> (String, String) {
    match row {
        Some(r) => (r.connection_status.clone(), r.reason()),
        None => ("unreadable".into(), "unreadable".into()),
    }
}

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
        "reconnecting transport_error/- backoff then=pairing",
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
        // At most 6 dials a minute, 2 of them the pairing's: 4 more, then
        // the bound holds the next one back until the minute is over.
        "dials=4 after 2 pairing dials bound=held delays=grew final_wait>=30s",
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
    let server = Arc::new(MockServer::start().await);
    let rig = Rig::start_with(&server, matrix_settings());
    let start = reach(&rig, &server, from).await?;
    // Before the scripts load, a close reaches no on_close (this made
    // `pairing × xmlstreamend` and `pairing × tcp drop` flake with hooks=[]).
    rig.scripts_loaded().await;
    let dials = DialLog::watch(&server);
    // The hooks of getting here (the 515 after pairing) may still be
    // running: count them once they are done.
    let calls_before = rig.settled_hook_calls(0).await.len();
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
    let (row, reason) = file_row(&rig.states.db_row(i));
    // Whatever the fault left behind is lifted: what follows is the host's
    // own doing.
    server.go_silent(false);
    let timing = timing(&rig, &dials, i, &matrix_settings().reconnect, QUIET).await;
    let then = match (&fault, timing.as_str()) {
        (_, "never") => {
            // timing() watched QUIET for a dial; nothing else moved either?
            if rig.states.len() == i + 1 && dials.count_after(rig.states.time(i)) == 0 {
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
    let hooks = close_hooks(&rig.settled_hook_calls(calls_before).await);
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
        "{} {reason} {timing} row={row} hooks=[{hooks}] then={then} keys={keys}",
        state_word(&next),
    );
    rig.stop().await;
    Ok(got)
}

/// The server takes the handshake, then says nothing: no `<success>`, no
/// pairing refs. The attempt must not sit in `connecting`.
async fn login_never_answered() -> Result<String, String> {
    let server = Arc::new(MockServer::start().await);
    let rig = Rig::start_with(&server, matrix_settings());
    let open = rig.pair(&server).await;
    let dials = DialLog::watch(&server);
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
    let (row, reason) = file_row(&rig.states.db_row(i));
    let timing = timing(&rig, &dials, i, &matrix_settings().reconnect, QUIET).await;
    let (_, back) = rig
        .states
        .wait_for_within(WAIT, i + 1, "open again", |s| {
            matches!(s, State::Open { .. })
        })
        .await?;
    let got = format!(
        "{} {reason} {timing} row={row} then={}",
        state_word(&next),
        state_word(&back),
    );
    rig.stop().await;
    Ok(got)
}

async fn dial_refused_while_pairing() -> Result<String, String> {
    let server = Arc::new(MockServer::start().await);
    server.refuse_connections(true);
    let dials = DialLog::watch(&server);
    let rig = Rig::start_with(&server, matrix_settings());
    let (i, next) = rig
        .states
        .wait_for_within(WAIT, 0, "a refused dial", |s| {
            matches!(
                s,
                State::Reconnecting { .. } | State::Closed { .. } | State::Open { .. }
            )
        })
        .await?;
    let (_, reason) = file_row(&rig.states.db_row(i));
    // The next dial, refused too, is what the timing is measured to.
    let timing = timing(&rig, &dials, i, &matrix_settings().reconnect, QUIET).await;
    server.refuse_connections(false);
    let (_, s) = rig
        .states
        .wait_for_within(WAIT, i + 1, "pairing", |s| {
            matches!(s, State::Pairing { .. } | State::Open { .. })
        })
        .await?;
    let got = format!(
        "{} {reason} {timing} then={}",
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
                format!("connecting {}", file_row(&rig.states.db_row(k)).1)
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
