//! The wall clock `bot.cron` runs on, injectable so tests can move time
//! instead of waiting for it.
//!
//! Cron times are wall clock times, so the system clock is read as
//! `SystemTime`, not a monotonic instant, and a long sleep is taken in
//! short steps that look at the wall clock again: after a suspend or a
//! clock change a run is not left waiting for a monotonic timer that no
//! longer means anything.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// The longest a system-clock sleep goes without reading the clock again.
const STEP: Duration = Duration::from_secs(30);

/// A source of wall clock time in Unix milliseconds.
pub trait WallClock: Send + Sync + 'static {
    fn now_ms(&self) -> u64;
    /// Resolves once `now_ms() >= at_ms` (at once if it already is).
    fn sleep_until(&self, at_ms: u64) -> BoxFuture<()>;
}

/// A cheap handle on a [`WallClock`]; the system's by default.
#[derive(Clone)]
pub struct Clock(Arc<dyn WallClock>);

impl Clock {
    pub fn system() -> Clock {
        Clock(Arc::new(SystemClock))
    }

    pub fn new(source: Arc<dyn WallClock>) -> Clock {
        Clock(source)
    }

    pub fn now_ms(&self) -> u64 {
        self.0.now_ms()
    }

    pub fn sleep_until(&self, at_ms: u64) -> BoxFuture<()> {
        self.0.sleep_until(at_ms)
    }
}

impl Default for Clock {
    fn default() -> Clock {
        Clock::system()
    }
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Clock({})", self.now_ms())
    }
}

/// `SystemTime`, slept on with tokio's timer in steps.
pub struct SystemClock;

fn system_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl WallClock for SystemClock {
    fn now_ms(&self) -> u64 {
        system_now_ms()
    }

    fn sleep_until(&self, at_ms: u64) -> BoxFuture<()> {
        Box::pin(async move {
            loop {
                let now = system_now_ms();
                if now >= at_ms {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(at_ms - now).min(STEP)).await;
            }
        })
    }
}

/// A clock that moves only when told to (tests). Sleepers on any runtime
/// wake when it passes their time.
#[derive(Clone)]
pub struct ManualClock {
    now: Arc<watch::Sender<u64>>,
}

impl ManualClock {
    pub fn new(start_ms: u64) -> ManualClock {
        ManualClock {
            now: Arc::new(watch::Sender::new(start_ms)),
        }
    }

    /// Sets the time; it may go backwards (a clock being corrected).
    pub fn set(&self, ms: u64) {
        self.now.send_replace(ms);
    }

    pub fn advance(&self, d: Duration) {
        let add = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        self.now.send_modify(|t| *t = t.saturating_add(add));
    }

    pub fn clock(&self) -> Clock {
        Clock(Arc::new(self.clone()))
    }
}

impl WallClock for ManualClock {
    fn now_ms(&self) -> u64 {
        *self.now.borrow()
    }

    fn sleep_until(&self, at_ms: u64) -> BoxFuture<()> {
        let mut rx = self.now.subscribe();
        Box::pin(async move {
            // The sender lives as long as any clone of the clock; if it is
            // gone, time stands still for good.
            if rx.wait_for(|t| *t >= at_ms).await.is_err() {
                std::future::pending::<()>().await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_manual_sleeper_wakes_when_the_clock_passes_its_time() {
        let m = ManualClock::new(1_000);
        let c = m.clock();
        assert_eq!(c.now_ms(), 1_000);
        let sleeper = tokio::spawn(c.sleep_until(5_000));
        m.advance(Duration::from_millis(3_000));
        tokio::task::yield_now().await;
        assert!(!sleeper.is_finished());
        m.set(5_000);
        tokio::time::timeout(Duration::from_secs(10), sleeper)
            .await
            .unwrap()
            .unwrap();
        // Already past: at once.
        c.sleep_until(10).await;
    }

    #[tokio::test]
    async fn the_system_clock_sleeps_until_the_wall_clock_is_there() {
        let c = Clock::system();
        let at = c.now_ms() + 30;
        c.sleep_until(at).await;
        assert!(c.now_ms() >= at);
    }
}
