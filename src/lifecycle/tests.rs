//! The machine alone: every reason in every state, the script overrides, and
//! property tests of the lifecycle invariants (ARCHITECTURE.md) over random input sequences.

use super::*;
use proptest::prelude::*;

const T0: u64 = 1_700_000_000_000;

fn settings() -> Settings {
    Settings::default()
}

fn close(code: Option<u16>) -> Input {
    Input::Closed {
        code,
        kind: None,
        message: None,
        retry_after_ms: None,
    }
}

fn transport_error() -> Input {
    Input::Closed {
        code: None,
        kind: Some(ReasonKind::TransportError),
        message: Some("connection refused".into()),
        retry_after_ms: None,
    }
}

/// The machine in a given live state, plus the time.
fn machine_in(state: StateName) -> Machine {
    let mut m = Machine::new(settings(), 42, None);
    let t = T0;
    m.step(Input::Connect, t);
    match state {
        StateName::Connecting => {}
        StateName::Pairing => {
            m.step(
                Input::PairingCode {
                    code: "2@abc".into(),
                    kind: PairKind::Qr,
                    expires_in_ms: 60_000,
                },
                t,
            );
        }
        StateName::Open => {
            m.step(
                Input::Opened {
                    jid: Some("me@s.whatsapp.net".into()),
                    push_name: None,
                },
                t,
            );
        }
        other => panic!("not a live state: {other:?}"),
    }
    assert_eq!(m.state().name(), state);
    m
}

/// Answers a pending `on_close` the way a host with no opinion would.
fn answer(m: &mut Machine, fx: &[Effect], answer: CloseAnswer, now: u64) -> Vec<Effect> {
    let seq = fx.iter().find_map(|e| match e {
        Effect::Hook(HookCall::Close {
            answer_seq: Some(s),
            ..
        }) => Some(*s),
        _ => None,
    });
    match seq {
        Some(seq) => m.step(Input::CloseAnswer { seq, answer }, now),
        None => Vec::new(),
    }
}

/// What a close led to, coarsely.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Now,
    Backoff,
    LongBackoff,
    Stay,
    Ban,
    LoggedOut,
}

fn outcome(m: &Machine, fx: &[Effect]) -> Outcome {
    match m.state() {
        State::Connecting { .. } => {
            assert!(fx.iter().any(|e| matches!(e, Effect::StartAttempt { .. })));
            Outcome::Now
        }
        State::Reconnecting { delay_ms, .. } => {
            assert!(
                fx.iter().any(
                    |e| matches!(e, Effect::ScheduleTimer { delay_ms: d, .. } if d == delay_ms)
                )
            );
            // Rate limits wait at least half of a ceiling three steps up.
            if *delay_ms >= 2_000 {
                Outcome::LongBackoff
            } else {
                Outcome::Backoff
            }
        }
        State::Closed {
            retry_at: Some(_), ..
        } => Outcome::Ban,
        State::Closed { retry_at: None, .. } => Outcome::Stay,
        State::LoggedOut { .. } => Outcome::LoggedOut,
        other => panic!("unexpected state after close: {other:?}"),
    }
}

/// The close-reason table, written out again on purpose: changing a row in the
/// code without changing it here fails this test.
const TABLE: &[(Option<u16>, ReasonKind, ReasonKind, Outcome, bool)] = &[
    // code, kind when open/connecting, kind when pairing, default, overridable
    (
        Some(515),
        ReasonKind::RestartRequired,
        ReasonKind::RestartRequired,
        Outcome::Now,
        false,
    ),
    (
        Some(428),
        ReasonKind::ConnectionClosed,
        ReasonKind::ConnectionClosed,
        Outcome::Backoff,
        true,
    ),
    (
        Some(408),
        ReasonKind::ConnectionLost,
        ReasonKind::QrTimeout,
        Outcome::Backoff,
        true,
    ),
    (
        Some(500),
        ReasonKind::BadSession,
        ReasonKind::BadSession,
        Outcome::Backoff,
        true,
    ),
    (
        Some(503),
        ReasonKind::ServiceUnavailable,
        ReasonKind::ServiceUnavailable,
        Outcome::Backoff,
        true,
    ),
    (
        Some(429),
        ReasonKind::RateLimited,
        ReasonKind::RateLimited,
        Outcome::LongBackoff,
        true,
    ),
    (
        Some(440),
        ReasonKind::Replaced,
        ReasonKind::Replaced,
        Outcome::Stay,
        true,
    ),
    (
        Some(402),
        ReasonKind::TempBanned,
        ReasonKind::TempBanned,
        Outcome::Ban,
        true,
    ),
    (
        Some(405),
        ReasonKind::ClientOutdated,
        ReasonKind::ClientOutdated,
        Outcome::Stay,
        false,
    ),
    (
        Some(401),
        ReasonKind::LoggedOut,
        ReasonKind::LoggedOut,
        Outcome::LoggedOut,
        false,
    ),
    (
        Some(403),
        ReasonKind::Forbidden,
        ReasonKind::Forbidden,
        Outcome::LoggedOut,
        false,
    ),
    (
        Some(406),
        ReasonKind::UnknownLogout,
        ReasonKind::UnknownLogout,
        Outcome::LoggedOut,
        false,
    ),
    (
        None,
        ReasonKind::TransportError,
        ReasonKind::TransportError,
        Outcome::Backoff,
        true,
    ),
];

fn input_for(code: Option<u16>, kind: ReasonKind) -> Input {
    match code {
        Some(c) => Input::Closed {
            code: Some(c),
            kind: None,
            message: None,
            retry_after_ms: (c == 402).then_some(3_600_000),
        },
        None => Input::Closed {
            code: None,
            kind: Some(kind),
            message: None,
            retry_after_ms: None,
        },
    }
}

#[test]
fn every_reason_in_every_live_state_follows_the_table() {
    for (code, kind_open, kind_pairing, expected, overridable) in TABLE {
        for state in [StateName::Connecting, StateName::Pairing, StateName::Open] {
            let mut m = machine_in(state);
            let now = T0 + 5_000;
            let mut fx = m.step(input_for(*code, *kind_open), now);
            let kind = if state == StateName::Pairing {
                *kind_pairing
            } else {
                *kind_open
            };
            assert_eq!(
                m.last_reason.as_ref().map(|r| r.kind),
                Some(kind),
                "{code:?} in {state:?}"
            );
            assert_eq!(kind.overridable(), *overridable, "{kind}");
            let asks = fx.iter().any(|e| {
                matches!(
                    e,
                    Effect::Hook(HookCall::Close {
                        answer_seq: Some(_),
                        ..
                    })
                )
            });
            assert_eq!(asks, *overridable, "{code:?} in {state:?} asks scripts");
            if asks {
                // While the scripts think, the row already says closed.
                assert_eq!(m.row().connection_status, ConnectionStatus::Close);
                fx.extend(answer(&mut m, &fx.clone(), CloseAnswer::Default, now));
            }
            let got = outcome(&m, &fx);
            let expected = match (kind, expected) {
                (ReasonKind::QrTimeout, _) => Outcome::Stay,
                (_, e) => match e {
                    Outcome::Now => Outcome::Now,
                    Outcome::Backoff => Outcome::Backoff,
                    Outcome::LongBackoff => Outcome::LongBackoff,
                    Outcome::Stay => Outcome::Stay,
                    Outcome::Ban => Outcome::Ban,
                    Outcome::LoggedOut => Outcome::LoggedOut,
                },
            };
            assert_eq!(got, expected, "{code:?} ({kind}) in {state:?}");
            if got == Outcome::LoggedOut {
                let ends = fx
                    .iter()
                    .filter(|e| matches!(e, Effect::EndSession(_)))
                    .count();
                assert_eq!(ends, 1);
                assert!(fx.iter().any(|e| matches!(
                    e,
                    Effect::Hook(HookCall::Logout {
                        by: LogoutBy::Server,
                        ..
                    })
                )));
            }
        }
    }
}

#[test]
fn closes_in_states_without_a_connection_change_nothing() {
    for (code, kind, ..) in TABLE {
        // idle
        let mut m = Machine::new(settings(), 1, None);
        assert!(m.step(input_for(*code, *kind), T0).is_empty());
        // reconnecting
        let mut m = machine_in(StateName::Open);
        let fx = m.step(close(Some(428)), T0);
        answer(&mut m, &fx, CloseAnswer::Default, T0);
        assert_eq!(m.state().name(), StateName::Reconnecting);
        assert!(m.step(input_for(*code, *kind), T0).is_empty(), "{code:?}");
        // closed
        let mut m = machine_in(StateName::Open);
        m.step(close(Some(405)), T0);
        assert!(m.step(input_for(*code, *kind), T0).is_empty());
        // logging out / logged out
        let mut m = machine_in(StateName::Open);
        m.step(Input::Logout { by: LogoutBy::User }, T0);
        assert!(m.step(input_for(*code, *kind), T0).is_empty());
        m.step(Input::LogoutDone, T0);
        assert!(m.step(input_for(*code, *kind), T0).is_empty());
    }
}

#[test]
fn restart_required_after_pairing_reconnects_at_once_and_is_not_a_failure() {
    let mut m = machine_in(StateName::Pairing);
    m.step(
        Input::PairSuccess {
            jid: Some("me@s.whatsapp.net".into()),
        },
        T0,
    );
    let fx = m.step(close(Some(515)), T0 + 10);
    assert_eq!(m.state(), &State::Connecting { attempt: 2 });
    assert!(fx.contains(&Effect::StartAttempt { attempt: 2 }));
    assert_eq!(m.failures, 0);
    assert_eq!(m.row().jid.as_deref(), Some("me@s.whatsapp.net"));
    m.step(
        Input::Opened {
            jid: None,
            push_name: None,
        },
        T0 + 20,
    );
    assert_eq!(
        m.state(),
        &State::Open {
            jid: Some("me@s.whatsapp.net".into())
        }
    );
}

#[test]
fn script_answers_change_only_overridable_reasons() {
    let answers = [
        (CloseAnswer::Stay, StateName::Closed),
        (
            CloseAnswer::Reconnect { delay_ms: None },
            StateName::Reconnecting,
        ),
        (
            CloseAnswer::Reconnect {
                delay_ms: Some(5_000),
            },
            StateName::Reconnecting,
        ),
    ];
    for (code, kind, ..) in TABLE {
        let k = *kind;
        for (ans, expect) in answers {
            let mut m = machine_in(StateName::Open);
            let mut fx = m.step(input_for(*code, k), T0 + 1);
            fx.extend(answer(&mut m, &fx.clone(), ans, T0 + 1));
            if k.overridable() {
                // "true" keeps the default delay, and a ban's default is its expiry.
                let expect = match (k, ans) {
                    (ReasonKind::TempBanned, CloseAnswer::Reconnect { delay_ms: None }) => {
                        assert!(matches!(
                            m.state(),
                            State::Closed {
                                retry_at: Some(_),
                                ..
                            }
                        ));
                        StateName::Closed
                    }
                    _ => expect,
                };
                assert_eq!(m.state().name(), expect, "{k} answered {ans:?}");
                if let (
                    CloseAnswer::Reconnect {
                        delay_ms: Some(5_000),
                    },
                    State::Reconnecting { delay_ms, .. },
                ) = (ans, m.state())
                {
                    assert_eq!(*delay_ms, 5_000);
                }
            } else {
                // No question was asked, so there is nothing to answer.
                assert!(!fx.iter().any(|e| matches!(
                    e,
                    Effect::Hook(HookCall::Close {
                        answer_seq: Some(_),
                        ..
                    })
                )));
                let default = match k.default_action() {
                    DefaultAction::ReconnectNow => StateName::Connecting,
                    DefaultAction::LogOut => StateName::LoggedOut,
                    _ => StateName::Closed,
                };
                assert_eq!(m.state().name(), default);
            }
        }
    }
}

#[test]
fn a_stale_answer_is_ignored() {
    let mut m = machine_in(StateName::Open);
    let fx = m.step(close(Some(408)), T0);
    m.step(Input::Connect, T0 + 1);
    assert_eq!(m.state().name(), StateName::Connecting);
    assert!(answer(&mut m, &fx, CloseAnswer::Stay, T0 + 2).is_empty());
    assert_eq!(m.state().name(), StateName::Connecting);
}

#[test]
fn backoff_grows_with_full_jitter_and_resets_after_a_stable_connection() {
    // Delays draw from [0, base*2^(n-1)]: over many seeds the max approaches
    // the ceiling and never passes it.
    for failures in 1..=4u32 {
        let ceiling = 1000u64 << (failures - 1);
        let mut max_seen = 0;
        for seed in 0..200 {
            let mut m = Machine::new(settings(), seed, None);
            let mut now = T0;
            m.step(Input::Connect, now);
            let mut last = 0;
            for _ in 0..failures {
                now += 61_000; // outside the flap window
                let fx = m.step(transport_error(), now);
                answer(&mut m, &fx, CloseAnswer::Default, now);
                if let State::Reconnecting { delay_ms, .. } = m.state() {
                    last = *delay_ms;
                }
                let token = m.timer.unwrap_or(0);
                m.step(Input::TimerDue { token }, now + last);
            }
            assert!(last <= ceiling, "{last} > {ceiling}");
            max_seen = max_seen.max(last);
        }
        assert!(
            max_seen > ceiling * 3 / 4,
            "failures={failures} max={max_seen}"
        );
    }

    // Open for 30 s resets the exponent; open for less does not.
    let mut m = Machine::new(settings(), 3, None);
    m.step(Input::Connect, T0);
    m.failures = 5;
    m.step(
        Input::Opened {
            jid: None,
            push_name: None,
        },
        T0,
    );
    m.step(close(Some(428)), T0 + 29_999);
    assert_eq!(m.failures, 6);
    let mut m = Machine::new(settings(), 3, None);
    m.step(Input::Connect, T0);
    m.failures = 5;
    m.step(
        Input::Opened {
            jid: None,
            push_name: None,
        },
        T0,
    );
    m.step(close(Some(428)), T0 + 30_000);
    assert_eq!(m.failures, 1);
}

#[test]
fn flapping_escalates_to_the_cap() {
    let mut m = Machine::new(settings(), 9, None);
    let mut now = T0;
    m.step(Input::Connect, now);
    let mut delays = Vec::new();
    for _ in 0..7 {
        m.step(
            Input::Opened {
                jid: None,
                push_name: None,
            },
            now,
        );
        now += 1_000;
        let fx = m.step(close(Some(428)), now);
        answer(&mut m, &fx, CloseAnswer::Default, now);
        let State::Reconnecting { delay_ms, .. } = m.state().clone() else {
            panic!("{:?}", m.state())
        };
        delays.push(delay_ms);
        now += delay_ms;
        let token = m.timer.unwrap_or(0);
        m.step(Input::TimerDue { token }, now);
    }
    // The 6th close is "more than 5 in 60 s": at least half the cap, where
    // plain backoff after 6 failures could have drawn anything up to 32 s.
    assert!(delays[5] >= 30_000, "{delays:?}");
    assert!(delays[..5].iter().all(|d| *d <= 16_000), "{delays:?}");
}

#[test]
fn rate_limit_waits_longer() {
    let mut m = machine_in(StateName::Open);
    let fx = m.step(close(Some(429)), T0);
    answer(&mut m, &fx, CloseAnswer::Default, T0);
    let State::Reconnecting { delay_ms, .. } = m.state() else {
        panic!()
    };
    assert!((2_000..=4_000).contains(delay_ms), "{delay_ms}");
}

#[test]
fn a_temporary_ban_waits_for_its_expiry_then_reconnects() {
    let mut m = machine_in(StateName::Open);
    let fx = m.step(
        Input::Closed {
            code: Some(402),
            kind: None,
            message: None,
            retry_after_ms: Some(10_000),
        },
        T0,
    );
    let fx2 = answer(&mut m, &fx, CloseAnswer::Default, T0);
    assert_eq!(m.state().name(), StateName::Closed);
    let token = fx2
        .iter()
        .find_map(|e| match e {
            Effect::ScheduleTimer { token, delay_ms } => {
                assert_eq!(*delay_ms, 10_000);
                Some(*token)
            }
            _ => None,
        })
        .expect("a timer for the ban's end");
    let fx3 = m.step(Input::TimerDue { token }, T0 + 10_000);
    assert!(fx3.iter().any(|e| matches!(e, Effect::StartAttempt { .. })));
    // Without a known expiry it stays closed.
    let mut m = machine_in(StateName::Open);
    let fx = m.step(close(Some(402)), T0);
    answer(&mut m, &fx, CloseAnswer::Default, T0);
    assert_eq!(
        m.state(),
        &State::Closed {
            reason: Reason::new(Some(402), ReasonKind::TempBanned),
            retry_at: None
        }
    );
}

#[test]
fn scripts_cannot_break_the_attempt_bound() {
    let mut m = Machine::new(settings(), 5, None);
    let mut now = T0;
    m.step(Input::Connect, now);
    let mut starts = vec![now];
    for _ in 0..200 {
        m.step(
            Input::Opened {
                jid: None,
                push_name: None,
            },
            now,
        );
        let fx = m.step(close(Some(428)), now);
        let fx = answer(
            &mut m,
            &fx,
            CloseAnswer::Reconnect { delay_ms: Some(0) },
            now,
        );
        let delay = fx
            .iter()
            .find_map(|e| match e {
                Effect::ScheduleTimer { delay_ms, .. } => Some(*delay_ms),
                _ => None,
            })
            .unwrap_or(0);
        now += delay;
        let token = m.timer.unwrap_or(0);
        let fx = m.step(Input::TimerDue { token }, now);
        if fx.iter().any(|e| matches!(e, Effect::StartAttempt { .. })) {
            starts.push(now);
        }
    }
    for (i, t) in starts.iter().enumerate() {
        let in_window = starts[..=i].iter().filter(|s| **s + 60_000 > *t).count();
        assert!(
            in_window <= 12,
            "{in_window} attempts in the minute before {t}"
        );
    }
    assert!(
        now - T0 >= 15 * 60_000,
        "200 attempts took only {} ms",
        now - T0
    );
}

#[test]
fn user_logout_runs_the_steps_in_order_and_is_idempotent() {
    let mut m = machine_in(StateName::Open);
    let fx = m.step(Input::Logout { by: LogoutBy::User }, T0);
    let kinds: Vec<&str> = fx
        .iter()
        .map(|e| match e {
            Effect::Persist(_) => "persist",
            Effect::Emit(_) => "emit",
            Effect::CancelTimer { .. } => "cancel",
            Effect::StopInbound => "stop_inbound",
            Effect::Unlink => "unlink",
            Effect::CloseTransport => "close",
            _ => "other",
        })
        .collect();
    assert_eq!(
        kinds,
        ["persist", "emit", "stop_inbound", "unlink", "close"]
    );
    assert_eq!(m.row().state, StateName::LoggingOut);
    assert!(m.step(Input::Logout { by: LogoutBy::User }, T0).is_empty());
    assert!(m.step(Input::Connect, T0).is_empty());
    let fx = m.step(Input::LogoutDone, T0 + 5);
    assert!(
        matches!(&fx[0], Effect::EndSession(row) if row.state == StateName::LoggedOut
        && row.last_reason_code == Some(401) && row.jid.is_none())
    );
    assert!(matches!(
        fx.last(),
        Some(Effect::Hook(HookCall::Logout {
            by: LogoutBy::User,
            ..
        }))
    ));
    assert!(m.step(Input::Logout { by: LogoutBy::User }, T0).is_empty());
    assert!(m.step(Input::LogoutDone, T0).is_empty());
    // A new connect after a logout is allowed.
    let fx = m.step(Input::Connect, T0 + 10);
    assert!(fx.contains(&Effect::StartAttempt { attempt: 1 }));
}

#[test]
fn logout_cancels_a_pending_reconnect() {
    let mut m = machine_in(StateName::Open);
    let fx = m.step(close(Some(428)), T0);
    answer(&mut m, &fx, CloseAnswer::Default, T0);
    let token = m.timer.expect("reconnect timer");
    let fx = m.step(
        Input::Logout {
            by: LogoutBy::Script,
        },
        T0 + 1,
    );
    assert!(fx.contains(&Effect::CancelTimer { token }));
    assert!(m.step(Input::TimerDue { token }, T0 + 5_000).is_empty());
}

#[test]
fn open_without_an_account_id_fills_it_later() {
    let mut m = machine_in(StateName::Connecting);
    m.step(
        Input::Opened {
            jid: None,
            push_name: None,
        },
        T0,
    );
    assert_eq!(m.state(), &State::Open { jid: None });
    assert_eq!(m.row().connection_status, ConnectionStatus::Open);
    let fx = m.step(
        Input::AccountId {
            jid: Some("me@s.whatsapp.net".into()),
            push_name: Some("Me".into()),
        },
        T0 + 1,
    );
    assert!(matches!(&fx[0], Effect::Persist(r) if r.jid.as_deref() == Some("me@s.whatsapp.net")));
    assert_eq!(m.row().push_name.as_deref(), Some("Me"));
}

#[test]
fn stop_closes_with_reason_stopped_and_leaves_terminal_states_alone() {
    let mut m = machine_in(StateName::Open);
    let fx = m.step(Input::Stop, T0);
    assert!(fx.contains(&Effect::CloseTransport));
    assert_eq!(m.row().last_reason_kind, Some(ReasonKind::Stopped));
    assert_eq!(m.row().connection_status, ConnectionStatus::Close);
    let mut m = machine_in(StateName::Open);
    m.step(close(Some(401)), T0);
    assert!(m.step(Input::Stop, T0).is_empty());
    assert_eq!(m.row().last_reason_code, Some(401));
    // A stop while the scripts decide settles it as closed, with the real reason.
    let mut m = machine_in(StateName::Open);
    m.step(close(Some(408)), T0);
    let fx = m.step(Input::Stop, T0);
    assert!(fx.iter().any(
        |e| matches!(e, Effect::Emit(t) if t.to_string() == "closed code=408 kind=connection_lost")
    ));
}

#[test]
fn transition_lines_match_the_console_contract() {
    let at = T0;
    let line = |state: State| Transition { state, at }.to_string();
    assert_eq!(
        line(State::Connecting { attempt: 1 }),
        "connecting attempt=1"
    );
    assert_eq!(
        line(State::Open {
            jid: Some("me@console".into())
        }),
        "open jid=me@console"
    );
    assert_eq!(
        line(State::Reconnecting {
            attempt: 1,
            delay_ms: 1000,
            reason: Reason::new(Some(408), ReasonKind::ConnectionLost)
        }),
        "reconnecting code=408 kind=connection_lost attempt=1 delay_ms=1000"
    );
    assert_eq!(
        line(State::Closed {
            reason: Reason::new(Some(440), ReasonKind::Replaced),
            retry_at: None
        }),
        "closed code=440 kind=replaced"
    );
    assert_eq!(
        line(State::LoggedOut {
            reason: Reason::new(Some(401), ReasonKind::LoggedOut),
            by: LogoutBy::Server
        }),
        "logged_out code=401 kind=logged_out by=server"
    );
    assert_eq!(
        line(State::Pairing {
            code: "2@x".into(),
            kind: PairKind::Qr,
            expires: at + 20_000
        }),
        "pairing kind=qr code=2@x expires_in=20"
    );
}

// ---- property tests -------------------------------------------------------

#[derive(Debug, Clone)]
enum Step {
    Connect,
    Stop,
    Pair,
    PairSuccess,
    Open(bool),
    Account,
    Close(Option<u16>),
    Logout(LogoutBy),
    LogoutDone,
    Timer,
    StaleTimer(u64),
    Answer(u8),
    StaleAnswer(u64),
}

fn step_strategy() -> impl Strategy<Value = Step> {
    let codes = prop::sample::select(vec![
        Some(515u16),
        Some(428),
        Some(408),
        Some(500),
        Some(503),
        Some(429),
        Some(440),
        Some(402),
        Some(405),
        Some(401),
        Some(403),
        Some(406),
        Some(999),
        None,
    ]);
    let by = prop::sample::select(vec![LogoutBy::User, LogoutBy::Script]);
    prop_oneof![
        3 => Just(Step::Connect),
        1 => Just(Step::Stop),
        1 => Just(Step::Pair),
        1 => Just(Step::PairSuccess),
        3 => any::<bool>().prop_map(Step::Open),
        1 => Just(Step::Account),
        6 => codes.prop_map(Step::Close),
        1 => by.prop_map(Step::Logout),
        2 => Just(Step::LogoutDone),
        5 => Just(Step::Timer),
        1 => (0u64..50).prop_map(Step::StaleTimer),
        4 => (0u8..5).prop_map(Step::Answer),
        1 => (0u64..50).prop_map(Step::StaleAnswer),
    ]
}

fn to_input(step: &Step, m: &Machine, last_seq: u64) -> Input {
    match step {
        Step::Connect => Input::Connect,
        Step::Stop => Input::Stop,
        Step::Pair => Input::PairingCode {
            code: "2@ref".into(),
            kind: PairKind::Qr,
            expires_in_ms: 20_000,
        },
        Step::PairSuccess => Input::PairSuccess {
            jid: Some("me@s.whatsapp.net".into()),
        },
        Step::Open(with_jid) => Input::Opened {
            jid: with_jid.then(|| "me@s.whatsapp.net".into()),
            push_name: None,
        },
        Step::Account => Input::AccountId {
            jid: Some("other@s.whatsapp.net".into()),
            push_name: Some("Me".into()),
        },
        Step::Close(code) => match code {
            Some(c) => Input::Closed {
                code: Some(*c),
                kind: None,
                message: None,
                retry_after_ms: (*c == 402).then_some(5_000),
            },
            None => transport_error(),
        },
        Step::Logout(by) => Input::Logout { by: *by },
        Step::LogoutDone => Input::LogoutDone,
        Step::Timer => Input::TimerDue {
            token: m.timer.unwrap_or(0),
        },
        Step::StaleTimer(t) => Input::TimerDue { token: *t },
        Step::Answer(a) => Input::CloseAnswer {
            seq: last_seq,
            answer: match a {
                0 => CloseAnswer::Default,
                1 => CloseAnswer::Stay,
                2 => CloseAnswer::Reconnect { delay_ms: None },
                3 => CloseAnswer::Reconnect { delay_ms: Some(0) },
                _ => CloseAnswer::Reconnect {
                    delay_ms: Some(1_500),
                },
            },
        },
        Step::StaleAnswer(s) => Input::CloseAnswer {
            seq: *s,
            answer: CloseAnswer::Reconnect { delay_ms: Some(0) },
        },
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn invariants_hold_after_every_step(
        seed in any::<u64>(),
        steps in prop::collection::vec((step_strategy(), prop::sample::select(vec![0u64, 0, 5, 300, 2_000, 20_000, 61_000])), 1..120),
    ) {
        let s = Settings::default();
        let max = s.max_per_minute as usize;
        let mut m = Machine::new(s, seed, None);
        let mut now = T0;
        let mut last_seq = 0;
        let mut automatic_starts: Vec<u64> = Vec::new();
        let mut all_starts: Vec<u64> = Vec::new();
        let mut logged_out_since_connect = false;
        for (step, dt) in steps {
            now += dt;
            let before = m.state().clone();
            let input = to_input(&step, &m, last_seq);
            let is_connect = input == Input::Connect;
            let is_logout_req = matches!(input, Input::Logout { .. });
            let fx = m.step(input, now);
            for e in &fx {
                if let Effect::Hook(HookCall::Close { answer_seq: Some(s), .. }) = e {
                    last_seq = *s;
                }
            }

            // 1. Every state change is persisted in the same step, and the
            //    last row written is the machine's row; never open when not open.
            let last_row = fx.iter().rev().find_map(|e| match e {
                Effect::Persist(r) | Effect::EndSession(r) => Some(r.clone()),
                _ => None,
            });
            if m.state() != &before {
                prop_assert_eq!(last_row.as_ref(), Some(&m.row()), "state {:?} -> {:?}", before, m.state());
            } else if let Some(r) = &last_row {
                prop_assert_eq!(r, &m.row());
            }
            let row = m.row();
            prop_assert_eq!(row.connection_status == ConnectionStatus::Open, matches!(m.state(), State::Open { .. }));
            prop_assert_eq!(row.state, m.state().name());
            prop_assert_eq!(row.connection_status, row.state.connection_status());

            // 2. Exactly one session delete, only when entering logged_out.
            let ends = fx.iter().filter(|e| matches!(e, Effect::EndSession(_))).count();
            let entered_logged_out = !matches!(before, State::LoggedOut { .. }) && matches!(m.state(), State::LoggedOut { .. });
            prop_assert_eq!(ends, usize::from(entered_logged_out));
            if is_logout_req && !matches!(before, State::LoggingOut { .. } | State::LoggedOut { .. }) {
                prop_assert!(matches!(m.state(), State::LoggingOut { .. }), "not logging out");
                prop_assert!(fx.contains(&Effect::Unlink));
            }
            if entered_logged_out {
                prop_assert!(fx.iter().any(|e| matches!(e, Effect::Hook(HookCall::Logout { .. }))), "no on_logout");
            }

            // 3. Nothing reconnects after a logout until a new connect.
            let started = fx.iter().any(|e| matches!(e, Effect::StartAttempt { .. }));
            if matches!(m.state(), State::LoggingOut { .. } | State::LoggedOut { .. }) {
                logged_out_since_connect = true;
            }
            if is_connect {
                logged_out_since_connect = false;
            }
            if started {
                prop_assert!(!logged_out_since_connect || is_connect);
                all_starts.push(now);
                if !is_connect {
                    automatic_starts.push(now);
                    // 4. The bound: automatic attempts never push the last
                    //    minute past max_per_minute.
                    let in_window = all_starts.iter().filter(|t| **t + 60_000 > now).count();
                    prop_assert!(in_window <= max, "{} attempts in a minute", in_window);
                }
            }
            if logged_out_since_connect {
                prop_assert!(m.timer.is_none());
            }
        }
    }

    #[test]
    fn logout_always_ends_in_logged_out(
        seed in any::<u64>(),
        prefix in prop::collection::vec(step_strategy(), 0..40),
        by in prop::sample::select(vec![LogoutBy::User, LogoutBy::Script]),
    ) {
        let mut m = Machine::new(Settings::default(), seed, None);
        let mut now = T0;
        let mut last_seq = 0;
        for step in &prefix {
            now += 1_000;
            let input = to_input(step, &m, last_seq);
            for e in m.step(input, now) {
                if let Effect::Hook(HookCall::Close { answer_seq: Some(s), .. }) = e {
                    last_seq = s;
                }
            }
        }
        let mut ends = 0;
        let fx = m.step(Input::Logout { by }, now);
        ends += fx.iter().filter(|e| matches!(e, Effect::EndSession(_))).count();
        let fx = m.step(Input::LogoutDone, now + 1);
        ends += fx.iter().filter(|e| matches!(e, Effect::EndSession(_))).count();
        prop_assert!(matches!(m.state(), State::LoggedOut { .. }), "not logged out");
        prop_assert!(ends <= 1);
        prop_assert_eq!(m.row().state, StateName::LoggedOut);
        prop_assert_eq!(m.row().connection_status, ConnectionStatus::Close);
    }
}
