//! The connection lifecycle as a pure state machine (sans-IO).
//!
//! Nothing here reads a clock, touches a socket, a database or a script: time
//! comes in as `now` (unix milliseconds), randomness from a seed given at
//! construction, and everything the outside world must do comes back as
//! [`Effect`]s. That is what lets every row of the close-reason table be tested exhaustively.

pub mod backoff;
mod machine;
pub mod reason;

pub use machine::Machine;

pub use reason::{DefaultAction, Reason, ReasonKind};

/// The Evolution-compatible coarse status persisted next to the fine state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnectionStatus {
    Open,
    Connecting,
    Close,
}

impl ConnectionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionStatus::Open => "open",
            ConnectionStatus::Connecting => "connecting",
            ConnectionStatus::Close => "close",
        }
    }

    pub fn parse(s: &str) -> Option<ConnectionStatus> {
        match s {
            "open" => Some(ConnectionStatus::Open),
            "connecting" => Some(ConnectionStatus::Connecting),
            "close" => Some(ConnectionStatus::Close),
            _ => None,
        }
    }
}

/// The name of a [`State`] variant, as persisted in the `state` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StateName {
    Idle,
    Connecting,
    Pairing,
    Open,
    Reconnecting,
    Closed,
    LoggingOut,
    LoggedOut,
}

impl StateName {
    pub const ALL: [StateName; 8] = [
        StateName::Idle,
        StateName::Connecting,
        StateName::Pairing,
        StateName::Open,
        StateName::Reconnecting,
        StateName::Closed,
        StateName::LoggingOut,
        StateName::LoggedOut,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            StateName::Idle => "idle",
            StateName::Connecting => "connecting",
            StateName::Pairing => "pairing",
            StateName::Open => "open",
            StateName::Reconnecting => "reconnecting",
            StateName::Closed => "closed",
            StateName::LoggingOut => "logging_out",
            StateName::LoggedOut => "logged_out",
        }
    }

    pub fn parse(s: &str) -> Option<StateName> {
        StateName::ALL.into_iter().find(|n| n.as_str() == s)
    }

    pub fn connection_status(self) -> ConnectionStatus {
        match self {
            StateName::Open => ConnectionStatus::Open,
            StateName::Connecting | StateName::Pairing | StateName::Reconnecting => {
                ConnectionStatus::Connecting
            }
            StateName::Idle | StateName::Closed | StateName::LoggingOut | StateName::LoggedOut => {
                ConnectionStatus::Close
            }
        }
    }
}

/// One instance's persisted status: exactly what the `instances` row holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusRow {
    pub connection_status: ConnectionStatus,
    pub state: StateName,
    pub last_reason_code: Option<u16>,
    pub last_reason_kind: Option<ReasonKind>,
    /// The last reason's detail: the underlying cause (a DNS, refused or TLS
    /// error of a failed dial, the server's words), for people to read.
    pub last_reason_message: Option<String>,
    /// Unix milliseconds.
    pub last_change_at: u64,
    pub jid: Option<String>,
    pub push_name: Option<String>,
    /// Who logged out, while the row says `logging_out` / `logged_out`.
    pub logout_by: Option<LogoutBy>,
}

/// How a pairing code is meant to be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PairKind {
    Qr,
    PairCode,
}

impl PairKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PairKind::Qr => "qr",
            PairKind::PairCode => "pair_code",
        }
    }
}

/// Who asked for a logout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogoutBy {
    User,
    Server,
    Script,
}

impl LogoutBy {
    pub fn as_str(self) -> &'static str {
        match self {
            LogoutBy::User => "user",
            LogoutBy::Server => "server",
            LogoutBy::Script => "script",
        }
    }

    pub fn parse(s: &str) -> Option<LogoutBy> {
        match s {
            "user" => Some(LogoutBy::User),
            "server" => Some(LogoutBy::Server),
            "script" => Some(LogoutBy::Script),
            _ => None,
        }
    }
}

/// The lifecycle states (README.md, "Connection lifecycle").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Idle,
    Connecting {
        attempt: u32,
    },
    Pairing {
        code: String,
        kind: PairKind,
        /// Unix ms at which this code stops being valid.
        expires: u64,
    },
    Open {
        jid: Option<String>,
    },
    Reconnecting {
        attempt: u32,
        delay_ms: u64,
        reason: Reason,
        /// A script's `on_close` answer chose this, not the table.
        by_script: bool,
    },
    Closed {
        reason: Reason,
        /// Unix ms of an automatic retry (a temporary ban's expiry), if any.
        retry_at: Option<u64>,
        /// A script's `on_close` answer chose this, not the table.
        by_script: bool,
    },
    LoggingOut {
        by: LogoutBy,
    },
    LoggedOut {
        reason: Reason,
        by: LogoutBy,
    },
}

impl State {
    pub fn name(&self) -> StateName {
        match self {
            State::Idle => StateName::Idle,
            State::Connecting { .. } => StateName::Connecting,
            State::Pairing { .. } => StateName::Pairing,
            State::Open { .. } => StateName::Open,
            State::Reconnecting { .. } => StateName::Reconnecting,
            State::Closed { .. } => StateName::Closed,
            State::LoggingOut { .. } => StateName::LoggingOut,
            State::LoggedOut { .. } => StateName::LoggedOut,
        }
    }
}

/// What a script's `on_close` answered, already decoded from Lua.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseAnswer {
    /// nil, or no script answered (error, timeout, no hook): the table decides.
    Default,
    /// `false` / `{reconnect=false}`.
    Stay,
    /// `true` / a number / `{reconnect=true, delay_ms=}`; `None` = the default delay.
    Reconnect { delay_ms: Option<u64> },
}

/// Everything the outside world tells the machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A user asks to connect (start-up, `/connect`, the API).
    Connect,
    /// A user (or shutdown) asks to stop without logging out.
    Stop,
    /// The server handed out a pairing code (QR or phone code).
    PairingCode {
        code: String,
        kind: PairKind,
        expires_in_ms: u64,
    },
    /// The phone accepted the pairing; the server will now close with 515.
    PairSuccess { jid: Option<String> },
    /// The session is up. The account id may not be known yet.
    Opened {
        jid: Option<String>,
        push_name: Option<String>,
    },
    /// The account id (or push name) became known after opening.
    AccountId {
        jid: Option<String>,
        push_name: Option<String>,
    },
    /// The connection ended. `kind` None means: classify `code` here, where
    /// the machine knows whether it was pairing (408).
    Closed {
        code: Option<u16>,
        kind: Option<ReasonKind>,
        message: Option<String>,
        /// For temporary bans: how long until the ban expires.
        retry_after_ms: Option<u64>,
    },
    /// A user or script asks to log out. (A server logout is a `Closed` 401/403/406.)
    Logout { by: LogoutBy },
    /// The unlink and the transport close of a logout are done (or failed).
    LogoutDone,
    /// A timer the machine scheduled is due.
    TimerDue { token: u64 },
    /// A script's answer to an `on_close` that asked for one (`seq` from the hook call).
    CloseAnswer { seq: u64, answer: CloseAnswer },
}

/// The `on_close` argument (`r` in README.md's hook table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseInfo {
    pub reason: Reason,
    pub attempt: u32,
    pub will_reconnect: bool,
    pub delay_ms: Option<u64>,
}

/// Hooks the machine wants called, with their arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookCall {
    Qr {
        code: String,
        kind: PairKind,
        expires_in_ms: u64,
    },
    Open {
        jid: Option<String>,
        push_name: Option<String>,
    },
    /// `answer_seq` is set when the answer matters: feed it back as
    /// [`Input::CloseAnswer`] (always, even when no script answered).
    Close {
        info: CloseInfo,
        answer_seq: Option<u64>,
    },
    Logout {
        reason: Reason,
        by: LogoutBy,
    },
}

/// Everything the machine asks the outside world to do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Write the status row (before anything else of the same step).
    Persist(StatusRow),
    /// Dial the server; `attempt` is the backoff counter (see [`Machine`]).
    StartAttempt {
        attempt: u32,
    },
    ScheduleTimer {
        token: u64,
        delay_ms: u64,
    },
    CancelTimer {
        token: u64,
    },
    /// Stop handing inbound messages to scripts.
    StopInbound,
    /// Ask the server to unlink this device: best effort, with a timeout.
    Unlink,
    /// Close the transport; errors are ignored.
    CloseTransport,
    /// In one transaction: delete the session data and write this row.
    EndSession(StatusRow),
    Hook(HookCall),
    /// A state change worth showing (console lines, logs, events).
    Emit(Transition),
}

/// A printable state change: `Display` gives the console's `STATE key=value ...` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub state: State,
    pub at: u64,
}

impl std::fmt::Display for Transition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        fn reason(f: &mut std::fmt::Formatter<'_>, r: &Reason) -> std::fmt::Result {
            if let Some(code) = r.code {
                write!(f, " code={code}")?;
            }
            write!(f, " kind={}", r.kind)
        }
        fn by(f: &mut std::fmt::Formatter<'_>, by_script: bool) -> std::fmt::Result {
            if by_script {
                f.write_str(" by=script")
            } else {
                Ok(())
            }
        }
        f.write_str(self.state.name().as_str())?;
        match &self.state {
            State::Idle => Ok(()),
            State::Connecting { attempt } => write!(f, " attempt={attempt}"),
            State::Pairing {
                code,
                kind,
                expires,
            } => write!(
                f,
                " kind={} code={code} expires_in={}",
                kind.as_str(),
                expires.saturating_sub(self.at).div_ceil(1000)
            ),
            State::Open { jid } => match jid {
                Some(jid) => write!(f, " jid={jid}"),
                None => Ok(()),
            },
            State::Reconnecting {
                attempt,
                delay_ms,
                reason: r,
                by_script,
            } => {
                reason(f, r)?;
                write!(f, " attempt={attempt} delay_ms={delay_ms}")?;
                by(f, *by_script)
            }
            State::Closed {
                reason: r,
                retry_at,
                by_script,
            } => {
                reason(f, r)?;
                if let Some(at) = retry_at {
                    write!(f, " retry_in_ms={}", at.saturating_sub(self.at))?;
                }
                by(f, *by_script)
            }
            State::LoggingOut { by } => write!(f, " by={}", by.as_str()),
            State::LoggedOut { reason: r, by } => {
                reason(f, r)?;
                write!(f, " by={}", by.as_str())
            }
        }
    }
}

/// The tunables of `[reconnect]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub base_ms: u64,
    pub cap_ms: u64,
    /// Each failure multiplies the ceiling by this (1: no growth).
    pub factor: u32,
    /// An open connection that lasts this long resets the backoff.
    pub stable_ms: u64,
    /// Hard bound on automatic attempts in any 60 s window.
    pub max_per_minute: u32,
    /// More than this many closes within `flap_window_ms` jumps to the cap.
    pub flap_closes: u32,
    pub flap_window_ms: u64,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            base_ms: 1000,
            cap_ms: 60_000,
            factor: 2,
            stable_ms: 30_000,
            max_per_minute: 12,
            flap_closes: 5,
            flap_window_ms: 60_000,
        }
    }
}

/// The longest delay a script may ask for: longer answers are cut to a day.
pub const MAX_SCRIPT_DELAY_MS: u64 = 24 * 60 * 60 * 1000;

#[cfg(test)]
mod tests;
