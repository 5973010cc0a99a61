//! The cluster as the store records it: every server process says it is
//! alive (its member row, renewed on a heartbeat), and `GET /v1/cluster`
//! (`eflow cluster status`) shows the members, who holds which shard and
//! until when, and how far each consumer of the event stream is behind.
//!
//! The embedded default is a cluster of one: its process holds every shard.
//! Engines sharing a store take their fair share of the shards from the
//! members alive ([`crate::engine::ownership`]). Every process of a cluster
//! reads its clock set right by the store's ([`follow_store_clock`]), so
//! the expiries they write mean the same to all of them.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::clock::{Corrected, SharedClock};
use crate::engine::{HELD_FOREVER_MS, LEASE_EVERY, LEASE_TTL_MS};
use crate::store::{MemberRow, Store};

/// How often a process says it is alive.
pub const HEARTBEAT_EVERY: Duration = LEASE_EVERY;
/// How long a process counts as alive after it last said so: as long as a
/// lease, so a dead engine's share goes to the others as its leases lapse.
pub const MEMBER_TTL_MS: u64 = LEASE_TTL_MS;
/// Rows of processes that stopped saying they are alive are dropped after this.
const FORGET_AFTER_MS: u64 = 24 * 3_600_000;

/// How often a process of a cluster sets its clock right by the store's.
pub const CLOCK_EVERY: Duration = Duration::from_secs(10);
/// A measurement of the store's clock whose round trip took longer than
/// this is not used: its error is up to half the round trip, and leases
/// last [`LEASE_TTL_MS`].
const CLOCK_ROUND_TRIP_MAX_MS: u64 = 1_000;

/// Sets `clock` right by the store's: the store's time minus this machine's
/// at the middle of the quickest of three round trips. False when the store
/// keeps no clock (SQLite) or no round trip was quick enough.
pub async fn set_clock(store: &Store, clock: &Corrected) -> Result<bool, crate::store::Error> {
    let mut best: Option<(u64, i64)> = None;
    for _ in 0..3 {
        let before = clock.inner_ms();
        let Some(at) = store.clock_ms().await? else {
            return Ok(false);
        };
        let trip = clock.inner_ms().saturating_sub(before);
        let offset = at as i64 - (before + trip / 2) as i64;
        if best.is_none_or(|(quickest, _)| trip < quickest) {
            best = Some((trip, offset));
        }
    }
    let Some((trip, offset)) = best.filter(|(trip, _)| *trip <= CLOCK_ROUND_TRIP_MAX_MS) else {
        return Ok(false);
    };
    if (offset - clock.offset_ms()).abs() >= 1_000 {
        tracing::info!(
            offset_ms = offset,
            round_trip_ms = trip,
            "this machine's clock is off the store's; this process reads the store's time"
        );
    }
    clock.set_offset(offset);
    Ok(true)
}

/// Sets `clock` right by the store's every [`CLOCK_EVERY`] until `stop`: a
/// machine's clock that drifts or is stepped is followed.
pub async fn follow_store_clock(store: Store, clock: Arc<Corrected>, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(CLOCK_EVERY) => {}
        }
        if let Err(e) = set_clock(&store, &clock).await {
            tracing::warn!(error = %e, "cannot read the store's clock; trying again");
        }
    }
}

/// A name for this process that no other process of the cluster has.
pub fn member_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "eflow".to_string());
    let unique = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}-{}-{}", std::process::id(), &unique[..6])
}

/// Says `id` (running `roles`) is alive every [`HEARTBEAT_EVERY`] until
/// `stop`, then leaves.
pub async fn heartbeat(
    store: Store,
    clock: SharedClock,
    id: String,
    roles: String,
    stop: CancellationToken,
) {
    let started_at = clock.now_ms();
    loop {
        let now = clock.now_ms();
        let row = MemberRow {
            id: id.clone(),
            roles: roles.clone(),
            started_at,
            expires_at: now + MEMBER_TTL_MS,
        };
        if let Err(e) = store.heartbeat(&row).await {
            tracing::warn!(error = %e, "cannot record that this process is alive; trying again");
        }
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(HEARTBEAT_EVERY) => {}
        }
    }
    let before = clock.now_ms().saturating_sub(FORGET_AFTER_MS);
    if let Err(e) = store.leave(&id, before).await {
        tracing::debug!(error = %e, "cannot record that this process stopped");
    }
}

/// The lease of the history's one active consumer (and sweeper), among the
/// processes with the history role: beside the shards', above any shard.
pub const HISTORY_LEASE: u32 = u32::MAX;

/// Runs `task` in one process at a time among those that call this with the
/// same `lease`: the one holding the lease runs it, renewing the lease every
/// [`LEASE_EVERY`]; the others stand by and take over once it gives the
/// lease up (at its stop) or lets it lapse (a crash). `alone`: this process
/// is alone on its store (the embedded server) and takes the lease for good.
pub async fn one_active<F, Fut>(
    lease: u32,
    store: Store,
    clock: SharedClock,
    me: String,
    alone: bool,
    stop: CancellationToken,
    task: F,
) where
    F: Fn(CancellationToken) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    if alone {
        match store.acquire_lease(lease, &me, HELD_FOREVER_MS).await {
            Ok(_) => task(stop).await,
            Err(e) => {
                tracing::error!(lease, error = %e, "cannot take the lease of a task this process runs alone")
            }
        }
        return;
    }
    loop {
        // Standing by.
        let token = loop {
            let now = clock.now_ms();
            match store.try_lease(lease, &me, now, now + LEASE_TTL_MS).await {
                Ok(Some(t)) => break t,
                Ok(None) => {}
                Err(e) => tracing::warn!(lease, error = %e, "cannot read a lease; trying again"),
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(LEASE_EVERY) => {}
            }
        };
        tracing::info!(lease, "this process is now the active one");
        let child = stop.child_token();
        let mut running = tokio::spawn(task(child.clone()));
        let mut renewed = clock.now_ms();
        loop {
            tokio::select! {
                _ = &mut running => break,
                () = tokio::time::sleep(LEASE_EVERY) => {}
            }
            let now = clock.now_ms();
            match store.try_lease(lease, &me, now, now + LEASE_TTL_MS).await {
                Ok(Some(t)) if t == token => renewed = now,
                Ok(_) => {
                    tracing::warn!(lease, "another process took the lease over: standing by");
                    child.cancel();
                }
                // Unsure whether it still holds the lease: stop before it lapses.
                Err(e)
                    if now.saturating_sub(renewed) + LEASE_EVERY.as_millis() as u64
                        >= LEASE_TTL_MS =>
                {
                    tracing::warn!(lease, error = %e, "cannot renew the lease: standing by");
                    child.cancel();
                }
                Err(e) => tracing::warn!(lease, error = %e, "cannot renew the lease; trying again"),
            }
            if child.is_cancelled() {
                let _ = running.await;
                break;
            }
        }
        if stop.is_cancelled() {
            if let Err(e) = store.release_lease(lease, &me, token).await {
                tracing::debug!(lease, error = %e, "cannot give the lease up; it will lapse");
            }
            return;
        }
    }
}
