//! The engine's inputs as they cross processes on the distributed bus
//! (`bus::Wire`): every [`Input`] as JSON, and the answers to `Deliver` and
//! `Create` as the changed flag, the run's row and its state; the receiving
//! side takes the deployed bundle from its own [`Deployments`].

use std::collections::BTreeMap;

use eflow_core::{Event, Parent, Rejection, ValueRef};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::sync::oneshot;

use super::{Applied, Creation, Delivery, Deployments, Error, Input, Reply};
use crate::bus::{self, Answer, Encoded, Fulfil, Wire};
use crate::store::RunMeta;

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum WireInput {
    Deliver {
        run: String,
        event: Event,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timer: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        outbox: Option<i64>,
    },
    Create {
        meta: RunMeta,
        fresh: bool,
        flow: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        parent: Option<Parent>,
        input: Map<String, Value>,
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        input_refs: BTreeMap<String, ValueRef>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        outbox: Option<i64>,
    },
    OutboxDone(Vec<i64>),
    StopTenant {
        tenant: String,
    },
    ResumeTenant {
        tenant: String,
    },
}

/// The answer to a `Deliver` or a `Create`.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum WireAnswer {
    Applied {
        changed: bool,
        meta: RunMeta,
        state: Box<eflow_core::Run>,
    },
    Failed(WireError),
}

/// The errors callers branch on keep their variant; the others travel as
/// their message ([`Error::Remote`]).
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum WireError {
    Rejected(Rejection),
    NoSuchRun(String),
    Swept(String),
    TenantStopped(String),
    Stopped,
    Other(String),
}

impl From<&Error> for WireError {
    fn from(e: &Error) -> Self {
        match e {
            Error::Rejected(r) => WireError::Rejected(r.clone()),
            Error::NoSuchRun(id) => WireError::NoSuchRun(id.clone()),
            Error::Swept(id) => WireError::Swept(id.clone()),
            Error::TenantStopped(t) => WireError::TenantStopped(t.clone()),
            Error::Stopped => WireError::Stopped,
            Error::Remote(m) => WireError::Other(m.clone()),
            other => WireError::Other(other.to_string()),
        }
    }
}

impl From<WireError> for Error {
    fn from(e: WireError) -> Self {
        match e {
            WireError::Rejected(r) => Error::Rejected(r),
            WireError::NoSuchRun(id) => Error::NoSuchRun(id),
            WireError::Swept(id) => Error::Swept(id),
            WireError::TenantStopped(t) => Error::TenantStopped(t),
            WireError::Stopped => Error::Stopped,
            WireError::Other(m) => Error::Remote(m),
        }
    }
}

/// The sender's side of a stop or a resume: an answer (empty) is done; no
/// answer fails it (the reply is dropped).
fn fulfil_done(reply: oneshot::Sender<()>) -> Fulfil {
    Box::new(move |answer| {
        Box::pin(async move {
            if answer.is_ok() {
                let _ = reply.send(());
            }
        })
    })
}

/// The worker's side of a stop or a resume: answers once it is done.
fn answering_done(answer: Option<Answer>) -> oneshot::Sender<()> {
    let (tx, rx) = oneshot::channel::<()>();
    if let Some(answer) = answer {
        tokio::spawn(async move {
            if rx.await.is_ok() {
                answer.send(Vec::new()).await;
            }
        });
    }
    tx
}

fn wire_error(e: impl std::fmt::Display) -> bus::Error {
    bus::Error::Wire(e.to_string())
}

impl Wire for Input {
    /// An answer names its run's bundle; the sender's deployments give it.
    type Codec = Deployments;

    fn encode(self, deployments: &Deployments) -> Result<Encoded, bus::Error> {
        let (wire, reply): (WireInput, Option<Fulfil>) = match self {
            Input::Deliver(d) => (
                WireInput::Deliver {
                    run: d.run,
                    event: d.event,
                    timer: d.timer,
                    outbox: d.outbox,
                },
                d.reply.map(|r| fulfil_applied(r, deployments.clone())),
            ),
            Input::Create(c) => (
                WireInput::Create {
                    meta: c.meta,
                    fresh: c.fresh,
                    flow: c.flow,
                    parent: c.parent,
                    input: c.input,
                    input_refs: c.input_refs,
                    outbox: c.outbox,
                },
                c.reply.map(|r| fulfil_applied(r, deployments.clone())),
            ),
            Input::OutboxDone(v) => (WireInput::OutboxDone(v), None),
            Input::StopTenant { tenant, reply } => {
                (WireInput::StopTenant { tenant }, Some(fulfil_done(reply)))
            }
            Input::ResumeTenant { tenant, reply } => {
                (WireInput::ResumeTenant { tenant }, Some(fulfil_done(reply)))
            }
        };
        Ok(Encoded {
            bytes: serde_json::to_vec(&wire).map_err(wire_error)?,
            reply,
        })
    }

    fn decode(
        bytes: &[u8],
        answer: Option<Answer>,
        redelivered: bool,
        _: &Deployments,
    ) -> Result<Input, bus::Error> {
        let wire: WireInput = serde_json::from_slice(bytes).map_err(wire_error)?;
        Ok(match wire {
            WireInput::Deliver {
                run,
                event,
                timer,
                outbox,
            } => Input::Deliver(Delivery {
                run,
                event,
                timer,
                outbox,
                reply: answer.map(answering),
            }),
            WireInput::Create {
                meta,
                fresh,
                flow,
                parent,
                input,
                input_refs,
                outbox,
            } => Input::Create(Creation {
                meta,
                // Delivered before: it may have been applied already.
                fresh: fresh && !redelivered,
                flow,
                parent,
                input,
                input_refs,
                outbox,
                reply: answer.map(answering),
            }),
            WireInput::OutboxDone(v) => Input::OutboxDone(v),
            WireInput::StopTenant { tenant } => Input::StopTenant {
                tenant,
                reply: answering_done(answer),
            },
            WireInput::ResumeTenant { tenant } => Input::ResumeTenant {
                tenant,
                reply: answering_done(answer),
            },
        })
    }
}

/// The sender's side: the answer's bytes fulfil `reply`, with the deployed
/// bundle the run's row names.
fn fulfil_applied(reply: Reply, deployments: Deployments) -> Fulfil {
    Box::new(move |answer| {
        Box::pin(async move {
            let result = match answer {
                Ok(bytes) => decode_answer(&bytes, &deployments).await,
                Err(e) => Err(Error::Bus(e)),
            };
            let _ = reply.send(result);
        })
    })
}

async fn decode_answer(bytes: &[u8], deployments: &Deployments) -> Result<Applied, Error> {
    match serde_json::from_slice(bytes).map_err(|e| Error::Bus(wire_error(e)))? {
        WireAnswer::Applied {
            changed,
            meta,
            state,
        } => {
            let deployed = deployments.get(&meta.bundle).await?;
            Ok(Applied {
                changed,
                meta,
                state: std::sync::Arc::new(*state),
                deployed,
            })
        }
        WireAnswer::Failed(e) => Err(e.into()),
    }
}

fn encode_answer(result: &Result<Applied, Error>) -> Vec<u8> {
    let answer = match result {
        Ok(a) => WireAnswer::Applied {
            changed: a.changed,
            meta: a.meta.clone(),
            state: Box::new((*a.state).clone()),
        },
        Err(e) => WireAnswer::Failed(e.into()),
    };
    match serde_json::to_vec(&answer) {
        Ok(bytes) => bytes,
        // A state serialises (the store keeps it so): should it ever not,
        // the sender hears why instead of waiting for nothing.
        Err(e) => serde_json::json!({ "failed": { "other": format!("the answer cannot be encoded: {e}") } })
            .to_string()
            .into_bytes(),
    }
}

/// The worker's side: a reply channel whose answer goes back as bytes. One
/// dropped unanswered sends nothing: the input was not committed and comes
/// again (to this process or another), and that delivery answers; a sender
/// that hears nothing says so after its wait.
fn answering(answer: Answer) -> Reply {
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        if let Ok(result) = rx.await {
            answer.send(encode_answer(&result)).await;
        }
    });
    tx
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use eflow_core::EventKind;
    use futures_util::future::BoxFuture;
    use tokio::sync::mpsc;

    use super::*;
    use crate::store::{Deployment, Durability, Store};

    fn meta(bundle: &str) -> RunMeta {
        RunMeta {
            id: "r-1".into(),
            tenant: "acme".into(),
            bundle: bundle.into(),
            schedule: Some("s".into()),
            parent: Some("p".into()),
            key: None,
            created_at: 7,
        }
    }

    /// An answer that lands in a channel, as the NATS bus would carry it.
    fn loopback() -> (Answer, mpsc::UnboundedReceiver<Vec<u8>>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let answer = Answer::new(move |bytes| -> BoxFuture<'static, ()> {
            let _ = tx.send(bytes);
            Box::pin(async {})
        });
        (answer, rx)
    }

    async fn store() -> (Store, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "eflow-wire-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite://{}", dir.join("eflow.db").display());
        (Store::open(&url, Durability::Normal).await.unwrap(), dir)
    }

    /// Sends `input` across: encode, decode (as redelivered or not), and
    /// hands back what arrived and the sender's reply fulfilment.
    fn cross(input: Input, redelivered: bool, d: &Deployments) -> (Input, Option<Fulfil>) {
        let Encoded { bytes, reply } = input.encode(d).unwrap();
        let (answer, _) = loopback();
        let got = Input::decode(&bytes, reply.as_ref().map(|_| answer), redelivered, d).unwrap();
        (got, reply)
    }

    #[tokio::test]
    async fn every_input_round_trips() {
        let (store, dir) = store().await;
        let d = Deployments::new(store.clone(), 1 << 20);
        let event = Event::new(
            "e-1",
            EventKind::Started {
                input: Map::new(),
                input_refs: BTreeMap::new(),
            },
        );
        let (got, reply) = cross(
            Input::Deliver(Delivery {
                run: "r-1".into(),
                event: event.clone(),
                timer: Some("t".into()),
                outbox: Some(4),
                reply: None,
            }),
            false,
            &d,
        );
        assert!(reply.is_none());
        let Input::Deliver(got) = got else {
            panic!("a delivery")
        };
        assert_eq!(
            (
                got.run.as_str(),
                &got.event,
                got.timer.as_deref(),
                got.outbox
            ),
            ("r-1", &event, Some("t"), Some(4))
        );
        assert!(got.reply.is_none());

        let mut input = Map::new();
        input.insert("n".into(), Value::from(3));
        let refs = BTreeMap::from([(
            "big".to_string(),
            ValueRef {
                hash: "h".into(),
                bytes: 9,
            },
        )]);
        let creation = |fresh, reply| {
            Input::Create(Creation {
                meta: meta("b-1"),
                fresh,
                flow: "Train".into(),
                parent: Some(Parent {
                    run: "p".into(),
                    node: "n".into(),
                    index: Some(2),
                    attempt: 1,
                }),
                input: input.clone(),
                input_refs: refs.clone(),
                outbox: Some(9),
                reply,
            })
        };
        for (fresh, redelivered, want) in [
            (true, false, true),
            (true, true, false),
            (false, false, false),
        ] {
            let (got, _) = cross(creation(fresh, None), redelivered, &d);
            let Input::Create(c) = got else {
                panic!("a creation")
            };
            assert_eq!(c.fresh, want, "fresh {fresh}, redelivered {redelivered}");
            assert_eq!(
                (&c.meta, c.flow.as_str(), &c.input, &c.input_refs, c.outbox),
                (&meta("b-1"), "Train", &input, &refs, Some(9))
            );
            assert_eq!(c.parent.as_ref().map(|p| p.index), Some(Some(2)));
        }

        let (got, _) = cross(Input::OutboxDone(vec![1, 2]), false, &d);
        assert!(matches!(got, Input::OutboxDone(v) if v == vec![1, 2]));
        store.close().await;
        let _ = std::fs::remove_dir_all(dir);
    }

    /// The answer sent when one cannot be encoded reads as an error.
    #[test]
    fn the_fallback_answer_is_an_error() {
        let bytes = serde_json::json!({ "failed": { "other": "why" } }).to_string();
        let answer: WireAnswer = serde_json::from_str(&bytes).unwrap();
        assert!(matches!(answer, WireAnswer::Failed(WireError::Other(m)) if m == "why"));
    }

    /// A stop's answer reaches the sender; a stop the worker drops fails.
    #[tokio::test]
    async fn a_stop_is_answered_across() {
        let (store, dir) = store().await;
        let d = Deployments::new(store.clone(), 1 << 20);
        for answered in [true, false] {
            let (tx, rx) = oneshot::channel();
            let Encoded { bytes, reply } = Input::StopTenant {
                tenant: "acme".into(),
                reply: tx,
            }
            .encode(&d)
            .unwrap();
            let (answer, mut answers) = loopback();
            let Input::StopTenant { tenant, reply: ack } =
                Input::decode(&bytes, Some(answer), false, &d).unwrap()
            else {
                panic!("a stop")
            };
            assert_eq!(tenant, "acme");
            if answered {
                ack.send(()).unwrap();
                let bytes = answers.recv().await.unwrap();
                (reply.unwrap())(Ok(bytes)).await;
                rx.await.unwrap();
            } else {
                drop(ack);
                (reply.unwrap())(Err(bus::Error::NoAnswer { shard: 0, secs: 1 })).await;
                assert!(rx.await.is_err());
            }
        }
        store.close().await;
        let _ = std::fs::remove_dir_all(dir);
    }

    /// A worker's answer crosses back: the run with the deployed bundle the
    /// sender's deployments hold, or the error callers branch on.
    #[tokio::test]
    async fn answers_round_trip() {
        let (store, dir) = store().await;
        let mut flow: eflow_ir::Flow = serde_json::from_value(serde_json::json!({
            "name": "F", "module": "m", "hash": "",
            "params": [], "output": {"kind": "int"},
            "nodes": [{"id": "s0", "call": {"step": {"contract": "m.Work"}}, "inputs": {},
                "retry": {"max_attempts": 1, "backoff": {"kind": "exponential", "initial_ms": 10000, "max_ms": 600000}},
                "output": {"kind": "int"}}],
            "conditions": [], "result": {"node": {"id": "s0"}}, "types": {},
            "contracts": {"m.Work": {"kind": "remote", "params": [], "output": {"kind": "int"}}},
            "bindings": {"test": {"m.Work": {"connector": "sim", "config": {"duration": 1000}}}}
        }))
        .unwrap();
        flow.hash = flow.compute_hash();
        let run = eflow_core::Run::new("r-1", "acme", &flow, None);
        let ir = serde_json::to_vec(
            &serde_json::json!({"ir_version": eflow_ir::IR_VERSION, "flows": [flow]}),
        )
        .unwrap();
        store
            .deploy(&Deployment {
                bundle: "b-1",
                tenant: "acme",
                env: "test",
                ir: &ir,
                sources: None,
                flows: &[],
                schedules: &[],
                now: 1,
            })
            .await
            .unwrap();
        let d = Deployments::new(store.clone(), 1 << 20);
        let deployed = d.get("b-1").await.unwrap();
        let results: Vec<Result<Applied, Error>> = vec![
            Ok(Applied {
                changed: true,
                meta: meta("b-1"),
                state: Arc::new(run.clone()),
                deployed: deployed.clone(),
            }),
            Err(Error::Rejected(Rejection::Stale {
                reason: "late".into(),
            })),
            Err(Error::NoSuchRun("r-9".into())),
            Err(Error::Swept("r-8".into())),
            Err(Error::TenantStopped("acme".into())),
            Err(Error::Stopped),
            Err(Error::Bundle("b-2".into(), "gone".into())),
        ];
        for sent in results {
            let (tx, rx) = oneshot::channel();
            let Encoded { bytes, reply } = Input::Deliver(Delivery {
                run: "r-1".into(),
                event: Event::new(
                    "e",
                    EventKind::CancelRequested {
                        reason: String::new(),
                    },
                ),
                timer: None,
                outbox: None,
                reply: Some(tx),
            })
            .encode(&d)
            .unwrap();
            let (answer, mut answers) = loopback();
            let Input::Deliver(got) = Input::decode(&bytes, Some(answer), false, &d).unwrap()
            else {
                panic!("a delivery")
            };
            let want = format!("{sent:?}");
            got.reply.unwrap().send(sent).unwrap();
            (reply.unwrap())(Ok(answers.recv().await.unwrap())).await;
            let back = rx.await.unwrap();
            match back {
                Ok(a) => {
                    assert!(a.changed);
                    assert_eq!((a.meta, &*a.state), (meta("b-1"), &run));
                    assert!(Arc::ptr_eq(&a.deployed, &deployed), "from the deployments");
                }
                Err(Error::Remote(m)) => {
                    assert!(want.contains("Bundle"), "{want}");
                    assert_eq!(m, "bundle `b-2` is not deployed or no longer valid: gone");
                }
                Err(e) => assert_eq!(format!("Err({e:?})"), want),
            }
        }
        // A worker that drops the reply answers nothing: the input comes again.
        let (tx, rx) = oneshot::channel();
        let Encoded { bytes, reply } = Input::Create(Creation {
            meta: meta("b-1"),
            fresh: true,
            flow: "Train".into(),
            parent: None,
            input: Map::new(),
            input_refs: BTreeMap::new(),
            outbox: None,
            reply: Some(tx),
        })
        .encode(&d)
        .unwrap();
        let (answer, mut answers) = loopback();
        drop(Input::decode(&bytes, Some(answer), false, &d).unwrap());
        assert!(answers.recv().await.is_none(), "no answer");
        // The sender's wait ends: its caller learns there was none.
        (reply.unwrap())(Err(bus::Error::NoAnswer { shard: 0, secs: 30 })).await;
        assert!(matches!(
            rx.await.unwrap(),
            Err(Error::Bus(bus::Error::NoAnswer { .. }))
        ));
        store.close().await;
        let _ = std::fs::remove_dir_all(dir);
    }
}
