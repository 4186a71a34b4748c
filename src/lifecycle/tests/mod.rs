//! The machine alone: every reason in every state (`table`), the behaviours
//! one at a time (`behaviour`), and property tests against a reference model
//! written from the close-reason table rather than from the machine (`model`).

use super::*;

mod behaviour;
mod model;
mod table;

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

fn opened() -> Input {
    Input::Opened {
        jid: None,
        push_name: None,
    }
}

/// A machine in `state`, reached the way a host would get there, at `T0`.
fn machine_in(state: StateName) -> Machine {
    let mut m = Machine::new(settings(), 42, None);
    let t = T0;
    if state == StateName::Idle {
        return m;
    }
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
        StateName::Reconnecting => {
            m.step(opened(), t);
            let fx = m.step(close(Some(428)), t);
            answer(&mut m, &fx, CloseAnswer::Default, t);
        }
        StateName::Closed => {
            m.step(opened(), t);
            m.step(close(Some(405)), t);
        }
        StateName::LoggingOut => {
            m.step(opened(), t);
            m.step(Input::Logout { by: LogoutBy::User }, t);
        }
        StateName::LoggedOut => {
            m.step(opened(), t);
            m.step(Input::Logout { by: LogoutBy::User }, t);
            m.step(Input::LogoutDone, t);
        }
        StateName::Idle => unreachable!(),
    }
    assert_eq!(m.state().name(), state);
    m
}

/// The `answer_seq` of an `on_close` that waits for an answer, if any.
fn close_seq(fx: &[Effect]) -> Option<u64> {
    fx.iter().find_map(|e| match e {
        Effect::Hook(HookCall::Close {
            answer_seq: Some(s),
            ..
        }) => Some(*s),
        _ => None,
    })
}

/// What `on_close` was told, if it was called.
fn close_info(fx: &[Effect]) -> Option<&CloseInfo> {
    fx.iter().find_map(|e| match e {
        Effect::Hook(HookCall::Close { info, .. }) => Some(info),
        _ => None,
    })
}

/// Answers a pending `on_close` the way the host would feed a script's answer.
fn answer(m: &mut Machine, fx: &[Effect], answer: CloseAnswer, now: u64) -> Vec<Effect> {
    match close_seq(fx) {
        Some(seq) => m.step(Input::CloseAnswer { seq, answer }, now),
        None => Vec::new(),
    }
}

/// The console lines of a step's state changes.
fn lines(fx: &[Effect]) -> Vec<String> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Emit(t) => Some(t.to_string()),
            _ => None,
        })
        .collect()
}
