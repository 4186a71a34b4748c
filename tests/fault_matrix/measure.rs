//! What the matrix measures rather than takes from the machine: when each
//! dial reached the mock, and from that, the timing class of a close.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use moonwire::lifecycle::{Settings, State};
use tokio::sync::Notify;

use crate::support::MockServer;
use crate::support::rig::Rig;

/// How much later than its declared delay a dial may reach the mock: a
/// dial builds a client, connects and upgrades, on a machine that may be
/// loaded (a build beside the tests).
pub const MARGIN: Duration = Duration::from_secs(3);

/// Dials that reached the mock: accepted or refused.
pub fn dials(server: &MockServer) -> usize {
    server.connections() + server.refused()
}

/// When each dial reached the mock, stamped by a task woken by the mock's
/// own change notification.
pub struct DialLog {
    at: Arc<Mutex<Vec<Instant>>>,
    changed: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl DialLog {
    pub fn watch(server: &Arc<MockServer>) -> DialLog {
        let at = Arc::new(Mutex::new(Vec::new()));
        let changed = Arc::new(Notify::new());
        let task = {
            let (server, at, changed) = (server.clone(), at.clone(), changed.clone());
            tokio::spawn(async move {
                let mut seen = dials(&server);
                loop {
                    server
                        .wait_until(Duration::from_secs(3600), "a dial", |s| dials(s) > seen)
                        .await;
                    let now = Instant::now();
                    let n = dials(&server);
                    at.lock()
                        .unwrap()
                        .extend(std::iter::repeat_n(now, n - seen));
                    seen = n;
                    changed.notify_waiters();
                }
            })
        };
        DialLog { at, changed, task }
    }

    /// Milliseconds from `t` to the first dial after it, waiting until
    /// `within` has passed since `t`; `None` if none came.
    pub async fn first_after(&self, t: Instant, within: Duration) -> Option<u64> {
        let deadline = t + within;
        loop {
            let changed = self.changed.notified();
            if let Some(d) = self.at.lock().unwrap().iter().find(|d| **d > t) {
                return Some(d.duration_since(t).as_millis() as u64);
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            let _ = tokio::time::timeout((deadline - now).min(Duration::from_millis(50)), changed)
                .await;
        }
    }

    /// Dials after `t`.
    pub fn count_after(&self, t: Instant) -> usize {
        self.at.lock().unwrap().iter().filter(|d| **d > t).count()
    }
}

impl Drop for DialLog {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The timing class of state `i` (the first after a fault), measured: the
/// next dial must reach the mock no sooner than the delay the state
/// declared and within [`MARGIN`] after it. `never` means no dial came
/// within `quiet`. A class that does not hold reads e.g.
/// `backoff(dialled after 2 ms, before its 150 ms)`, so a host that ignored
/// its timers, or never dialled, fails the case.
pub async fn timing(
    rig: &Rig,
    dials: &DialLog,
    i: usize,
    backoff: &Settings,
    quiet: Duration,
) -> String {
    let shown = rig.states.time(i);
    let state = rig.states.since(i).into_iter().next();
    let Some(declared) = rig.states.declared_delay(i) else {
        return match dials.first_after(shown, quiet).await {
            None => "never".into(),
            Some(ms) => format!("never(but dialled after {ms} ms)"),
        };
    };
    let class = match state {
        Some(State::Connecting { .. }) => "now",
        // Plain backoff draws from [0, base * 2^(attempt-1)]; the longer
        // one (rate limits) from above that.
        Some(State::Reconnecting { attempt, .. }) => {
            let ceiling = backoff
                .base_ms
                .saturating_mul(1 << attempt.saturating_sub(1).min(30))
                .min(backoff.cap_ms);
            if declared > ceiling {
                "long_backoff"
            } else {
                "backoff"
            }
        }
        _ => "at_ban_expiry",
    };
    let within = Duration::from_millis(declared) + MARGIN;
    match dials.first_after(shown, within).await {
        None => format!("{class}(no dial within {declared} ms + {MARGIN:?})"),
        // The host's timer is armed after the state is shown: a dial that
        // honours it is never earlier (1 ms for clock granularity).
        Some(ms) if ms + 1 < declared => {
            format!("{class}(dialled after {ms} ms, before its {declared} ms)")
        }
        Some(_) => class.into(),
    }
}

/// Waits out `window` unless a dial comes first (then at once); answers the
/// dials in it. For what must not happen, which only a window can show.
pub async fn quiet_dials(server: &MockServer, window: Duration) -> usize {
    let before = dials(server);
    let _ = tokio::time::timeout(
        window,
        server.wait_until(window * 4, "a dial", |s| dials(s) > before),
    )
    .await;
    dials(server) - before
}
