//! The cluster as the store records it: every server process says it is
//! alive (its member row, renewed on a heartbeat), and `GET /v1/cluster`
//! (`eflow cluster status`) shows the members, who holds which shard and
//! until when, and how far each consumer of the event stream is behind.
//!
//! The embedded default is a cluster of one: its process holds every shard.
//! Engines sharing a store take their fair share of the shards from the
//! members alive ([`crate::engine::ownership`]).

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::clock::SharedClock;
use crate::store::{MemberRow, Store};

/// How often a process says it is alive.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);
/// How long a process counts as alive after it last said so.
pub const MEMBER_TTL_MS: u64 = 15_000;
/// Rows of processes that stopped saying they are alive are dropped after this.
const FORGET_AFTER_MS: u64 = 24 * 3_600_000;

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
