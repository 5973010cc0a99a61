//! The one place the runtime reads the time. Everything else gets `now` from a
//! [`Clock`], and waits for a time to come through it, so tests can drive time
//! by hand ([`ManualClock`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

/// A wait for a time to come, from [`Clock::sleep_until`].
pub type Sleep = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Milliseconds since the Unix epoch.
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now_ms(&self) -> u64;

    /// Resolves once this clock reads `at_ms` or later.
    fn sleep_until(&self, at_ms: u64) -> Sleep;
}

/// The machine's clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)] // the one allowed reading of the clock
    fn now_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }

    fn sleep_until(&self, at_ms: u64) -> Sleep {
        let wait = at_ms.saturating_sub(self.now_ms());
        Box::pin(tokio::time::sleep(Duration::from_millis(wait)))
    }
}

/// A clock that moves only when told to, for tests. Clones share one time;
/// moving it wakes every [`Clock::sleep_until`] whose time has come.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<watch::Sender<u64>>);

impl ManualClock {
    pub fn new(now_ms: u64) -> Self {
        Self(Arc::new(watch::Sender::new(now_ms)))
    }
    pub fn advance(&self, ms: u64) {
        self.0.send_modify(|t| *t += ms);
    }
    pub fn set(&self, ms: u64) {
        self.0.send_replace(ms);
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new(0)
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        *self.0.borrow()
    }

    fn sleep_until(&self, at_ms: u64) -> Sleep {
        let mut rx = self.0.subscribe();
        Box::pin(async move {
            // The sender lives as long as any clone of the clock; if the last
            // one is gone, nobody can move the time any more: wait forever.
            if rx.wait_for(|t| *t >= at_ms).await.is_err() {
                std::future::pending::<()>().await;
            }
        })
    }
}

pub type SharedClock = Arc<dyn Clock>;

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_manual_sleep_ends_when_the_clock_is_moved_past_it() {
        let clock = ManualClock::new(1_000);
        let mut sleep = clock.sleep_until(1_500);
        let woke = tokio::time::timeout(Duration::from_millis(20), &mut sleep).await;
        assert!(woke.is_err(), "the time has not come");
        clock.advance(499);
        let woke = tokio::time::timeout(Duration::from_millis(20), &mut sleep).await;
        assert!(woke.is_err(), "one millisecond early");
        clock.advance(1);
        tokio::time::timeout(Duration::from_secs(5), sleep)
            .await
            .expect("woken once the clock reads the time");
        // A time already past resolves at once.
        tokio::time::timeout(Duration::from_secs(5), clock.sleep_until(10))
            .await
            .expect("a past time");
    }
}
