//! Invocations of `http` bindings with a `batch_url`, sent many to a request.
//!
//! Each binding (and tenant: the egress policy is the tenant's) has a lane.
//! An invocation joins its lane's queue; when fewer than [`IN_FLIGHT`]
//! requests of the lane are out, it goes at once with whatever else waits
//! (up to [`MAX_BATCH`]), so a lone invocation is never held back to fill a
//! batch, and under load the batches grow by themselves while requests are
//! out. Each invocation's caller awaits its own result: the outbox row is
//! done with, or retried, one invocation at a time, as without batches.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use eflow_core::Event;
use eflow_ir::connector::HttpConfig;
use tokio::sync::oneshot;

use crate::connectors::http::{self, Prepared};
use crate::egress::Way;

/// The most invocations in one request.
pub const MAX_BATCH: usize = 256;
/// The most requests of one lane out at once.
pub const IN_FLIGHT: usize = 4;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Lane {
    tenant: String,
    config: HttpConfig,
}

type Waiting = (Prepared, oneshot::Sender<Option<Event>>);

#[derive(Default)]
struct Queue {
    waiting: Vec<Waiting>,
    in_flight: usize,
}

/// The lanes of one executor.
#[derive(Default)]
pub struct Batches {
    lanes: Mutex<HashMap<Lane, Queue>>,
}

impl Batches {
    fn lanes(&self) -> MutexGuard<'_, HashMap<Lane, Queue>> {
        self.lanes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends `item` to the binding's `batch_url` with others of its lane;
    /// its result as [`http::invoke`] gives it. `None` from the channel
    /// (the request's task is gone: the process is stopping) is `Err`.
    pub async fn invoke(
        self: &Arc<Self>,
        way: Way,
        tenant: &str,
        config: &HttpConfig,
        item: Prepared,
    ) -> Result<Option<Event>, oneshot::error::RecvError> {
        let (tx, rx) = oneshot::channel();
        let lane = Lane {
            tenant: tenant.to_string(),
            config: config.clone(),
        };
        let first = {
            let mut lanes = self.lanes();
            let queue = lanes.entry(lane.clone()).or_default();
            queue.waiting.push((item, tx));
            (queue.in_flight < IN_FLIGHT).then(|| {
                queue.in_flight += 1;
                take(queue)
            })
        };
        if let Some(batch) = first {
            tokio::spawn(self.clone().send(lane, way, batch));
        }
        rx.await
    }

    /// Sends batches of the lane until none waits.
    async fn send(self: Arc<Self>, lane: Lane, way: Way, mut batch: Vec<Waiting>) {
        let Some(url) = lane.config.batch_url.clone() else {
            return;
        };
        loop {
            let (items, answers): (Vec<Prepared>, Vec<_>) = batch.into_iter().unzip();
            let events = http::invoke_batch(&way, &lane.config, &url, &items).await;
            for (answer, event) in answers.into_iter().zip(events) {
                let _ = answer.send(event);
            }
            let mut lanes = self.lanes();
            let Some(queue) = lanes.get_mut(&lane) else {
                return;
            };
            if queue.waiting.is_empty() {
                queue.in_flight -= 1;
                if queue.in_flight == 0 {
                    lanes.remove(&lane);
                }
                return;
            }
            batch = take(queue);
        }
    }
}

/// The oldest waiting invocations, up to a batch.
fn take(queue: &mut Queue) -> Vec<Waiting> {
    let n = queue.waiting.len().min(MAX_BATCH);
    queue.waiting.drain(..n).collect()
}
