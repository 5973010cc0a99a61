//! A run's attempts in time, for the console's Gantt chart: when each
//! attempt of each step began and ended and how, read from the run's event
//! log (indexed by run and sequence, a bounded number of events) and its
//! flow's graph. The state record keeps no times, so they are worked out:
//!
//! - an attempt ends at the event that reports it (a step's output or
//!   error, a child's outcome, its timeout or its wait firing), or at a
//!   cancel while it is out;
//! - attempt 1 of a step begins when the last of the steps it depends on
//!   finished (a step skipped finishes when it became ready), or when the
//!   run started; a later attempt begins when the retry timer of the one
//!   before fired, or when the failed run was retried after it;
//! - a fan-out is one bar, from when it became ready to its last child's
//!   end, as the graph draws it as one node.

use std::collections::{BTreeMap, HashMap};

use eflow_core::event::{EventKind, Outcome};
use eflow_core::{Event, Timer};

/// One attempt of a step (or, for a fan-out, all its children).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptBar {
    pub step: String,
    /// From 1; 0 for a fan-out's bar.
    pub attempt: u32,
    /// A fan-out's bar: how many child attempts it covers.
    pub children: Option<u32>,
    pub start_ms: u64,
    /// `None` while it is out.
    pub end_ms: Option<u64>,
    /// `succeeded`, `failed`, `timed_out`, `cancelled` or `running`.
    pub outcome: &'static str,
    /// The error of a failed attempt: `code: message`.
    pub error: Option<String>,
}

/// A run's attempts, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timeline {
    /// When the run started (its first event).
    pub start_ms: u64,
    /// Its last event read.
    pub last_ms: u64,
    /// When the timeline was made: where attempts still out end for now.
    pub now_ms: u64,
    pub bars: Vec<AttemptBar>,
    /// Every event of the run was read (else the chart covers the first).
    pub complete: bool,
}

/// A slot of a step: `(node, child index)`.
type Slot = (String, Option<u32>);

#[derive(Debug, Clone)]
struct Ended {
    at: u64,
    outcome: &'static str,
    error: Option<String>,
}

/// The timeline of `events` (`(at_ms, event)`, in order) of a run of
/// `flow`, whose steps `out` are in progress (running, waiting to retry, a
/// fan-out with children out) as its state says.
pub fn timeline(
    flow: &eflow_ir::Flow,
    events: &[(u64, Event)],
    out: &[&str],
    complete: bool,
) -> Timeline {
    let start_ms = events.first().map_or(0, |(at, _)| *at);
    let last_ms = events.last().map_or(start_ms, |(at, _)| *at);
    // Every attempt reported, by slot and attempt (the first report wins:
    // a later one of the same attempt is stale); retry timers' times.
    let mut ends: BTreeMap<(Slot, u32), Ended> = BTreeMap::new();
    let mut retries: BTreeMap<(Slot, u32), u64> = BTreeMap::new();
    let mut cancelled_at = None;
    // When the run was retried after failing (`RetryRequested`), in order.
    let mut resumed: Vec<u64> = Vec::new();
    for (at, e) in events {
        let at = *at;
        let mut end = |node: &str, index: Option<u32>, attempt: u32, outcome, error| {
            ends.entry(((node.to_string(), index), attempt))
                .or_insert(Ended { at, outcome, error });
        };
        match &e.kind {
            EventKind::StepCompleted {
                node,
                index,
                attempt,
                ..
            } => end(node, *index, *attempt, "succeeded", None),
            EventKind::StepFailed {
                node,
                index,
                attempt,
                error,
                ..
            } => end(
                node,
                *index,
                *attempt,
                "failed",
                Some(format!("{}: {}", error.code, error.message)),
            ),
            EventKind::ChildFinished {
                node,
                index,
                attempt,
                outcome,
            } => {
                let (o, error) = match outcome {
                    Outcome::Succeeded { .. } => ("succeeded", None),
                    Outcome::Failed { error } => {
                        ("failed", Some(format!("{}: {}", error.code, error.message)))
                    }
                    Outcome::Cancelled => ("cancelled", None),
                };
                end(node, *index, *attempt, o, error);
            }
            EventKind::TimerFired { timer } => match timer {
                // The timer names the attempt that failed; it begins the next.
                Timer::Retry {
                    node,
                    index,
                    attempt,
                } => {
                    retries
                        .entry(((node.clone(), *index), attempt + 1))
                        .or_insert(at);
                }
                Timer::Timeout {
                    node,
                    index,
                    attempt,
                } => end(node, *index, *attempt, "timed_out", None),
                Timer::Wait {
                    node,
                    index,
                    attempt,
                } => end(node, *index, *attempt, "succeeded", None),
                Timer::Deadline | Timer::FanOut { .. } => {}
            },
            EventKind::CancelRequested { .. } => {
                cancelled_at.get_or_insert(at);
            }
            EventKind::RetryRequested { .. } => resumed.push(at),
            EventKind::Started { .. } => {}
        }
    }
    let nodes: HashMap<&str, &eflow_ir::Node> =
        flow.nodes.iter().map(|n| (n.id.as_str(), n)).collect();
    let mut times = Times {
        nodes: &nodes,
        ends: &ends,
        out,
        start: start_ms,
        ready: HashMap::new(),
        finished: HashMap::new(),
    };
    for n in &flow.nodes {
        times.finish(&n.id, 0);
    }
    let ready = times.ready;
    // An attempt still out: until now, or cancelled with the run.
    let open_end = || match cancelled_at {
        Some(c) => (Some(c), "cancelled"),
        None => (None, "running"),
    };
    let mut bars = Vec::new();
    for n in &flow.nodes {
        let id = n.id.as_str();
        let Some(&ready_at) = ready.get(id) else {
            continue;
        };
        let in_progress = out.contains(&id);
        let mine: Vec<(&(Slot, u32), &Ended)> = ends
            .iter()
            .filter(|(((node, _), _), _)| node == id)
            .collect();
        if n.fan_out.is_some() {
            if mine.is_empty() && !in_progress {
                continue;
            }
            let (end_ms, outcome) = if in_progress {
                open_end()
            } else {
                let failed = mine.iter().find(|(_, e)| e.outcome != "succeeded");
                (
                    mine.iter().map(|(_, e)| e.at).max(),
                    failed.map_or("succeeded", |(_, e)| e.outcome),
                )
            };
            bars.push(AttemptBar {
                step: id.to_string(),
                attempt: 0,
                children: Some(mine.len() as u32),
                start_ms: ready_at,
                end_ms,
                outcome,
                error: None,
            });
            continue;
        }
        let mut previous_end = ready_at;
        let mut highest = 0;
        for ((slot, attempt), e) in &mine {
            let start = if *attempt <= 1 {
                ready_at
            } else {
                retries
                    .get(&(slot.clone(), *attempt))
                    .copied()
                    .unwrap_or_else(|| resumed_after(&resumed, previous_end, e.at))
            };
            previous_end = e.at;
            highest = highest.max(*attempt);
            bars.push(AttemptBar {
                step: id.to_string(),
                attempt: *attempt,
                children: None,
                start_ms: start,
                end_ms: Some(e.at),
                outcome: e.outcome,
                error: e.error.clone(),
            });
        }
        if in_progress {
            // The attempt out now: the one its retry timer began, or the next.
            let (attempt, start) = retries
                .iter()
                .filter(|(((node, _), a), _)| node == id && *a > highest)
                .map(|((_, a), at)| (*a, *at))
                .max()
                .unwrap_or_else(|| {
                    let start = resumed_after(&resumed, previous_end, u64::MAX);
                    (highest + 1, start)
                });
            let (end_ms, outcome) = open_end();
            bars.push(AttemptBar {
                step: id.to_string(),
                attempt,
                children: None,
                start_ms: start,
                end_ms,
                outcome,
                error: None,
            });
        }
    }
    bars.sort_by(|a, b| (a.start_ms, &a.step, a.attempt).cmp(&(b.start_ms, &b.step, b.attempt)));
    Timeline {
        start_ms,
        last_ms,
        now_ms: last_ms,
        bars,
        complete,
    }
}

/// When an attempt that began after `previous_end` and ended at `end`
/// began: at the last retry of the run in between (it started the attempt
/// again), else right after the attempt before.
fn resumed_after(resumed: &[u64], previous_end: u64, end: u64) -> u64 {
    resumed
        .iter()
        .copied()
        .filter(|&at| at >= previous_end && at <= end)
        .max()
        .unwrap_or(previous_end)
}

/// When steps became ready and finished, worked out along the graph: a
/// step is ready when every step it depends on finished; one in progress
/// has not finished; one that reported nothing and is not in progress was
/// skipped, and finished when it became ready.
struct Times<'a> {
    nodes: &'a HashMap<&'a str, &'a eflow_ir::Node>,
    ends: &'a BTreeMap<(Slot, u32), Ended>,
    out: &'a [&'a str],
    start: u64,
    ready: HashMap<&'a str, u64>,
    finished: HashMap<&'a str, Option<u64>>,
}

impl<'a> Times<'a> {
    /// When step `id` finished; `None` if it has not (or is unknown).
    fn finish(&mut self, id: &str, depth: usize) -> Option<u64> {
        let (&key, node) = self.nodes.get_key_value(id)?;
        if let Some(f) = self.finished.get(key) {
            return *f;
        }
        // A cycle (refused before a deploy) cannot loop.
        if depth > self.nodes.len() {
            return None;
        }
        let mut at = self.start;
        let mut ready = true;
        for d in &node.depends_on {
            match self.finish(d, depth + 1) {
                Some(f) => at = at.max(f),
                None => ready = false,
            }
        }
        let f = if ready {
            self.ready.insert(key, at);
            let reported = self
                .ends
                .iter()
                .filter(|(((n, _), _), _)| n == key)
                .map(|(_, e)| e.at)
                .max();
            if self.out.contains(&key) {
                None
            } else {
                Some(reported.unwrap_or(at))
            }
        } else {
            None
        };
        self.finished.insert(key, f);
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use eflow_core::StepError;
    use serde_json::{Value, json};

    fn flow(nodes: &[(&str, &[&str], bool)]) -> eflow_ir::Flow {
        let nodes: Vec<Value> = nodes
            .iter()
            .map(|(id, deps, fan)| {
                let mut n = json!({
                    "id": id,
                    "call": {"step": {"contract": "m.Work"}},
                    "inputs": {},
                    "depends_on": deps,
                });
                if *fan {
                    n["fan_out"] =
                        json!({"over": {"literal": []}, "item": "x", "join": {"policy": "all"}});
                }
                n
            })
            .collect();
        serde_json::from_value(json!({
            "name": "F", "module": "m", "hash": "sha256:00", "params": [],
            "nodes": nodes, "conditions": [], "types": {}, "contracts": {}, "bindings": {},
        }))
        .expect("a flow")
    }

    fn ev(kind: EventKind) -> Event {
        Event::new("e", kind)
    }

    fn done(node: &str, index: Option<u32>, attempt: u32) -> EventKind {
        EventKind::StepCompleted {
            node: node.into(),
            index,
            attempt,
            output: Value::Null,
            output_ref: None,
        }
    }

    fn failed(node: &str, attempt: u32) -> EventKind {
        EventKind::StepFailed {
            node: node.into(),
            index: None,
            attempt,
            error: StepError::new("Boom", "it broke"),
            retryable: true,
        }
    }

    fn failed_child(node: &str, index: u32) -> EventKind {
        EventKind::StepFailed {
            node: node.into(),
            index: Some(index),
            attempt: 1,
            error: StepError::new("Boom", ""),
            retryable: false,
        }
    }

    fn retry(node: &str, attempt: u32) -> EventKind {
        EventKind::TimerFired {
            timer: Timer::Retry {
                node: node.into(),
                index: None,
                attempt,
            },
        }
    }

    fn started() -> EventKind {
        EventKind::Started {
            input: Default::default(),
            input_refs: Default::default(),
        }
    }

    fn shown(t: &Timeline) -> Vec<String> {
        t.bars
            .iter()
            .map(|b| {
                format!(
                    "{}#{} {}..{} {}{}",
                    b.step,
                    b.attempt,
                    b.start_ms,
                    b.end_ms.map_or("-".to_string(), |e| e.to_string()),
                    b.outcome,
                    b.children
                        .map_or(String::new(), |c| format!(" ({c} children)")),
                )
            })
            .collect()
    }

    #[test]
    fn attempts_begin_when_their_dependencies_end_and_retries_when_their_timer_fires() {
        let f = flow(&[
            ("a", &[], false),
            ("b", &["a"], false),
            ("c", &["b"], false),
        ]);
        let events = vec![
            (100, ev(started())),
            (150, ev(done("a", None, 1))),
            (170, ev(failed("b", 1))),
            (270, ev(retry("b", 1))),
            (300, ev(done("b", None, 2))),
        ];
        let t = timeline(&f, &events, &["c"], true);
        assert_eq!(
            shown(&t),
            [
                "a#1 100..150 succeeded",
                "b#1 150..170 failed",
                "b#2 270..300 succeeded",
                "c#1 300..- running",
            ]
        );
        assert_eq!(t.bars[1].error.as_deref(), Some("Boom: it broke"));
        assert_eq!((t.start_ms, t.last_ms), (100, 300));
    }

    #[test]
    fn a_fan_out_is_one_bar_and_a_cancel_ends_what_is_out() {
        let f = flow(&[
            ("each", &[], true),
            ("after", &["each"], false),
            ("other", &[], false),
        ]);
        let events = vec![
            (10, ev(started())),
            (20, ev(done("each", Some(0), 1))),
            (35, ev(done("each", Some(1), 1))),
            (
                50,
                ev(EventKind::CancelRequested {
                    reason: String::new(),
                }),
            ),
        ];
        let t = timeline(&f, &events, &["each", "other"], false);
        assert_eq!(
            shown(&t),
            [
                "each#0 10..50 cancelled (2 children)",
                "other#1 10..50 cancelled",
            ]
        );
        assert!(!t.complete);
    }

    #[test]
    fn a_retry_out_is_running_and_stale_reports_are_ignored() {
        let f = flow(&[("a", &[], false)]);
        let events = vec![
            (0, ev(started())),
            (5, ev(failed("a", 1))),
            (9, ev(retry("a", 1))),
            // A second report of attempt 1 changes nothing.
            (12, ev(done("a", None, 1))),
        ];
        assert_eq!(
            shown(&timeline(&f, &events, &["a"], true)),
            ["a#1 0..5 failed", "a#2 9..- running"]
        );
        // Finished: its attempts, and a fan-out's children, end where reported.
        let f = flow(&[("each", &[], true), ("b", &["each"], false)]);
        let events = vec![
            (0, ev(started())),
            (4, ev(done("each", Some(1), 1))),
            (7, ev(failed_child("each", 0))),
            (8, ev(done("b", None, 1))),
        ];
        assert_eq!(
            shown(&timeline(&f, &events, &[], true)),
            ["each#0 0..7 failed (2 children)", "b#1 7..8 succeeded"]
        );
    }
}
