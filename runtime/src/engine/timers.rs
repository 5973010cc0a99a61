//! Timer loaders: one per partition, turning due timer rows into deliveries.
//!
//! A loader claims the rows of its partition that fall due within the next
//! [`LOOKAHEAD_MS`] (a claim is a time: after it passes, a crashed loader's
//! rows are loaded again), waits for each in memory and delivers it. The row is
//! deleted by the transaction that applies its event. Only the next few seconds
//! of timers are ever in memory, however many runs wait.

use std::sync::Arc;
use std::time::Duration;

use eflow_core::Event;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::route::CLAIM_TTL_MS;
use super::{Delivery, Engine, Input};
use crate::clock::SharedClock;

pub const LOOKAHEAD_MS: u64 = 1_000;
/// The longest a loader sleeps without looking.
const IDLE_MS: u64 = 1_000;
const CLAIM_LIMIT: u32 = 2_000;

pub struct Loader {
    partition: u32,
    engine: Engine,
    clock: SharedClock,
    changed: Arc<Notify>,
}

impl Loader {
    pub fn new(partition: u32, engine: Engine, clock: SharedClock, changed: Arc<Notify>) -> Self {
        Self {
            partition,
            engine,
            clock,
            changed,
        }
    }

    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            let now = self.clock.now_ms();
            let claimed = self
                .engine
                .store()
                .claim_timers(
                    self.partition,
                    now,
                    now + LOOKAHEAD_MS,
                    now + LOOKAHEAD_MS + CLAIM_TTL_MS,
                    CLAIM_LIMIT,
                )
                .await;
            let full = match claimed {
                Ok(rows) => {
                    let full = rows.len() as u32 == CLAIM_LIMIT;
                    for t in rows {
                        let event: Event = match serde_json::from_slice(&t.event) {
                            Ok(e) => e,
                            Err(e) => {
                                tracing::error!(run = %t.run, timer = %t.timer, error = %e, "unreadable timer row");
                                continue;
                            }
                        };
                        let delivery = Input::Deliver(Delivery {
                            run: t.run.clone(),
                            event,
                            timer: Some(t.timer),
                            outbox: None,
                            reply: None,
                        });
                        if t.due_at <= now {
                            let _ = self.engine.send(&t.run, delivery).await;
                        } else {
                            let engine = self.engine.clone();
                            let wait = self.clock.sleep_until(t.due_at);
                            tokio::spawn(async move {
                                wait.await;
                                let _ = engine.send(&t.run, delivery).await;
                            });
                        }
                    }
                    full
                }
                Err(e) => {
                    tracing::warn!(partition = self.partition, error = %e, "could not load timers");
                    false
                }
            };
            if full {
                continue;
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = self.changed.notified() => {
                    // Let a burst of new timers land before looking.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                // Nothing new falls due before the clock moves on.
                () = self.clock.sleep_until(now + IDLE_MS) => {}
            }
        }
    }
}
