//! Property tests against a reference model.
//!
//! The model is written from the lifecycle's contract (README, "Connection
//! lifecycle"), not from the machine: it classifies
//! codes with the test table (`super::table::row`), keeps its own backoff
//! counter and its own record of attempts for the per-minute bound, and
//! after every input predicts the row the database must hold, the state
//! line's essentials, and which effects must come (a dial and its attempt
//! number, `on_close` and what it is told, a timer, a session delete). From
//! the machine it takes only what the machine is free to choose: timer
//! tokens, answer numbers and jittered delays (the delays are checked
//! against the bound and the script's ask).
//!
//! The database and the host's timer are simulated from the effects, as the
//! host applies them, so "the row in the database" below is what the
//! `Persist` / `EndSession` effects wrote, not `Machine::row()`.

use super::table::{Outcome, row};
use super::*;

mod props;

const DAY_MS: u64 = 24 * 60 * 60 * 1000;

/// A close reason as the model keeps it (add fields here as the row grows).
#[derive(Debug, Clone, PartialEq, Eq)]
struct MReason {
    code: Option<u16>,
    kind: ReasonKind,
    message: Option<String>,
}

impl MReason {
    fn matches(&self, r: &Reason) -> bool {
        self.code == r.code && self.kind == r.kind && self.message == r.message
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum MState {
    Idle,
    Connecting { attempt: u32 },
    Pairing,
    Open,
    Reconnecting { attempt: u32, by_script: bool },
    Closed { ban: bool, by_script: bool },
    LoggingOut { by: LogoutBy },
    LoggedOut { by: LogoutBy },
}

/// A close that waits for the scripts.
#[derive(Debug, Clone)]
struct MPending {
    seq: u64,
    default: Outcome,
    retry_after_ms: Option<u64>,
}

/// What one input must cause, by the model.
#[derive(Debug, Default)]
struct Want {
    /// A row write (persist or session end).
    wrote: bool,
    /// The state line, if the step shows one.
    emit: Option<MState>,
    /// Entered `logged_out`: one session delete and `on_logout`.
    ended: bool,
    /// A dial: its attempt number, and whether a person asked for it.
    start: Option<(u32, bool)>,
    /// `on_close`: the kind, the attempt, and whether it waits for an answer.
    close: Option<(ReasonKind, u32, bool)>,
    /// A user or script logout began: the server is asked to unlink.
    unlink: bool,
    /// The delay a script asked for, for the reconnect it chose.
    script_delay: Option<u64>,
    /// The ban's retry delay, for the `closed` it waits in.
    ban_delay: Option<u64>,
}

#[derive(Debug)]
struct Model {
    s: Settings,
    state: MState,
    reason: Option<MReason>,
    jid: Option<String>,
    push_name: Option<String>,
    changed_at: u64,
    /// Consecutive failures since the last stable connection.
    failures: u32,
    opened_at: Option<u64>,
    pending: Option<MPending>,
    armed: bool,
    /// Every dial, for the per-minute bound.
    starts: Vec<u64>,
    /// The row as last written: news that is not a state change (the jid
    /// a pairing reports) waits for the next write.
    written: Option<StatusRow>,
    /// Times the bound, not the table or a script, held an attempt back.
    bound_hits: usize,
    want: Want,
}

fn classify(code: u16, pairing: bool) -> ReasonKind {
    let kind = ReasonKind::ALL
        .into_iter()
        .find(|k| row(*k).code == Some(code))
        .unwrap_or(ReasonKind::Unknown);
    match row(kind).pairing {
        Some(k) if pairing => k,
        _ => kind,
    }
}

impl Model {
    fn new(s: Settings) -> Model {
        Model {
            s,
            state: MState::Idle,
            reason: None,
            jid: None,
            push_name: None,
            changed_at: 0,
            failures: 0,
            opened_at: None,
            pending: None,
            armed: false,
            starts: Vec::new(),
            written: None,
            bound_hits: 0,
            want: Want::default(),
        }
    }

    /// The row the database must hold.
    fn row(&self) -> StatusRow {
        let (status, name) = match &self.state {
            MState::Idle => (ConnectionStatus::Close, StateName::Idle),
            MState::Connecting { .. } => (ConnectionStatus::Connecting, StateName::Connecting),
            MState::Pairing => (ConnectionStatus::Connecting, StateName::Pairing),
            MState::Open => (ConnectionStatus::Open, StateName::Open),
            MState::Reconnecting { .. } => (ConnectionStatus::Connecting, StateName::Reconnecting),
            MState::Closed { .. } => (ConnectionStatus::Close, StateName::Closed),
            MState::LoggingOut { .. } => (ConnectionStatus::Close, StateName::LoggingOut),
            MState::LoggedOut { .. } => (ConnectionStatus::Close, StateName::LoggedOut),
        };
        StatusRow {
            connection_status: status,
            state: name,
            last_reason_code: self.reason.as_ref().and_then(|r| r.code),
            last_reason_kind: self.reason.as_ref().map(|r| r.kind),
            last_reason_message: self.reason.as_ref().and_then(|r| r.message.clone()),
            last_change_at: self.changed_at,
            jid: self.jid.clone(),
            push_name: self.push_name.clone(),
            logout_by: match self.state {
                MState::LoggingOut { by } | MState::LoggedOut { by } => Some(by),
                _ => None,
            },
        }
    }

    /// Whether one more attempt at `at` keeps every minute within the bound.
    fn allowed(&self, at: u64) -> bool {
        let in_window = self.starts.iter().filter(|t| **t + 60_000 > at).count();
        in_window < self.s.max_per_minute as usize
    }

    fn attempt(&self) -> u32 {
        self.failures.max(1)
    }

    fn enter(&mut self, state: MState, now: u64) {
        self.state = state.clone();
        self.changed_at = now;
        self.want.wrote = true;
        self.want.emit = Some(state);
    }

    /// A row write without a state line (news about the account, a close
    /// waiting for the scripts).
    fn write(&mut self, now: u64) {
        self.changed_at = now;
        self.want.wrote = true;
    }

    fn start(&mut self, attempt: u32, by_user: bool, now: u64) {
        self.armed = false;
        self.pending = None;
        self.starts.push(now);
        self.want.start = Some((attempt, by_user));
        self.enter(MState::Connecting { attempt }, now);
    }

    fn arm(&mut self) {
        self.armed = true;
    }

    fn end(&mut self, reason: MReason, by: LogoutBy, now: u64) {
        self.jid = None;
        self.push_name = None;
        self.failures = 0;
        self.pending = None;
        self.armed = false;
        self.reason = Some(reason);
        self.want.ended = true;
        self.enter(MState::LoggedOut { by }, now);
    }

    fn reconnect(&mut self, by_script: bool, restart: bool, now: u64) {
        if !self.allowed(now) {
            self.bound_hits += 1;
        } else if restart {
            self.start(self.attempt(), false, now);
            return;
        }
        let attempt = self.attempt();
        self.enter(MState::Reconnecting { attempt, by_script }, now);
        self.arm();
    }

    fn stay(&mut self, by_script: bool, now: u64) {
        self.armed = false;
        self.enter(
            MState::Closed {
                ban: false,
                by_script,
            },
            now,
        );
    }

    /// What the table says once nobody (or a script's `nil`) overrides it.
    fn by_default(&mut self, default: Outcome, retry_after_ms: Option<u64>, now: u64) {
        match default {
            Outcome::Now => self.reconnect(false, true, now),
            Outcome::Backoff | Outcome::LongBackoff => self.reconnect(false, false, now),
            Outcome::Stay | Outcome::LoggedOut => self.stay(false, now),
            Outcome::Ban => match retry_after_ms {
                Some(ms) => self.ban(ms, false, now),
                None => self.stay(false, now),
            },
        }
    }

    fn ban(&mut self, ms: u64, by_script: bool, now: u64) {
        if !self.allowed(now + ms) {
            self.bound_hits += 1;
        }
        self.want.ban_delay = Some(ms);
        self.enter(
            MState::Closed {
                ban: true,
                by_script,
            },
            now,
        );
        self.arm();
    }

    fn account(&mut self, jid: &Option<String>, push_name: &Option<String>, now: u64) {
        if !matches!(
            self.state,
            MState::Open | MState::Connecting { .. } | MState::Pairing
        ) {
            return;
        }
        let news = (jid.is_some() && *jid != self.jid)
            || (push_name.is_some() && *push_name != self.push_name);
        if !news {
            return;
        }
        if jid.is_some() {
            self.jid = jid.clone();
        }
        if push_name.is_some() {
            self.push_name = push_name.clone();
        }
        if self.state == MState::Open {
            self.enter(MState::Open, now);
        } else {
            self.write(now);
        }
    }

    /// Applies one input. `timer_token` is the token the host's timer holds.
    fn apply(&mut self, input: &Input, now: u64, timer_token: Option<u64>) {
        self.want = Want::default();
        self.transition(input, now, timer_token);
        if self.want.wrote {
            self.written = Some(self.row());
        }
    }

    fn transition(&mut self, input: &Input, now: u64, timer_token: Option<u64>) {
        let live = matches!(
            self.state,
            MState::Connecting { .. } | MState::Pairing | MState::Open
        );
        match input {
            Input::Connect => match self.state {
                MState::Idle | MState::Closed { .. } | MState::LoggedOut { .. } => {
                    self.failures = 0;
                    self.start(1, true, now);
                }
                MState::Reconnecting { attempt, .. } => self.start(attempt, true, now),
                _ => {}
            },
            Input::Stop => match self.state {
                _ if live || matches!(self.state, MState::Reconnecting { .. }) => {
                    self.armed = false;
                    self.pending = None;
                    self.opened_at = None;
                    self.reason = Some(MReason {
                        code: None,
                        kind: ReasonKind::Stopped,
                        message: None,
                    });
                    self.stay(false, now);
                }
                MState::Closed { ban, by_script } => {
                    if self.pending.take().is_some() {
                        self.stay(false, now);
                    } else if ban {
                        self.armed = false;
                        self.enter(
                            MState::Closed {
                                ban: false,
                                by_script,
                            },
                            now,
                        );
                    }
                }
                _ => {}
            },
            Input::PairingCode { .. } => {
                if matches!(self.state, MState::Connecting { .. } | MState::Pairing) {
                    self.enter(MState::Pairing, now);
                }
            }
            Input::PairSuccess { jid } => {
                if matches!(self.state, MState::Connecting { .. } | MState::Pairing)
                    && jid.is_some()
                {
                    self.jid = jid.clone();
                }
            }
            Input::Opened { jid, push_name } => match self.state {
                MState::Connecting { .. } | MState::Pairing => {
                    if jid.is_some() {
                        self.jid = jid.clone();
                    }
                    if push_name.is_some() {
                        self.push_name = push_name.clone();
                    }
                    self.opened_at = Some(now);
                    self.enter(MState::Open, now);
                }
                MState::Open => self.account(jid, push_name, now),
                _ => {}
            },
            Input::AccountId { jid, push_name } => self.account(jid, push_name, now),
            Input::Closed {
                code,
                kind,
                message,
                retry_after_ms,
            } if live => {
                let pairing = self.state == MState::Pairing;
                let mut kind = kind.unwrap_or_else(|| match code {
                    Some(c) => classify(*c, pairing),
                    None => ReasonKind::ConnectionLost,
                });
                if pairing && kind == ReasonKind::ConnectionLost && *code == Some(408) {
                    kind = ReasonKind::QrTimeout;
                }
                let spec = row(kind);
                self.reason = Some(MReason {
                    code: code.or(spec.conventional),
                    kind,
                    message: message.clone(),
                });
                if let Some(at) = self.opened_at.take()
                    && now - at >= self.s.stable_ms
                {
                    self.failures = 0;
                }
                if spec.failure {
                    self.failures += 1;
                }
                let asks = spec.overridable && spec.outcome != Outcome::LoggedOut;
                self.want.close = Some((kind, self.attempt(), asks));
                if spec.outcome == Outcome::LoggedOut {
                    let reason = self.reason.clone().expect("set above");
                    self.write(now); // logging_out, first
                    self.end(reason, LogoutBy::Server, now);
                } else if asks {
                    self.pending = Some(MPending {
                        seq: 0, // the machine's to choose: taken from its effects
                        default: spec.outcome,
                        retry_after_ms: *retry_after_ms,
                    });
                    self.state = MState::Closed {
                        ban: false,
                        by_script: false,
                    };
                    self.write(now);
                } else {
                    self.by_default(spec.outcome, *retry_after_ms, now);
                }
            }
            Input::Closed { .. } => {}
            Input::Logout { by } => {
                if !matches!(
                    self.state,
                    MState::LoggingOut { .. } | MState::LoggedOut { .. }
                ) {
                    self.armed = false;
                    self.pending = None;
                    self.opened_at = None;
                    self.want.unlink = true;
                    self.enter(MState::LoggingOut { by: *by }, now);
                }
            }
            Input::LogoutDone => {
                if let MState::LoggingOut { by } = self.state {
                    let reason = MReason {
                        code: Some(401),
                        kind: ReasonKind::LoggedOut,
                        message: None,
                    };
                    self.end(reason, by, now);
                }
            }
            Input::TimerDue { token } => {
                if self.armed && timer_token == Some(*token) {
                    self.armed = false;
                    let attempt = match self.state {
                        MState::Reconnecting { attempt, .. } => Some(attempt),
                        MState::Closed { ban: true, .. } => Some(self.attempt()),
                        _ => None,
                    };
                    if let Some(attempt) = attempt {
                        if self.allowed(now) {
                            self.start(attempt, false, now);
                        } else {
                            self.bound_hits += 1;
                            self.arm();
                        }
                    }
                }
            }
            Input::CloseAnswer { seq, answer } => {
                if let Some(p) = self.pending.take_if(|p| p.seq == *seq) {
                    let by_script = *answer != CloseAnswer::Default;
                    match answer {
                        CloseAnswer::Default => self.by_default(p.default, p.retry_after_ms, now),
                        CloseAnswer::Stay => self.stay(true, now),
                        CloseAnswer::Reconnect { delay_ms: Some(d) } => {
                            self.want.script_delay = Some((*d).min(DAY_MS));
                            self.reconnect(true, false, now);
                        }
                        // "Reconnect, default delay": a ban's default is its
                        // expiry; where the default was to stay, a backoff.
                        CloseAnswer::Reconnect { delay_ms: None } => {
                            match (p.default, p.retry_after_ms) {
                                (Outcome::Ban, Some(ms)) => self.ban(ms, by_script, now),
                                _ => self.reconnect(by_script, false, now),
                            }
                        }
                    }
                }
            }
        }
    }
}
