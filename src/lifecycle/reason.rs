//! Close reasons and what moonwire does about each one by default (the
//! table in README.md, "Connection lifecycle").

use std::fmt;

/// Why a connection ended. `code` is the server's (or a synthetic) status code;
/// `kind` is what that code means in the state it arrived in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reason {
    pub code: Option<u16>,
    pub kind: ReasonKind,
    pub message: Option<String>,
}

/// The classification table's rows, plus the host's own reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReasonKind {
    RestartRequired,
    ConnectionClosed,
    ConnectionLost,
    QrTimeout,
    BadSession,
    ServiceUnavailable,
    RateLimited,
    Replaced,
    TempBanned,
    ClientOutdated,
    LoggedOut,
    Forbidden,
    UnknownLogout,
    TransportError,
    /// A code the table does not know: treated like a plain closed connection.
    Unknown,
    /// A user (or the host shutting down) stopped the instance.
    Stopped,
    /// The process died while the row said open/connecting; found at start-up.
    Interrupted,
}

/// What the table says to do after a close, before any script has a say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultAction {
    /// Reconnect at once; not a failure (515 after pairing).
    ReconnectNow,
    /// Reconnect after the normal backoff.
    Backoff,
    /// Reconnect after a longer backoff (rate limited).
    LongBackoff,
    /// Stay closed until a user asks again.
    Stay,
    /// Stay closed until the ban expires, then reconnect.
    UntilBanExpires,
    /// The session is gone: delete its data, end in `logged_out`.
    LogOut,
}

impl ReasonKind {
    pub const ALL: [ReasonKind; 17] = [
        ReasonKind::RestartRequired,
        ReasonKind::ConnectionClosed,
        ReasonKind::ConnectionLost,
        ReasonKind::QrTimeout,
        ReasonKind::BadSession,
        ReasonKind::ServiceUnavailable,
        ReasonKind::RateLimited,
        ReasonKind::Replaced,
        ReasonKind::TempBanned,
        ReasonKind::ClientOutdated,
        ReasonKind::LoggedOut,
        ReasonKind::Forbidden,
        ReasonKind::UnknownLogout,
        ReasonKind::TransportError,
        ReasonKind::Unknown,
        ReasonKind::Stopped,
        ReasonKind::Interrupted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ReasonKind::RestartRequired => "restart_required",
            ReasonKind::ConnectionClosed => "connection_closed",
            ReasonKind::ConnectionLost => "connection_lost",
            ReasonKind::QrTimeout => "qr_timeout",
            ReasonKind::BadSession => "bad_session",
            ReasonKind::ServiceUnavailable => "service_unavailable",
            ReasonKind::RateLimited => "rate_limited",
            ReasonKind::Replaced => "replaced",
            ReasonKind::TempBanned => "temp_banned",
            ReasonKind::ClientOutdated => "client_outdated",
            ReasonKind::LoggedOut => "logged_out",
            ReasonKind::Forbidden => "forbidden",
            ReasonKind::UnknownLogout => "unknown_logout",
            ReasonKind::TransportError => "transport_error",
            ReasonKind::Unknown => "unknown",
            ReasonKind::Stopped => "stopped",
            ReasonKind::Interrupted => "interrupted",
        }
    }

    pub fn parse(s: &str) -> Option<ReasonKind> {
        ReasonKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The conventional code for a kind, used when a close arrives without one.
    pub fn default_code(self) -> Option<u16> {
        Some(match self {
            ReasonKind::RestartRequired => 515,
            ReasonKind::ConnectionClosed => 428,
            ReasonKind::ConnectionLost | ReasonKind::QrTimeout => 408,
            ReasonKind::BadSession => 500,
            ReasonKind::ServiceUnavailable => 503,
            ReasonKind::RateLimited => 429,
            ReasonKind::Replaced => 440,
            ReasonKind::TempBanned => 402,
            ReasonKind::ClientOutdated => 405,
            ReasonKind::LoggedOut => 401,
            ReasonKind::Forbidden => 403,
            ReasonKind::UnknownLogout => 406,
            ReasonKind::TransportError
            | ReasonKind::Unknown
            | ReasonKind::Stopped
            | ReasonKind::Interrupted => return None,
        })
    }

    /// The table's "default" column.
    pub fn default_action(self) -> DefaultAction {
        match self {
            ReasonKind::RestartRequired => DefaultAction::ReconnectNow,
            ReasonKind::ConnectionClosed
            | ReasonKind::ConnectionLost
            | ReasonKind::BadSession
            | ReasonKind::ServiceUnavailable
            | ReasonKind::TransportError
            | ReasonKind::Unknown
            | ReasonKind::Interrupted => DefaultAction::Backoff,
            ReasonKind::RateLimited => DefaultAction::LongBackoff,
            ReasonKind::QrTimeout
            | ReasonKind::Replaced
            | ReasonKind::ClientOutdated
            | ReasonKind::Stopped => DefaultAction::Stay,
            ReasonKind::TempBanned => DefaultAction::UntilBanExpires,
            ReasonKind::LoggedOut | ReasonKind::Forbidden | ReasonKind::UnknownLogout => {
                DefaultAction::LogOut
            }
        }
    }

    /// The table's "override" column: may a script's `on_close` answer change it?
    pub fn overridable(self) -> bool {
        !matches!(
            self,
            ReasonKind::RestartRequired
                | ReasonKind::ClientOutdated
                | ReasonKind::LoggedOut
                | ReasonKind::Forbidden
                | ReasonKind::UnknownLogout
                | ReasonKind::Stopped
        )
    }

    /// Whether this close counts towards the backoff exponent.
    pub fn is_failure(self) -> bool {
        !matches!(self, ReasonKind::RestartRequired | ReasonKind::Stopped)
    }
}

impl fmt::Display for ReasonKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Reason {
    pub fn new(code: Option<u16>, kind: ReasonKind) -> Reason {
        Reason {
            code,
            kind,
            message: None,
        }
    }

    pub fn with_message(mut self, message: impl Into<String>) -> Reason {
        self.message = Some(message.into());
        self
    }

    /// Classifies a server code. `pairing` matters for 408: while pairing it
    /// means the QR codes ran out, on an established session a lost connection.
    pub fn classify(code: u16, pairing: bool) -> ReasonKind {
        match code {
            515 => ReasonKind::RestartRequired,
            428 => ReasonKind::ConnectionClosed,
            408 if pairing => ReasonKind::QrTimeout,
            408 => ReasonKind::ConnectionLost,
            500 => ReasonKind::BadSession,
            503 => ReasonKind::ServiceUnavailable,
            429 => ReasonKind::RateLimited,
            440 => ReasonKind::Replaced,
            402 => ReasonKind::TempBanned,
            405 => ReasonKind::ClientOutdated,
            401 => ReasonKind::LoggedOut,
            403 => ReasonKind::Forbidden,
            406 => ReasonKind::UnknownLogout,
            _ => ReasonKind::Unknown,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_through_their_names() {
        for k in ReasonKind::ALL {
            assert_eq!(ReasonKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(ReasonKind::parse("nope"), None);
    }

    #[test]
    fn codes_of_the_table_classify_back_to_their_kind() {
        for k in ReasonKind::ALL {
            if let Some(code) = k.default_code() {
                let pairing = k == ReasonKind::QrTimeout;
                assert_eq!(Reason::classify(code, pairing), k, "{code}");
            }
        }
        assert_eq!(Reason::classify(408, true), ReasonKind::QrTimeout);
        assert_eq!(Reason::classify(408, false), ReasonKind::ConnectionLost);
        assert_eq!(Reason::classify(999, false), ReasonKind::Unknown);
    }
}
