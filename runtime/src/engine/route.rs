//! Where each effect of a transition goes: into the same transaction (timers,
//! approvals, simulated completions), or into the outbox for the executor
//! (calls to remote systems, deliveries to other runs).

use eflow_core::validate::FlowRef;
use eflow_core::{Effect, EffectKind, Event, EventKind, Parent, StepError, slot_id, step_label};
use eflow_ir::connector::{Connector, HttpConfig, RegistryConfig};
use eflow_ir::{StepKind, Type};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{Deployed, Engine, Finished, stored_json};
use crate::connectors::{self, Attempt, approval, sim};
use crate::store::{ApprovalClose, Commit, ResultWrite, RunMeta, TimerWrite, ValueWrite};

/// Due work this close is delivered by the worker itself, from memory; the
/// timer row stays (claimed) in case the process dies first.
pub const SHORT_MS: u64 = 2_000;
/// How long past its due time a self-delivered timer stays claimed.
pub const CLAIM_TTL_MS: u64 = 30_000;

/// What a worker does once its batch is committed.
#[derive(Debug)]
pub enum After {
    /// Deliver `event` to `run` at `due_at` from memory.
    Inject {
        run: String,
        timer: String,
        due_at: u64,
        event: Event,
    },
    Dispatch(Outbound),
    Finished(Finished),
    /// A timer row a loader must learn about.
    TimerSet {
        partition: u32,
    },
}

/// An outbox row for the executor.
#[derive(Debug, Clone)]
pub struct Outbound {
    pub pos: i64,
    pub run: String,
    pub item: OutboxItem,
}

/// What the executor carries out; stored as JSON in the outbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OutboxItem {
    /// Call a remote system (`http`) or the registry for an attempt.
    Invoke {
        tenant: String,
        bundle: String,
        /// Stored as the binding's `connector` and `config` fields.
        #[serde(flatten)]
        connector: Outgoing,
        node: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        index: Option<u32>,
        attempt: u32,
        contract: String,
        kind: StepKind,
        inputs: Map<String, Value>,
        key: String,
    },
    /// Create and start a subflow child.
    Create {
        meta: RunMeta,
        flow: String,
        parent: Parent,
        input: Map<String, Value>,
    },
    /// Deliver an event to another run.
    Deliver { run: String, event: Event },
    /// Tell a remote system (`http` with a `cancel_url`) that an attempt is
    /// no longer wanted. Best effort: tried a few times, then dropped.
    Cancel {
        tenant: String,
        /// Stored as the binding's `config`.
        #[serde(rename = "config")]
        http: HttpConfig,
        node: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        index: Option<u32>,
        attempt: u32,
    },
}

/// The connectors whose invocations go through the outbox; the others
/// (`sim`, `approval`) are rows written with the transition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "Connector", into = "Connector")]
pub enum Outgoing {
    Http(HttpConfig),
    Registry(RegistryConfig),
}

impl From<Outgoing> for Connector {
    fn from(o: Outgoing) -> Self {
        match o {
            Outgoing::Http(c) => Connector::Http(c),
            Outgoing::Registry(c) => Connector::Registry(c),
        }
    }
}

impl TryFrom<Connector> for Outgoing {
    type Error = String;
    fn try_from(c: Connector) -> Result<Self, Self::Error> {
        match c {
            Connector::Http(c) => Ok(Outgoing::Http(c)),
            Connector::Registry(c) => Ok(Outgoing::Registry(c)),
            Connector::Sim(_) | Connector::Approval(_) => Err(format!(
                "connector `{}` is not carried out through the outbox",
                c.name()
            )),
        }
    }
}

pub struct RouteCx<'a> {
    pub engine: &'a Engine,
    pub deployed: &'a Deployed,
    /// The run's flow (it exists: `apply` just found it).
    pub flow: FlowRef<'a>,
    pub meta: &'a RunMeta,
    pub now: u64,
}

impl<'a> RouteCx<'a> {
    fn timer(
        &self,
        commit: &mut Commit,
        after: &mut Vec<After>,
        timer: String,
        due_at: u64,
        event: Event,
    ) {
        let partition = self.engine.partition_of(&self.meta.id);
        let short = due_at <= self.now + SHORT_MS;
        commit.timers.push(TimerWrite {
            run: self.meta.id.clone(),
            timer: timer.clone(),
            partition,
            due_at,
            claimed_until: if short { due_at + CLAIM_TTL_MS } else { 0 },
            event: stored_json(&event),
        });
        if short {
            after.push(After::Inject {
                run: self.meta.id.clone(),
                timer,
                due_at,
                event,
            });
        } else {
            after.push(After::TimerSet { partition });
        }
    }

    fn outbox(&self, commit: &mut Commit, after: &mut Vec<After>, item: OutboxItem) {
        let pos = self.engine.next_outbox_pos();
        commit
            .outbox
            .push((pos, self.meta.id.clone(), stored_json(&item)));
        after.push(After::Dispatch(Outbound {
            pos,
            run: self.meta.id.clone(),
            item,
        }));
    }

    /// The type a single attempt of `node` produces (an element, for a fan-out).
    fn attempt_output(&self, node: &str) -> Option<&'a Type> {
        let n = self
            .flow
            .flow
            .nodes
            .get(*self.flow.index.nodes.get(node)?)?;
        match (&n.fan_out, &n.output) {
            (Some(fo), Some(Type::List { item })) if !matches!(fo.join, eflow_ir::Join::Any) => {
                Some(item)
            }
            (_, out) => out.as_ref(),
        }
    }

    /// The connector bound to `contract` in the run's environment, parsed
    /// when the bundle was validated.
    fn connector(&self, contract: &str) -> Option<&'a Connector> {
        self.flow.connector(&self.deployed.env, contract)
    }

    /// The connector a step node is carried out by; `None` for nodes that
    /// are not steps (subflow calls, waits).
    fn step_connector(&self, node: &str) -> Option<&'a Connector> {
        let n = self
            .flow
            .flow
            .nodes
            .get(*self.flow.index.nodes.get(node)?)?;
        let eflow_ir::Call::Step { contract, .. } = &n.call else {
            return None;
        };
        self.connector(contract)
    }

    /// The binding of a step whose remote system takes cancellations: an
    /// `http` binding with a `cancel_url`.
    fn cancel_target(&self, node: &str) -> Option<&'a HttpConfig> {
        match self.step_connector(node)? {
            Connector::Http(c) => c.cancel_url.is_some().then_some(c),
            Connector::Sim(_) | Connector::Registry(_) | Connector::Approval(_) => None,
        }
    }

    /// What an applied event changes besides the run: the completion of an
    /// approval step (a reviewer's decision or its expiry) decides its row in
    /// the same transaction, so a decision is never stored without moving the
    /// run on, nor the run moved on without it.
    pub fn applied(&self, event: &Event, commit: &mut Commit) {
        let EventKind::StepCompleted {
            node,
            index,
            attempt,
            output,
            ..
        } = &event.kind
        else {
            return;
        };
        if matches!(self.step_connector(node), Some(Connector::Approval(_))) {
            commit.approvals_closed.push(ApprovalClose {
                run: self.meta.id.clone(),
                step: step_label(node, *index),
                attempt: *attempt,
                at: self.now,
                decision: Some(stored_json(output)),
            });
        }
    }

    pub fn route(&self, effect: Effect, commit: &mut Commit, after: &mut Vec<After>) {
        let run_id = &self.meta.id;
        match effect.kind {
            EffectKind::Invoke {
                node,
                index,
                attempt,
                contract,
                inputs,
            } => {
                let flow = self.flow.flow;
                let kind = flow
                    .contracts
                    .get(&contract)
                    .map_or(StepKind::Remote, |c| c.kind);
                let slot = slot_id(&node, index, attempt);
                let outgoing = match self.connector(&contract) {
                    Some(Connector::Sim(config)) => {
                        let output = self.attempt_output(&node);
                        let o = sim::outcome(config, &effect.key, output, &flow.types, self.now);
                        let id = format!("sim:{}", effect.key);
                        let event =
                            connectors::result_event(id, node, index, attempt, o.result, true);
                        self.timer(
                            commit,
                            after,
                            format!("sim:{slot}"),
                            self.now + o.duration_ms,
                            event,
                        );
                        return;
                    }
                    Some(Connector::Http(config)) => Ok(Outgoing::Http(config.clone())),
                    Some(Connector::Registry(config)) => Ok(Outgoing::Registry(*config)),
                    // Validation refuses an approval binding for a remote or
                    // call step; should one get here, the step fails, it is
                    // not sent anywhere.
                    Some(c @ Connector::Approval(_)) => Err(StepError::new(
                        "NoBinding",
                        format!(
                            "connector `{}` cannot carry out `{contract}`: bind it to one that can and deploy again",
                            c.name()
                        ),
                    )),
                    None => Err(StepError::new(
                        "NoBinding",
                        format!(
                            "environment `{}` binds no connector to `{contract}`: add one to its bindings and deploy again",
                            self.deployed.env
                        ),
                    )),
                };
                match outgoing {
                    Ok(connector) => self.outbox(
                        commit,
                        after,
                        OutboxItem::Invoke {
                            tenant: self.meta.tenant.clone(),
                            bundle: self.meta.bundle.clone(),
                            connector,
                            node,
                            index,
                            attempt,
                            contract,
                            kind,
                            inputs,
                            key: effect.key,
                        },
                    ),
                    Err(error) => {
                        let event = Event::new(
                            format!("nobinding:{}", effect.key),
                            EventKind::StepFailed {
                                node,
                                index,
                                attempt,
                                error,
                                retryable: false,
                            },
                        );
                        self.timer(commit, after, format!("sim:{slot}"), self.now, event);
                    }
                }
            }
            EffectKind::RequestApproval {
                node,
                index,
                attempt,
                contract,
                inputs,
            } => {
                let config = match self.connector(&contract) {
                    Some(Connector::Approval(c)) => Some(c),
                    _ => None,
                };
                let (write, expiry) = approval::request(
                    &Attempt {
                        run: run_id,
                        tenant: &self.meta.tenant,
                        bundle: &self.meta.bundle,
                        node: &node,
                        index,
                        attempt,
                        contract: &contract,
                        inputs: &inputs,
                        key: &effect.key,
                    },
                    config,
                    self.now,
                );
                commit.approvals.push(write);
                if let Some(e) = expiry {
                    self.timer(commit, after, e.timer, e.due_at, e.event);
                }
            }
            EffectKind::CancelStep {
                node,
                index,
                attempt,
            } => {
                let slot = slot_id(&node, index, attempt);
                commit
                    .timers_deleted
                    .push((run_id.clone(), format!("sim:{slot}")));
                commit
                    .timers_deleted
                    .push((run_id.clone(), format!("approval:{slot}")));
                commit.approvals_closed.push(ApprovalClose {
                    run: run_id.clone(),
                    step: step_label(&node, index),
                    attempt,
                    at: self.now,
                    decision: None,
                });
                if let Some(http) = self.cancel_target(&node) {
                    self.outbox(
                        commit,
                        after,
                        OutboxItem::Cancel {
                            tenant: self.meta.tenant.clone(),
                            http: http.clone(),
                            node,
                            index,
                            attempt,
                        },
                    );
                }
            }
            EffectKind::SetTimer { timer, due_at } => {
                let id = timer.id();
                let event = Event::new(format!("timer:{id}"), EventKind::TimerFired { timer });
                self.timer(commit, after, id, due_at, event);
            }
            EffectKind::CancelTimer { timer } => {
                commit.timers_deleted.push((run_id.clone(), timer.id()));
            }
            EffectKind::StartChild {
                child,
                flow,
                version: _,
                parent,
                input,
            } => self.outbox(
                commit,
                after,
                OutboxItem::Create {
                    meta: RunMeta {
                        id: child,
                        tenant: self.meta.tenant.clone(),
                        bundle: self.meta.bundle.clone(),
                        schedule: None,
                        parent: Some(run_id.clone()),
                        key: None,
                        created_at: self.now,
                    },
                    flow,
                    parent,
                    input,
                },
            ),
            EffectKind::CancelChild { child } => self.outbox(
                commit,
                after,
                OutboxItem::Deliver {
                    run: child,
                    event: Event::new(
                        "cancel:parent",
                        EventKind::CancelRequested {
                            reason: format!("parent run {run_id} no longer needs it"),
                        },
                    ),
                },
            ),
            EffectKind::NotifyParent { parent, outcome } => self.outbox(
                commit,
                after,
                OutboxItem::Deliver {
                    run: parent.run.clone(),
                    event: Event::new(
                        format!("child:{run_id}"),
                        EventKind::ChildFinished {
                            node: parent.node,
                            index: parent.index,
                            attempt: parent.attempt,
                            outcome,
                        },
                    ),
                },
            ),
            EffectKind::StoreResult {
                node,
                index,
                output,
            } => commit.results.push(ResultWrite {
                run: run_id.clone(),
                node,
                index,
                output: stored_json(&output),
            }),
            EffectKind::StoreValue { value_ref, value } => commit.values.push(ValueWrite {
                tenant: self.meta.tenant.clone(),
                run: run_id.clone(),
                hash: value_ref.hash,
                body: Some(stored_json(&*value)),
                at: self.now,
            }),
            EffectKind::ReferValue { value_ref } => commit.values.push(ValueWrite {
                tenant: self.meta.tenant.clone(),
                run: run_id.clone(),
                hash: value_ref.hash,
                body: None,
                at: self.now,
            }),
            EffectKind::Finished { status, .. } => after.push(After::Finished(Finished {
                run: run_id.clone(),
                tenant: self.meta.tenant.clone(),
                parent: self.meta.parent.clone(),
                schedule: self.meta.schedule.clone(),
                status,
            })),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::json;

    use super::*;

    /// Rows written before connectors were typed are read the same, and rows
    /// are written in the same shape: the binding's `connector` and `config`.
    #[test]
    fn outbox_rows_keep_the_binding_shape() {
        let invoke = json!({
            "type": "invoke", "tenant": "acme", "bundle": "b1",
            "connector": "http",
            "config": {"url": "https://train.example.com", "timeout": 5000, "headers": {"X-Team": "ml"}},
            "node": "train", "attempt": 1, "contract": "std/ml.Train", "kind": "remote",
            "inputs": {"data": "s3://x"}, "key": "r1:3:0"
        });
        let item: OutboxItem = serde_json::from_value(invoke.clone()).unwrap();
        let OutboxItem::Invoke {
            connector: Outgoing::Http(http),
            ..
        } = &item
        else {
            panic!("{item:?}");
        };
        assert_eq!(http.timeout_ms, 5000);
        assert_eq!(serde_json::to_value(&item).unwrap(), invoke);

        let registry = json!({
            "type": "invoke", "tenant": "acme", "bundle": "b1",
            "connector": "registry", "config": {"kind": "dataset"},
            "node": "reg", "index": 2, "attempt": 1, "contract": "std/ml.Register", "kind": "call",
            "inputs": {}, "key": "r1:4:0"
        });
        let item: OutboxItem = serde_json::from_value(registry.clone()).unwrap();
        assert_eq!(serde_json::to_value(&item).unwrap(), registry);

        let cancel = json!({
            "type": "cancel", "tenant": "acme",
            "config": {"url": "https://train.example.com", "timeout": 30000, "cancel_url": "https://train.example.com/cancel"},
            "node": "train", "attempt": 2
        });
        let item: OutboxItem = serde_json::from_value(cancel.clone()).unwrap();
        assert_eq!(serde_json::to_value(&item).unwrap(), cancel);
        assert_eq!(
            serde_json::from_slice::<OutboxItem>(&stored_json(&item)).unwrap(),
            item
        );

        let mut sim = invoke;
        sim["connector"] = json!("sim");
        sim["config"] = json!({});
        let err = serde_json::from_value::<OutboxItem>(sim).unwrap_err();
        assert!(
            err.to_string()
                .contains("not carried out through the outbox"),
            "{err}"
        );
    }
}
