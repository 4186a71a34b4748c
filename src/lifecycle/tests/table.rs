//! The close-reason table (README, "Connection lifecycle"), written out
//! again on purpose: one row per
//! [`ReasonKind`], fed to the machine in every state. Changing a row in the
//! code without changing it here fails; a new kind without a row does not
//! compile (`row` matches every kind) and one missing from `ReasonKind::ALL`
//! fails `every_kind_is_listed_once`.

use super::*;

/// What a close leads to by default, before any script has a say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    /// Dial again at once (`connecting`, a `StartAttempt`).
    Now,
    /// `reconnecting` after a first failure's plain backoff: `[0, base]`.
    Backoff,
    /// `reconnecting` after the longer one: `[2 base, 4 base]`.
    LongBackoff,
    /// `closed`, no timer.
    Stay,
    /// `closed` until the ban's expiry, then dial.
    Ban,
    /// `logged_out`, the session deleted, `on_logout` by the server.
    LoggedOut,
}

pub(super) struct Row {
    /// The server code that means this kind outside pairing, if any.
    pub code: Option<u16>,
    /// What that code means while pairing, when it differs.
    pub pairing: Option<ReasonKind>,
    /// The code the row carries when the close comes as a kind alone.
    pub conventional: Option<u16>,
    pub outcome: Outcome,
    pub overridable: bool,
    /// Counts towards the backoff counter.
    pub failure: bool,
}

const fn r(
    code: Option<u16>,
    conventional: Option<u16>,
    outcome: Outcome,
    overridable: bool,
    failure: bool,
) -> Row {
    Row {
        code,
        pairing: None,
        conventional,
        outcome,
        overridable,
        failure,
    }
}

pub(super) fn row(kind: ReasonKind) -> Row {
    use Outcome::*;
    use ReasonKind as K;
    match kind {
        K::RestartRequired => r(Some(515), Some(515), Now, false, false),
        K::ConnectionClosed => r(Some(428), Some(428), Backoff, true, true),
        K::ConnectionLost => Row {
            pairing: Some(K::QrTimeout),
            ..r(Some(408), Some(408), Backoff, true, true)
        },
        // Only a 408 while pairing means this; it arrives as the kind too.
        K::QrTimeout => r(None, Some(408), Stay, true, true),
        K::BadSession => r(Some(500), Some(500), Backoff, true, true),
        K::ServiceUnavailable => r(Some(503), Some(503), Backoff, true, true),
        K::RateLimited => r(Some(429), Some(429), LongBackoff, true, true),
        K::Replaced => r(Some(440), Some(440), Stay, true, true),
        K::TempBanned => r(Some(402), Some(402), Ban, true, true),
        K::ClientOutdated => r(Some(405), Some(405), Stay, false, true),
        K::LoggedOut => r(Some(401), Some(401), LoggedOut, false, true),
        K::Forbidden => r(Some(403), Some(403), LoggedOut, false, true),
        K::UnknownLogout => r(Some(406), Some(406), LoggedOut, false, true),
        K::TransportError => r(None, None, Backoff, true, true),
        // A code nobody knows is a plain closed connection: back off, never
        // log out.
        K::Unknown => r(Some(999), None, Backoff, true, true),
        K::Stopped => r(None, None, Stay, false, false),
        K::Interrupted => r(None, None, Backoff, true, true),
    }
}

/// A distinct number per kind; a new kind must get a new arm here.
fn ordinal(kind: ReasonKind) -> usize {
    use ReasonKind as K;
    match kind {
        K::RestartRequired => 0,
        K::ConnectionClosed => 1,
        K::ConnectionLost => 2,
        K::QrTimeout => 3,
        K::BadSession => 4,
        K::ServiceUnavailable => 5,
        K::RateLimited => 6,
        K::Replaced => 7,
        K::TempBanned => 8,
        K::ClientOutdated => 9,
        K::LoggedOut => 10,
        K::Forbidden => 11,
        K::UnknownLogout => 12,
        K::TransportError => 13,
        K::Unknown => 14,
        K::Stopped => 15,
        K::Interrupted => 16,
    }
}
const KINDS: usize = 17;

#[test]
fn every_kind_is_listed_once() {
    let mut seen = [false; KINDS];
    for k in ReasonKind::ALL {
        assert!(!seen[ordinal(k)], "{k} listed twice");
        seen[ordinal(k)] = true;
    }
    assert!(seen.iter().all(|s| *s), "ReasonKind::ALL misses a kind");
    // Every row's code classifies back to its kind.
    for k in ReasonKind::ALL {
        let row = row(k);
        if let Some(code) = row.code {
            assert_eq!(Reason::classify(code, false), k, "{code}");
            assert_eq!(
                Reason::classify(code, true),
                row.pairing.unwrap_or(k),
                "{code} while pairing"
            );
        }
    }
}

/// The ways a close of `kind` reaches the machine: by its code (classified
/// there) and by its kind alone; with what the row must then say.
fn closes(kind: ReasonKind, pairing: bool) -> Vec<(Input, ReasonKind, Option<u16>)> {
    let row = row(kind);
    let retry = (kind == ReasonKind::TempBanned).then_some(3_600_000);
    let mut v = vec![(
        Input::Closed {
            code: None,
            kind: Some(kind),
            message: Some("why".into()),
            retry_after_ms: retry,
        },
        kind,
        row.conventional,
    )];
    if let Some(code) = row.code {
        let meant = if pairing {
            row.pairing.unwrap_or(kind)
        } else {
            kind
        };
        v.push((
            Input::Closed {
                code: Some(code),
                kind: None,
                message: None,
                retry_after_ms: retry,
            },
            meant,
            Some(code),
        ));
    }
    v
}

const LIVE: [StateName; 3] = [StateName::Connecting, StateName::Pairing, StateName::Open];

/// Checks that the machine did `want` after a close at `now`; `fx` holds the
/// effects of the close and of the answer to it.
fn check_outcome(m: &Machine, fx: &[Effect], want: Outcome, now: u64, what: &str) {
    let base = settings().base_ms;
    let scheduled = fx.iter().find_map(|e| match e {
        Effect::ScheduleTimer { delay_ms, .. } => Some(*delay_ms),
        _ => None,
    });
    let started = fx.iter().any(|e| matches!(e, Effect::StartAttempt { .. }));
    let ends = fx
        .iter()
        .filter(|e| matches!(e, Effect::EndSession(_)))
        .count();
    match (want, m.state()) {
        (Outcome::Now, State::Connecting { .. }) => assert!(started, "{what}: no dial"),
        (Outcome::Backoff, State::Reconnecting { delay_ms, .. }) => {
            assert!(*delay_ms <= base, "{what}: {delay_ms} ms");
            assert_eq!(scheduled, Some(*delay_ms), "{what}");
        }
        (Outcome::LongBackoff, State::Reconnecting { delay_ms, .. }) => {
            assert!(
                (2 * base..=4 * base).contains(delay_ms),
                "{what}: {delay_ms} ms"
            );
            assert_eq!(scheduled, Some(*delay_ms), "{what}");
        }
        (Outcome::Stay, State::Closed { retry_at: None, .. }) => {
            assert_eq!(scheduled, None, "{what}: a timer");
            assert!(!started, "{what}: dialled");
        }
        (Outcome::Ban, State::Closed { retry_at, .. }) => {
            assert_eq!(*retry_at, Some(now + 3_600_000), "{what}");
            assert_eq!(scheduled, Some(3_600_000), "{what}");
        }
        (Outcome::LoggedOut, State::LoggedOut { by, .. }) => {
            assert_eq!(*by, LogoutBy::Server, "{what}");
            assert_eq!(ends, 1, "{what}: session deleted once");
            assert!(
                fx.iter().any(|e| matches!(
                    e,
                    Effect::Hook(HookCall::Logout {
                        by: LogoutBy::Server,
                        ..
                    })
                )),
                "{what}: on_logout"
            );
            assert_eq!(m.row().jid, None, "{what}");
        }
        (want, got) => panic!("{what}: wanted {want:?}, got {got:?}"),
    }
    if want != Outcome::LoggedOut {
        assert_eq!(ends, 0, "{what}: the session was deleted");
    }
}

#[test]
fn every_kind_in_every_live_state_follows_the_table() {
    for kind in ReasonKind::ALL {
        for state in LIVE {
            for (input, meant, code) in closes(kind, state == StateName::Pairing) {
                let what = format!("{input:?} in {state:?}");
                let mut m = machine_in(state);
                let now = T0 + 5_000;
                let mut fx = m.step(input, now);
                let reason = m.row();
                assert_eq!(reason.last_reason_kind, Some(meant), "{what}");
                assert_eq!(reason.last_reason_code, code, "{what}");
                let meant_row = row(meant);
                let asks = close_seq(&fx).is_some();
                assert_eq!(asks, meant_row.overridable, "{what}: asks the scripts");
                let info = close_info(&fx).unwrap_or_else(|| panic!("{what}: no on_close"));
                assert_eq!(info.reason.kind, meant, "{what}");
                if asks {
                    // While the scripts think, the row already says closed.
                    assert_eq!(m.row().connection_status, ConnectionStatus::Close);
                    fx.extend(answer(&mut m, &fx.clone(), CloseAnswer::Default, now));
                }
                check_outcome(&m, &fx, meant_row.outcome, now, &what);
                // A table decision is never shown as a script's.
                assert!(
                    lines(&fx).iter().all(|l| !l.ends_with("by=script")),
                    "{what}: {:?}",
                    lines(&fx)
                );
            }
        }
    }
}

#[test]
fn a_close_in_a_state_without_a_connection_changes_nothing() {
    for kind in ReasonKind::ALL {
        for state in StateName::ALL {
            if LIVE.contains(&state) {
                continue;
            }
            for (input, ..) in closes(kind, false) {
                let mut m = machine_in(state);
                let before = (m.state().clone(), m.row());
                let fx = m.step(input.clone(), T0 + 5_000);
                assert!(fx.is_empty(), "{input:?} in {state:?}: {fx:?}");
                assert_eq!(
                    (m.state().clone(), m.row()),
                    before,
                    "{input:?} in {state:?}"
                );
            }
        }
    }
}

#[test]
fn failures_grow_the_counter_and_other_closes_do_not() {
    for kind in ReasonKind::ALL {
        let row = row(kind);
        for (input, ..) in closes(kind, false) {
            // One failure behind it: the retry opened, then this close.
            let mut m = machine_in(StateName::Connecting);
            let fx = m.step(transport_error(), T0);
            answer(&mut m, &fx, CloseAnswer::Default, T0);
            let token = m.timer.expect("a retry timer");
            m.step(Input::TimerDue { token }, T0 + 1_000);
            m.step(opened(), T0 + 1_000);
            let fx = m.step(input.clone(), T0 + 2_000);
            let want = if row.failure { 2 } else { 1 };
            assert_eq!(close_info(&fx).map(|i| i.attempt), Some(want), "{input:?}");
        }
    }
}

#[test]
fn script_answers_change_only_overridable_kinds_and_say_so() {
    let answers = [
        CloseAnswer::Stay,
        CloseAnswer::Reconnect { delay_ms: None },
        CloseAnswer::Reconnect {
            delay_ms: Some(5_000),
        },
    ];
    for kind in ReasonKind::ALL {
        let row = row(kind);
        for ans in answers {
            let mut m = machine_in(StateName::Open);
            let (input, ..) = closes(kind, false).remove(0);
            let mut fx = m.step(input, T0 + 1);
            fx.extend(answer(&mut m, &fx.clone(), ans, T0 + 1));
            let what = format!("{kind} answered {ans:?}");
            if !row.overridable {
                // No question was asked, so there is nothing to answer.
                assert_eq!(close_seq(&fx), None, "{what}");
                check_outcome(&m, &fx, row.outcome, T0 + 1, &what);
                continue;
            }
            let line = lines(&fx).pop().unwrap_or_default();
            assert!(line.ends_with(" by=script"), "{what}: {line}");
            match (ans, row.outcome, m.state()) {
                (CloseAnswer::Stay, _, State::Closed { retry_at: None, .. }) => {}
                // "true" keeps the default delay, and a ban's default is its expiry.
                (
                    CloseAnswer::Reconnect { delay_ms: None },
                    Outcome::Ban,
                    State::Closed {
                        retry_at: Some(_), ..
                    },
                ) => {}
                (CloseAnswer::Reconnect { delay_ms: None }, _, State::Reconnecting { .. }) => {}
                (
                    CloseAnswer::Reconnect { delay_ms: Some(d) },
                    _,
                    State::Reconnecting { delay_ms, .. },
                ) => assert_eq!(*delay_ms, d, "{what}"),
                (_, _, got) => panic!("{what}: {got:?}"),
            }
        }
    }
}
