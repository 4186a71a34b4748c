//! The machine itself: every input's transition, the backoff with its
//! bound, and the `on_close` question. The types it speaks in are in
//! the parent module.

use super::*;

const MINUTE_MS: u64 = 60_000;

/// What was decided about a close, before the bound on attempts is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    Reconnect { delay_ms: u64 },
    Stay,
    WaitBan { retry_after_ms: u64 },
}

/// A close that waits for the scripts' `on_close` answer.
#[derive(Debug, Clone)]
struct Pending {
    seq: u64,
    reason: Reason,
    default: Plan,
}

/// The lifecycle of one instance. See the module docs.
///
/// `attempt` (in `connecting`, `reconnecting`, `on_close` and
/// [`Effect::StartAttempt`]) is the backoff counter: the consecutive failed
/// closes since the connection was last stable (open for `stable_ms`), at
/// least 1. It grows while a connection flaps, even when each try opens
/// briefly, and attempt N waits up to `base_ms * factor^(N-1)`. A user's connect
/// from `idle`, `closed` or `logged_out` starts a fresh series at 1; a
/// restart the server asks for (515) is not a failure and leaves it as it is.
#[derive(Debug, Clone)]
pub struct Machine {
    settings: Settings,
    state: State,
    rng: backoff::Rng,
    jid: Option<String>,
    push_name: Option<String>,
    last_reason: Option<Reason>,
    last_change_at: u64,
    /// Consecutive failures since the last stable connection (or since a
    /// user asked): the backoff exponent and, at least 1, the attempt number.
    pub(super) failures: u32,
    opened_at: Option<u64>,
    /// Start times of recent attempts, for the per-minute bound.
    attempt_log: std::collections::VecDeque<u64>,
    /// Times of recent closes, for flap detection.
    close_log: std::collections::VecDeque<u64>,
    /// The token of the armed timer (the tests fire it by hand).
    pub(super) timer: Option<u64>,
    next_token: u64,
    pending: Option<Pending>,
}

impl Machine {
    /// `seed` feeds the jitter; `restored` is the last persisted row, so the
    /// account id and last reason survive restarts.
    ///
    /// An instance that was logged out stays `logged_out` (with who did it
    /// and why) rather than `idle`: a logout asked of it in a later process
    /// answers that state instead of logging out again; everything else
    /// starts `idle`.
    pub fn new(settings: Settings, seed: u64, restored: Option<&StatusRow>) -> Machine {
        let last_reason = restored.and_then(|r| {
            r.last_reason_kind.map(|kind| Reason {
                message: r.last_reason_message.clone(),
                ..Reason::new(r.last_reason_code, kind)
            })
        });
        let state = match (restored, &last_reason) {
            (Some(r), Some(reason)) if r.state == StateName::LoggedOut => State::LoggedOut {
                reason: reason.clone(),
                by: r.logout_by.unwrap_or(LogoutBy::Server),
            },
            _ => State::Idle,
        };
        Machine {
            settings,
            state,
            rng: backoff::Rng::new(seed),
            jid: restored.and_then(|r| r.jid.clone()),
            push_name: restored.and_then(|r| r.push_name.clone()),
            last_reason,
            last_change_at: restored.map(|r| r.last_change_at).unwrap_or(0),
            failures: 0,
            opened_at: None,
            attempt_log: Default::default(),
            close_log: Default::default(),
            timer: None,
            next_token: 1,
            pending: None,
        }
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The row that must be in the database right now.
    pub fn row(&self) -> StatusRow {
        let name = self.state.name();
        StatusRow {
            connection_status: name.connection_status(),
            state: name,
            last_reason_code: self.last_reason.as_ref().and_then(|r| r.code),
            last_reason_kind: self.last_reason.as_ref().map(|r| r.kind),
            last_reason_message: self.last_reason.as_ref().and_then(|r| r.message.clone()),
            last_change_at: self.last_change_at,
            jid: self.jid.clone(),
            push_name: self.push_name.clone(),
            logout_by: match self.state {
                State::LoggingOut { by } | State::LoggedOut { by, .. } => Some(by),
                _ => None,
            },
        }
    }

    /// Whether the machine waits for an `on_close` answer.
    pub fn deciding(&self) -> bool {
        self.pending.is_some()
    }

    /// Number of attempts started in the 60 s before `now` (inclusive).
    pub fn attempts_in_last_minute(&self, now: u64) -> usize {
        self.attempt_log
            .iter()
            .filter(|t| **t + MINUTE_MS > now)
            .count()
    }

    /// Feeds one input; returns what must be done, in order.
    pub fn step(&mut self, input: Input, now: u64) -> Vec<Effect> {
        let mut fx = Vec::new();
        match input {
            Input::Connect => self.on_connect(now, &mut fx),
            Input::Stop => self.on_stop(now, &mut fx),
            Input::PairingCode {
                code,
                kind,
                expires_in_ms,
            } => {
                if matches!(self.state, State::Connecting { .. } | State::Pairing { .. }) {
                    let expires = now.saturating_add(expires_in_ms);
                    self.enter(
                        State::Pairing {
                            code: code.clone(),
                            kind,
                            expires,
                        },
                        now,
                        &mut fx,
                    );
                    fx.push(Effect::Hook(HookCall::Qr {
                        code,
                        kind,
                        expires_in_ms,
                    }));
                }
            }
            Input::PairSuccess { jid } => {
                if matches!(self.state, State::Pairing { .. } | State::Connecting { .. })
                    && jid.is_some()
                {
                    // Not a state change: the 515 that follows is. Keep the id
                    // so the next row carries it.
                    self.jid = jid;
                }
            }
            Input::Opened { jid, push_name } => self.on_opened(jid, push_name, now, &mut fx),
            Input::AccountId { jid, push_name } => self.on_account(jid, push_name, now, &mut fx),
            Input::Closed {
                code,
                kind,
                message,
                retry_after_ms,
            } => self.on_closed(code, kind, message, retry_after_ms, now, &mut fx),
            Input::Logout { by } => self.on_logout(by, now, &mut fx),
            Input::LogoutDone => {
                if let State::LoggingOut { by } = self.state {
                    self.finish_logout(
                        Reason::new(Some(401), ReasonKind::LoggedOut),
                        by,
                        None,
                        now,
                        &mut fx,
                    );
                }
            }
            Input::TimerDue { token } => {
                if self.timer == Some(token) {
                    self.timer = None;
                    match self.state {
                        State::Reconnecting { .. }
                        | State::Closed {
                            retry_at: Some(_), ..
                        } => {
                            let wait = self.bound_wait(now);
                            if wait > 0 {
                                // Only user connects can have filled the window
                                // since this was scheduled; the bound still holds.
                                self.schedule(wait, &mut fx);
                            } else if let State::Reconnecting { attempt, .. } = self.state {
                                self.start_attempt(attempt, now, &mut fx);
                            } else {
                                self.start_attempt(self.attempt(), now, &mut fx);
                            }
                        }
                        _ => {}
                    }
                }
            }
            Input::CloseAnswer { seq, answer } => {
                if let Some(p) = self.pending.take_if(|p| p.seq == seq) {
                    let plan = self.resolve(&p, answer);
                    let by_script = answer != CloseAnswer::Default;
                    self.apply_plan(plan, p.reason, by_script, now, &mut fx);
                }
            }
        }
        fx
    }

    fn enter(&mut self, state: State, now: u64, fx: &mut Vec<Effect>) {
        self.state = state;
        self.last_change_at = now;
        fx.push(Effect::Persist(self.row()));
        fx.push(Effect::Emit(Transition {
            state: self.state.clone(),
            at: now,
        }));
    }

    fn cancel_timer(&mut self, fx: &mut Vec<Effect>) {
        if let Some(token) = self.timer.take() {
            fx.push(Effect::CancelTimer { token });
        }
    }

    fn schedule(&mut self, delay_ms: u64, fx: &mut Vec<Effect>) {
        self.cancel_timer(fx);
        let token = self.next_token;
        self.next_token += 1;
        self.timer = Some(token);
        fx.push(Effect::ScheduleTimer { token, delay_ms });
    }

    fn prune(&mut self, now: u64) {
        while self
            .attempt_log
            .front()
            .is_some_and(|t| t + MINUTE_MS <= now)
        {
            self.attempt_log.pop_front();
        }
        let window = self.settings.flap_window_ms;
        while self.close_log.front().is_some_and(|t| t + window <= now) {
            self.close_log.pop_front();
        }
    }

    /// How long an automatic attempt must wait to respect the per-minute bound.
    fn bound_wait(&mut self, now: u64) -> u64 {
        self.prune(now);
        let max = self.settings.max_per_minute.max(1) as usize;
        let n = self.attempt_log.len();
        if n < max {
            return 0;
        }
        (self.attempt_log[n - max] + MINUTE_MS).saturating_sub(now)
    }

    /// The number of the attempt about to be made (see [`Machine`]).
    fn attempt(&self) -> u32 {
        self.failures.max(1)
    }

    fn start_attempt(&mut self, attempt: u32, now: u64, fx: &mut Vec<Effect>) {
        self.cancel_timer(fx);
        self.pending = None;
        self.attempt_log.push_back(now);
        self.enter(State::Connecting { attempt }, now, fx);
        fx.push(Effect::StartAttempt { attempt });
    }

    fn on_connect(&mut self, now: u64, fx: &mut Vec<Effect>) {
        match self.state {
            State::Idle | State::Closed { .. } | State::LoggedOut { .. } => {
                // A person asked: start a fresh series.
                self.failures = 0;
                self.start_attempt(1, now, fx);
            }
            State::Reconnecting { attempt, .. } => self.start_attempt(attempt, now, fx),
            State::Connecting { .. }
            | State::Pairing { .. }
            | State::Open { .. }
            | State::LoggingOut { .. } => {}
        }
    }

    fn on_stop(&mut self, now: u64, fx: &mut Vec<Effect>) {
        match self.state {
            State::Connecting { .. }
            | State::Pairing { .. }
            | State::Open { .. }
            | State::Reconnecting { .. } => {
                self.cancel_timer(fx);
                self.pending = None;
                self.opened_at = None;
                let reason = Reason::new(None, ReasonKind::Stopped);
                self.last_reason = Some(reason.clone());
                self.enter(
                    State::Closed {
                        reason,
                        retry_at: None,
                        by_script: false,
                    },
                    now,
                    fx,
                );
                fx.push(Effect::CloseTransport);
            }
            State::Closed { .. } => {
                // A stop settles a pending decision as "stay" and disarms a
                // ban's retry.
                self.cancel_timer(fx);
                if let Some(p) = self.pending.take() {
                    self.apply_plan(Plan::Stay, p.reason, false, now, fx);
                    return;
                }
                if let State::Closed { retry_at, .. } = &mut self.state
                    && retry_at.take().is_some()
                {
                    let state = self.state.clone();
                    self.enter(state, now, fx);
                }
            }
            State::Idle | State::LoggingOut { .. } | State::LoggedOut { .. } => {}
        }
    }

    fn on_opened(
        &mut self,
        jid: Option<String>,
        push_name: Option<String>,
        now: u64,
        fx: &mut Vec<Effect>,
    ) {
        match self.state {
            State::Connecting { .. } | State::Pairing { .. } => {
                if jid.is_some() {
                    self.jid = jid;
                }
                if push_name.is_some() {
                    self.push_name = push_name;
                }
                self.opened_at = Some(now);
                self.enter(
                    State::Open {
                        jid: self.jid.clone(),
                    },
                    now,
                    fx,
                );
                fx.push(Effect::Hook(HookCall::Open {
                    jid: self.jid.clone(),
                    push_name: self.push_name.clone(),
                }));
            }
            // A repeated open only carries news about the account.
            State::Open { .. } => self.on_account(jid, push_name, now, fx),
            // The machine is not waiting for a connection: whatever opened
            // late must not live on.
            _ => fx.push(Effect::CloseTransport),
        }
    }

    fn on_account(
        &mut self,
        jid: Option<String>,
        push_name: Option<String>,
        now: u64,
        fx: &mut Vec<Effect>,
    ) {
        let live = matches!(
            self.state,
            State::Open { .. } | State::Connecting { .. } | State::Pairing { .. }
        );
        let news = (jid.is_some() && jid != self.jid)
            || (push_name.is_some() && push_name != self.push_name);
        if !live || !news {
            return;
        }
        if jid.is_some() {
            self.jid = jid;
        }
        if push_name.is_some() {
            self.push_name = push_name;
        }
        if let State::Open { .. } = self.state {
            let jid = self.jid.clone();
            self.enter(State::Open { jid }, now, fx);
        } else {
            self.last_change_at = now;
            fx.push(Effect::Persist(self.row()));
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_closed(
        &mut self,
        code: Option<u16>,
        kind: Option<ReasonKind>,
        message: Option<String>,
        retry_after_ms: Option<u64>,
        now: u64,
        fx: &mut Vec<Effect>,
    ) {
        let was_open = matches!(self.state, State::Open { .. });
        let pairing = matches!(self.state, State::Pairing { .. });
        if !was_open && !matches!(self.state, State::Connecting { .. }) && !pairing {
            // Nothing was connected: a late close of a transport we already left.
            return;
        }
        let kind = kind.unwrap_or_else(|| match code {
            Some(c) => Reason::classify(c, pairing),
            None => ReasonKind::ConnectionLost,
        });
        let kind = match (kind, pairing) {
            (ReasonKind::ConnectionLost, true) if code == Some(408) => ReasonKind::QrTimeout,
            (k, _) => k,
        };
        let reason = Reason {
            code: code.or(kind.default_code()),
            kind,
            message,
        };
        self.prune(now);
        if let Some(opened) = self.opened_at.take()
            && now.saturating_sub(opened) >= self.settings.stable_ms
        {
            self.failures = 0;
        }
        // A brief open does not reset the counter: a flapping connection
        // backs off like one that never opens.
        if kind.is_failure() {
            self.failures = self.failures.saturating_add(1);
        }
        let next_attempt = self.attempt();
        self.last_reason = Some(reason.clone());

        if kind.default_action() == DefaultAction::LogOut {
            let close = HookCall::Close {
                info: CloseInfo {
                    reason: reason.clone(),
                    attempt: next_attempt,
                    will_reconnect: false,
                    delay_ms: None,
                },
                answer_seq: None,
            };
            // Mark the session ended first, as for any logout; the server
            // has unlinked already, so there is nothing to ask it.
            self.state = State::LoggingOut {
                by: LogoutBy::Server,
            };
            self.last_change_at = now;
            fx.push(Effect::Persist(self.row()));
            self.begin_logout_steps(fx);
            self.finish_logout(reason, LogoutBy::Server, Some(close), now, fx);
            return;
        }

        // Whatever the reason, this connection's transport is done: closing
        // it (idempotent) means a library that kept its socket up cannot
        // keep a session the machine considers closed.
        fx.push(Effect::CloseTransport);
        if kind.is_failure() {
            self.close_log.push_back(now);
        }
        let default = self.default_plan(kind, retry_after_ms);
        let (will_reconnect, delay_ms) = match default {
            Plan::Reconnect { delay_ms } => (true, Some(delay_ms)),
            Plan::Stay => (false, None),
            Plan::WaitBan { retry_after_ms } => (true, Some(retry_after_ms)),
        };
        let info = CloseInfo {
            reason: reason.clone(),
            attempt: next_attempt,
            will_reconnect,
            delay_ms,
        };
        if kind.overridable() {
            // The connection is gone now, whatever the scripts will say: the
            // row must not keep saying open while they think.
            self.next_token += 1;
            let seq = self.next_token;
            self.pending = Some(Pending {
                seq,
                reason: reason.clone(),
                default,
            });
            self.state = State::Closed {
                reason,
                retry_at: None,
                by_script: false,
            };
            self.last_change_at = now;
            fx.push(Effect::Persist(self.row()));
            fx.push(Effect::Hook(HookCall::Close {
                info,
                answer_seq: Some(seq),
            }));
        } else {
            // The state change (and its row) first; the hook only informs.
            self.apply_plan(default, reason, false, now, fx);
            fx.push(Effect::Hook(HookCall::Close {
                info,
                answer_seq: None,
            }));
        }
    }

    fn backoff_delay(&mut self) -> u64 {
        let s = &self.settings;
        if self.close_log.len() > s.flap_closes as usize {
            return backoff::equal_jitter(&mut self.rng, s.cap_ms);
        }
        let ceiling = backoff::ceiling(s.base_ms, s.cap_ms, s.factor, self.attempt());
        backoff::full_jitter(&mut self.rng, ceiling)
    }

    fn default_plan(&mut self, kind: ReasonKind, retry_after_ms: Option<u64>) -> Plan {
        match kind.default_action() {
            DefaultAction::ReconnectNow => Plan::Reconnect { delay_ms: 0 },
            DefaultAction::Backoff => Plan::Reconnect {
                delay_ms: self.backoff_delay(),
            },
            DefaultAction::LongBackoff => {
                let s = &self.settings;
                let ceiling = if self.close_log.len() > s.flap_closes as usize {
                    s.cap_ms
                } else {
                    backoff::ceiling(
                        s.base_ms,
                        s.cap_ms,
                        s.factor,
                        self.attempt().saturating_add(2),
                    )
                };
                Plan::Reconnect {
                    delay_ms: backoff::equal_jitter(&mut self.rng, ceiling),
                }
            }
            DefaultAction::Stay | DefaultAction::LogOut => Plan::Stay,
            DefaultAction::UntilBanExpires => match retry_after_ms {
                Some(ms) => Plan::WaitBan { retry_after_ms: ms },
                None => Plan::Stay,
            },
        }
    }

    fn resolve(&mut self, p: &Pending, answer: CloseAnswer) -> Plan {
        match answer {
            CloseAnswer::Default => p.default,
            CloseAnswer::Stay => Plan::Stay,
            CloseAnswer::Reconnect { delay_ms: Some(ms) } => Plan::Reconnect {
                delay_ms: ms.min(MAX_SCRIPT_DELAY_MS),
            },
            CloseAnswer::Reconnect { delay_ms: None } => match p.default {
                Plan::Reconnect { .. } | Plan::WaitBan { .. } => p.default,
                Plan::Stay => Plan::Reconnect {
                    delay_ms: self.backoff_delay(),
                },
            },
        }
    }

    /// Carries out a decided plan; `by_script` marks a script's answer as
    /// its origin, so the state line can say so.
    fn apply_plan(
        &mut self,
        plan: Plan,
        reason: Reason,
        by_script: bool,
        now: u64,
        fx: &mut Vec<Effect>,
    ) {
        let attempt = self.attempt();
        match plan {
            Plan::Reconnect { delay_ms } => {
                let wait = self.bound_wait(now);
                if delay_ms == 0 && wait == 0 && reason.kind == ReasonKind::RestartRequired {
                    self.start_attempt(attempt, now, fx);
                    return;
                }
                let delay_ms = delay_ms.max(wait);
                self.enter(
                    State::Reconnecting {
                        attempt,
                        delay_ms,
                        reason,
                        by_script,
                    },
                    now,
                    fx,
                );
                self.schedule(delay_ms, fx);
            }
            Plan::Stay => {
                self.cancel_timer(fx);
                self.enter(
                    State::Closed {
                        reason,
                        retry_at: None,
                        by_script,
                    },
                    now,
                    fx,
                );
            }
            Plan::WaitBan { retry_after_ms } => {
                let delay = retry_after_ms.max(self.bound_wait(now));
                self.enter(
                    State::Closed {
                        reason,
                        retry_at: Some(now.saturating_add(delay)),
                        by_script,
                    },
                    now,
                    fx,
                );
                self.schedule(delay, fx);
            }
        }
    }

    fn begin_logout_steps(&mut self, fx: &mut Vec<Effect>) {
        self.pending = None;
        self.opened_at = None;
        self.cancel_timer(fx);
        fx.push(Effect::StopInbound);
    }

    fn on_logout(&mut self, by: LogoutBy, now: u64, fx: &mut Vec<Effect>) {
        if matches!(
            self.state,
            State::LoggingOut { .. } | State::LoggedOut { .. }
        ) {
            return; // idempotent: the caller answers with the current state
        }
        // Marking the session ended comes first: from here on nothing can
        // start a reconnect.
        self.enter(State::LoggingOut { by }, now, fx);
        self.begin_logout_steps(fx);
        fx.push(Effect::Unlink);
        fx.push(Effect::CloseTransport);
    }

    fn finish_logout(
        &mut self,
        reason: Reason,
        by: LogoutBy,
        close: Option<HookCall>,
        now: u64,
        fx: &mut Vec<Effect>,
    ) {
        if by == LogoutBy::Server {
            fx.push(Effect::CloseTransport);
        }
        self.jid = None;
        self.push_name = None;
        self.failures = 0;
        self.last_reason = Some(reason.clone());
        self.state = State::LoggedOut {
            reason: reason.clone(),
            by,
        };
        self.last_change_at = now;
        fx.push(Effect::EndSession(self.row()));
        fx.push(Effect::Emit(Transition {
            state: self.state.clone(),
            at: now,
        }));
        if let Some(close) = close {
            fx.push(Effect::Hook(close));
        }
        fx.push(Effect::Hook(HookCall::Logout { reason, by }));
    }
}
