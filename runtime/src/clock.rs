//! The one place the runtime reads the time. Everything else gets `now` from a
//! [`Clock`], and waits for a time to come through it, so tests can drive time
//! by hand ([`ManualClock`]). The processes of a cluster read their machine's
//! clock set right by their store's ([`Corrected`]), so they agree on the
//! time whatever their machines' clocks say.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use tokio::sync::watch;

/// A wait for a time to come, from [`Clock::sleep_until`].
pub type Sleep = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Milliseconds since the Unix epoch.
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now_ms(&self) -> u64;

    /// Resolves once this clock reads `at_ms` or later.
    fn sleep_until(&self, at_ms: u64) -> Sleep;

    /// Whether this is the machine's own clock, which a cluster's process
    /// sets right by its store's ([`Corrected`]); a clock a test moves by
    /// hand is left as it is.
    fn is_machine(&self) -> bool {
        false
    }
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

    fn is_machine(&self) -> bool {
        true
    }
}

/// A clock set right by another: it reads `inner` plus an offset, measured
/// against a reference clock and set again from time to time
/// ([`crate::cluster::follow_store_clock`]: the cluster's PostgreSQL). The
/// processes of a cluster judge leases, members, claims and timers by the
/// times they write into the store and read back; each reading its own
/// machine's clock, a process 30 s ahead would find every other's lease
/// expired and take its shards, and fire timers written elsewhere 30 s
/// early. Set right by one reference, they agree to within a round trip.
#[derive(Debug)]
pub struct Corrected {
    inner: SharedClock,
    offset_ms: AtomicI64,
}

impl Corrected {
    pub fn new(inner: SharedClock) -> Self {
        Self {
            inner,
            offset_ms: AtomicI64::new(0),
        }
    }

    /// The uncorrected time, to measure the offset against.
    pub fn inner_ms(&self) -> u64 {
        self.inner.now_ms()
    }

    /// From now on, read `inner` plus `offset_ms`.
    pub fn set_offset(&self, offset_ms: i64) {
        self.offset_ms.store(offset_ms, Ordering::Relaxed);
    }

    pub fn offset_ms(&self) -> i64 {
        self.offset_ms.load(Ordering::Relaxed)
    }

    fn shift(&self, ms: u64, by: i64) -> u64 {
        ms.saturating_add_signed(by)
    }
}

impl Clock for Corrected {
    fn now_ms(&self) -> u64 {
        self.shift(self.inner.now_ms(), self.offset_ms())
    }

    fn sleep_until(&self, at_ms: u64) -> Sleep {
        self.inner.sleep_until(self.shift(at_ms, -self.offset_ms()))
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

    #[tokio::test]
    async fn a_corrected_clock_reads_and_waits_by_the_reference() {
        // The machine's clock is 30 s behind the reference.
        let machine = ManualClock::new(100_000);
        let clock = Corrected::new(Arc::new(machine.clone()));
        assert_eq!(clock.now_ms(), 100_000, "no offset before one is measured");
        clock.set_offset(30_000);
        assert_eq!((clock.now_ms(), clock.inner_ms()), (130_000, 100_000));
        // A time by the reference comes when the machine's clock reads it
        // less the offset.
        let mut sleep = clock.sleep_until(130_500);
        machine.advance(499);
        let woke = tokio::time::timeout(Duration::from_millis(20), &mut sleep).await;
        assert!(woke.is_err(), "one millisecond early");
        machine.advance(1);
        tokio::time::timeout(Duration::from_secs(5), sleep)
            .await
            .expect("woken at the reference's time");
        // Ahead instead: the offset is negative.
        clock.set_offset(-30_000);
        assert_eq!(clock.now_ms(), 70_500);
        assert!(!clock.is_machine() && SystemClock.is_machine());
    }
}
