//! The machine's behaviours one at a time: restarts, backoff and its
//! counter, flapping, bans, the attempt bound, logout, script answers shown
//! as such, and the console lines.

use super::*;

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
    // Not a failure: the counter stays where the series began.
    assert_eq!(close_info(&fx).map(|i| i.attempt), Some(1));
    assert_eq!(m.state(), &State::Connecting { attempt: 1 });
    assert!(fx.contains(&Effect::StartAttempt { attempt: 1 }));
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
            let last = delay_after(&settings(), seed, failures);
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

/// The delays after `n` closes of connections that each opened and lasted
/// `open_ms`.
fn flap_delays(s: Settings, n: usize, open_ms: u64) -> Vec<u64> {
    let mut m = Machine::new(s, 9, None);
    let mut now = T0;
    m.step(Input::Connect, now);
    let mut delays = Vec::new();
    for _ in 0..n {
        m.step(
            Input::Opened {
                jid: None,
                push_name: None,
            },
            now,
        );
        now += open_ms;
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
    delays
}

#[test]
fn flapping_escalates_to_the_cap() {
    let delays = flap_delays(settings(), 7, 1_000);
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
            retry_at: None,
            by_script: false,
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
            reason: Reason::new(Some(408), ReasonKind::ConnectionLost),
            by_script: false,
        }),
        "reconnecting code=408 kind=connection_lost attempt=1 delay_ms=1000"
    );
    assert_eq!(
        line(State::Closed {
            reason: Reason::new(Some(440), ReasonKind::Replaced),
            retry_at: None,
            by_script: false,
        }),
        "closed code=440 kind=replaced"
    );
    // A state a script's on_close answer chose says so, at the end.
    assert_eq!(
        line(State::Closed {
            reason: Reason::new(Some(408), ReasonKind::ConnectionLost),
            retry_at: None,
            by_script: true,
        }),
        "closed code=408 kind=connection_lost by=script"
    );
    assert_eq!(
        line(State::Reconnecting {
            attempt: 3,
            delay_ms: 25,
            reason: Reason::new(Some(440), ReasonKind::Replaced),
            by_script: true,
        }),
        "reconnecting code=440 kind=replaced attempt=3 delay_ms=25 by=script"
    );
    assert_eq!(
        line(State::Closed {
            reason: Reason::new(Some(402), ReasonKind::TempBanned),
            retry_at: Some(at + 5_000),
            by_script: true,
        }),
        "closed code=402 kind=temp_banned retry_in_ms=5000 by=script"
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

/// Drops an open connection with `code` at `now`, lets `ans` decide, fires
/// the retry and opens again; answers the close's effects and the attempt
/// the state line, `on_close` and the dial each showed.
fn flap(m: &mut Machine, code: u16, ans: CloseAnswer, now: &mut u64) -> (u32, u32, u32) {
    let fx = m.step(close(Some(code)), *now);
    let told = close_info(&fx).map(|i| i.attempt).unwrap_or(0);
    answer(m, &fx, ans, *now);
    let State::Reconnecting {
        attempt, delay_ms, ..
    } = m.state().clone()
    else {
        panic!("{:?}", m.state())
    };
    *now += delay_ms;
    let token = m.timer.expect("a retry timer");
    let fx = m.step(Input::TimerDue { token }, *now);
    let dialled = fx
        .iter()
        .find_map(|e| match e {
            Effect::StartAttempt { attempt } => Some(*attempt),
            _ => None,
        })
        .unwrap_or(0);
    *now += 300;
    m.step(opened(), *now);
    (told, attempt, dialled)
}

#[test]
fn attempt_grows_while_a_connection_flaps_though_each_try_opens() {
    let mut m = machine_in(StateName::Open);
    let mut now = T0 + 300;
    let mut seen = Vec::new();
    for _ in 0..7 {
        let (told, line, dialled) = flap(&mut m, 408, CloseAnswer::Default, &mut now);
        // The state line, on_close and the dial agree on one counter...
        assert_eq!((told, dialled), (line, line));
        seen.push(line);
        now += 300;
    }
    // ...and it counts up although every try opened for a moment.
    assert_eq!(seen, [1, 2, 3, 4, 5, 6, 7]);
}

#[test]
fn attempt_is_the_backoff_exponent_and_resets_after_a_stable_connection() {
    let mut m = machine_in(StateName::Open);
    let mut now = T0 + 100;
    for n in 1..=3u32 {
        let (_, attempt, _) = flap(&mut m, 428, CloseAnswer::Default, &mut now);
        assert_eq!(attempt, n);
        // The same counter is the backoff exponent.
        assert_eq!(m.failures, n);
    }
    // Open for the stability time: the next close starts again at 1.
    now += settings().stable_ms;
    let fx = m.step(close(Some(428)), now);
    assert_eq!(close_info(&fx).map(|i| i.attempt), Some(1));
    answer(&mut m, &fx, CloseAnswer::Default, now);
    assert!(
        matches!(m.state(), State::Reconnecting { attempt: 1, delay_ms, .. } if *delay_ms <= 1_000)
    );
    // Failed dials count too, and a user's connect starts a fresh series.
    let token = m.timer.expect("retry");
    m.step(Input::TimerDue { token }, now + 1_000);
    let fx = m.step(transport_error(), now + 1_100);
    assert_eq!(close_info(&fx).map(|i| i.attempt), Some(2));
    answer(&mut m, &fx, CloseAnswer::Stay, now + 1_100);
    let fx = m.step(Input::Connect, now + 1_200);
    assert!(fx.contains(&Effect::StartAttempt { attempt: 1 }));
}

#[test]
fn the_walk_from_the_readme_gives_up_after_the_third_attempt() {
    // A script that answers false once r.attempt > 3 (nil before).
    let mut m = machine_in(StateName::Open);
    let mut now = T0 + 300;
    let mut told = Vec::new();
    // Bounded: a counter that never grows must fail here, not hang.
    for _ in 0..8 {
        let fx = m.step(close(Some(408)), now);
        let attempt = close_info(&fx).expect("on_close").attempt;
        told.push(attempt);
        let ans = if attempt > 3 {
            CloseAnswer::Stay
        } else {
            CloseAnswer::Default
        };
        let fx = answer(&mut m, &fx, ans, now);
        if attempt > 3 {
            assert_eq!(
                lines(&fx),
                ["closed code=408 kind=connection_lost by=script"]
            );
            break;
        }
        let State::Reconnecting { delay_ms, .. } = m.state().clone() else {
            panic!("{:?}", m.state())
        };
        now += delay_ms;
        let token = m.timer.expect("retry");
        m.step(Input::TimerDue { token }, now);
        now += 300;
        m.step(opened(), now);
    }
    assert_eq!(told, [1, 2, 3, 4]);
}

#[test]
fn only_a_script_answer_marks_the_state_by_script() {
    let cases = [
        (CloseAnswer::Default, "reconnecting", false),
        (CloseAnswer::Stay, "closed", true),
        (
            CloseAnswer::Reconnect { delay_ms: None },
            "reconnecting",
            true,
        ),
        (
            CloseAnswer::Reconnect { delay_ms: Some(25) },
            "reconnecting",
            true,
        ),
    ];
    for (ans, state, by_script) in cases {
        let mut m = machine_in(StateName::Open);
        let fx = m.step(close(Some(408)), T0);
        // Closed while the scripts think: no line yet, nothing by script.
        assert!(lines(&fx).is_empty());
        let fx = answer(&mut m, &fx, ans, T0);
        let line = lines(&fx).pop().expect("a state line");
        assert!(line.starts_with(state), "{ans:?}: {line}");
        assert_eq!(line.ends_with(" by=script"), by_script, "{ans:?}: {line}");
        let by = match m.state() {
            State::Reconnecting { by_script, .. } | State::Closed { by_script, .. } => *by_script,
            other => panic!("{other:?}"),
        };
        assert_eq!(by, by_script);
        // The next state is the machine's own again.
        if let Some(token) = m.timer {
            let fx = m.step(Input::TimerDue { token }, T0 + 60_000);
            assert_eq!(lines(&fx), ["connecting attempt=1"]);
        }
    }
    // A stop while the scripts think settles it without a script.
    let mut m = machine_in(StateName::Open);
    m.step(close(Some(408)), T0);
    let fx = m.step(Input::Stop, T0);
    assert_eq!(lines(&fx), ["closed code=408 kind=connection_lost"]);
    // A ban a script let run keeps saying so when a stop disarms it.
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
    let fx = answer(&mut m, &fx, CloseAnswer::Reconnect { delay_ms: None }, T0);
    assert_eq!(
        lines(&fx),
        ["closed code=402 kind=temp_banned retry_in_ms=10000 by=script"]
    );
}

#[test]
fn a_logged_out_row_restores_logged_out_and_a_second_logout_changes_nothing() {
    let row = StatusRow {
        connection_status: StateName::LoggedOut.connection_status(),
        state: StateName::LoggedOut,
        last_reason_code: Some(401),
        last_reason_kind: Some(ReasonKind::LoggedOut),
        last_reason_message: None,
        last_change_at: 7,
        jid: None,
        push_name: None,
        logout_by: Some(LogoutBy::Server),
    };
    let mut m = Machine::new(Settings::default(), 1, Some(&row));
    assert!(
        matches!(
            m.state(),
            State::LoggedOut {
                by: LogoutBy::Server,
                ..
            }
        ),
        "{:?}",
        m.state()
    );
    assert_eq!(m.row(), row, "the row it restored is the row it keeps");
    let fx = m.step(Input::Logout { by: LogoutBy::User }, T0);
    assert!(fx.is_empty(), "{fx:?}");
    assert_eq!(m.row(), row);
    // A person may pair again from there, like from idle.
    let fx = m.step(Input::Connect, T0 + 1);
    assert!(
        fx.iter().any(|e| matches!(e, Effect::StartAttempt { .. })),
        "{fx:?}"
    );
    // Any other row starts idle.
    let closed = StatusRow {
        state: StateName::Closed,
        connection_status: StateName::Closed.connection_status(),
        ..row
    };
    assert_eq!(
        Machine::new(Settings::default(), 1, Some(&closed)).state(),
        &State::Idle
    );
}

/// The delay of the `failures`-th failure in a row, each outside the flap
/// window of the one before.
fn delay_after(s: &Settings, seed: u64, failures: u32) -> u64 {
    let mut m = Machine::new(s.clone(), seed, None);
    let mut now = T0;
    m.step(Input::Connect, now);
    let mut last = 0;
    for _ in 0..failures {
        now += 61_000;
        let fx = m.step(transport_error(), now);
        answer(&mut m, &fx, CloseAnswer::Default, now);
        if let State::Reconnecting { delay_ms, .. } = m.state() {
            last = *delay_ms;
        }
        let token = m.timer.unwrap_or(0);
        m.step(Input::TimerDue { token }, now + last);
    }
    last
}

#[test]
fn the_factor_and_the_flap_window_are_settings() {
    // Factor 3: the third failure draws from [0, 9 s], past factor 2's 4 s.
    let s = Settings {
        factor: 3,
        ..settings()
    };
    let third: Vec<u64> = (0..200).map(|seed| delay_after(&s, seed, 3)).collect();
    assert!(third.iter().all(|d| *d <= 9_000), "{third:?}");
    assert!(third.iter().any(|d| *d > 6_000), "{third:?}");
    // Factor 1: never more than the base.
    let flat = Settings {
        factor: 1,
        ..settings()
    };
    assert!((0..100).all(|seed| delay_after(&flat, seed, 6) <= 1_000));

    // Two closes allowed in 10 s: the third one there waits the cap.
    let s = Settings {
        flap_closes: 2,
        flap_window_ms: 10_000,
        ..settings()
    };
    let delays = flap_delays(s, 3, 100);
    assert!(delays[2] >= 30_000, "{delays:?}");
    assert!(delays[..2].iter().all(|d| *d <= 2_000), "{delays:?}");
}
