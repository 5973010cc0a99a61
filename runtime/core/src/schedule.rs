//! Schedules: when a cron schedule fires, and what the scheduler does when it is due.
//!
//! Pure, like the rest of the core: the scheduler (in `eflow-runtime`) stores one
//! row per schedule with the time it is next due, and when that time comes it calls
//! [`Compiled::plan`] with the row's state and the time; it commits the plan's
//! starts, cancellations and new state together. Times are milliseconds since the
//! Unix epoch. See "Schedules" in `docs/design/0002-runtime-core.md`.
//!
//! # Fire times
//!
//! A schedule's *nominal* fire times are the instants its cron expression matches
//! in its time zone ([`Calendar`]). A local time skipped when the clocks go forward
//! fires at the first instant after the gap; a local time repeated when they go
//! back fires once, at its first occurrence, unless the expression is an
//! *interval* (a wildcard or a step in the hour field, `*/15 * * * *`): that fires
//! by elapsed time, in both passes of a repeated hour. Either way the skipped
//! quarter-hours of the night the clocks go forward become one start.
//!
//! # The state a schedule keeps
//!
//! - `processed_through_ms`: every nominal fire time at or before it has been
//!   handled (started, buffered or skipped). A new schedule starts with the time it
//!   was created; a resumed one with the time it was resumed, unless the fire
//!   times missed while it was paused should be caught up.
//! - `buffered`: the nominal time of the start held back by `overlap buffer_one`.
//! - The number of runs it started that are still running (the store counts them).
//!
//! # Policies
//!
//! **Jitter.** Each nominal time `t` is due at `t + jitter(t)`, a delay in
//! `[0, jitter_ms)` derived from the schedule id and `t` ([`jitter_ms`]): the same
//! on every scheduler, every time. Fire times are handled in nominal order, so
//! with a jitter longer than the period a start may wait for an earlier one's.
//!
//! **Late or missed.** A due fire time is *on time* if it is no older than
//! `jitter_ms` + [`GRACE_MS`] (60 s): the scheduler is merely a little late and the
//! start goes ahead under every catch-up policy. Older ones were *missed* (the
//! scheduler was down or the schedule paused) and the catch-up policy decides:
//!
//! - `skip`: missed fire times are skipped;
//! - `once`: they are replaced by one start: none if an on-time start is due as
//!   well (it covers them), otherwise a start for the latest missed time;
//! - `all within D`: each missed time no older than `D` starts, oldest first; older
//!   ones are skipped.
//!
//! **Overlap.** Every start the catch-up policy lets through, and a buffered one
//! first, meets the overlap policy, counting the runs this plan starts as running:
//!
//! - `skip`: a start while a run of the schedule is running is skipped;
//! - `buffer_one`: it waits, at most one at a time (later ones are skipped); it
//!   goes when the running ones have finished ([`Compiled::on_run_finished`]);
//! - `allow_all`: it starts;
//! - `cancel_running`: the runs of the schedule that are running are cancelled and
//!   it starts; of several starts due at once, only the latest is made, since each
//!   would cancel the one before.
//!
//! **Bounds.** A plan makes at most [`MAX_STARTS_PER_PLAN`] starts; if more are due
//! it says so by being due again at once. Skipped fire times are reported as
//! ranges, so a month of downtime of a per-second schedule costs a few searches,
//! never one per missed second.
//!
//! **Backfill** ([`Compiled::backfill`]) starts every nominal time in a range,
//! whatever the catch-up and overlap policies, at most [`MAX_BACKFILL`] of them.
//!
//! **Run ids** are [`run_id`]`(schedule, nominal time)`: a crash between deciding
//! and recording makes the same plan again with the same ids, and the store's
//! unique key on the run id keeps the second attempt from starting anything twice.
//! A backfill of a time the schedule already started names the same run, so
//! it does not start it again either.

mod calendar;

pub use calendar::Calendar;

use eflow_ir::{Catchup, Overlap, Schedule};
use serde::{Deserialize, Serialize};

/// How late a start may be and still count as on time (on top of the jitter).
pub const GRACE_MS: u64 = 60_000;

/// The most starts one plan makes; the rest wait for the next call.
pub const MAX_STARTS_PER_PLAN: usize = 1_000;

/// The most fire times one backfill starts.
pub const MAX_BACKFILL: usize = 10_000;

/// A schedule of the IR, checked and parsed once.
#[derive(Debug, Clone)]
pub struct Compiled {
    calendar: Calendar,
    overlap: Overlap,
    catchup: Catchup,
    /// Only for `catchup all`.
    catchup_window_ms: u64,
    jitter_ms: u64,
}

/// What the scheduler knows about a schedule when it is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tick {
    pub now_ms: u64,
    /// Every nominal fire time at or before this has been handled.
    pub processed_through_ms: u64,
    /// Runs started by this schedule that have not finished.
    pub running: u32,
    /// The nominal time of the start held back by `overlap buffer_one`.
    pub buffered: Option<u64>,
}

/// What to do now; the scheduler commits all of it in one transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// Runs to start now, in nominal order.
    pub starts: Vec<Start>,
    /// Fire times not started, in nominal order, for history.
    pub skipped: Vec<Skipped>,
    /// Cancel the runs of this schedule that are running (before the starts).
    pub cancel_running: bool,
    /// The new buffered start (replaces the old one).
    pub buffered: Option<u64>,
    /// The new `processed_through_ms`.
    pub processed_through_ms: u64,
    /// When to call [`Compiled::plan`] next; `None`: the schedule never fires
    /// again (a buffered start may still be waiting).
    pub next_due_ms: Option<u64>,
}

/// A run to start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Start {
    /// The fire time the run stands for; its `run.scheduled_at`.
    pub nominal_ms: u64,
    /// The nominal time plus jitter: when the start was due. At or before `now`
    /// in a plan (catch-up and buffered starts are due in the past): start at once.
    pub start_at_ms: u64,
    /// [`run_id`] of the schedule and the nominal time.
    pub run_id: String,
}

/// Consecutive nominal fire times, from `first_ms` to `last_ms` inclusive, that
/// were not started for one reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    pub first_ms: u64,
    pub last_ms: u64,
    pub reason: SkipReason,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// The catch-up policy dropped a missed fire time.
    Catchup,
    /// The overlap policy dropped it because a run was still running.
    Overlap,
}

impl Compiled {
    /// Check and parse a schedule; the error says what is wrong, for a person.
    pub fn new(schedule: &Schedule) -> Result<Compiled, String> {
        let calendar = Calendar::new(&schedule.cron, &schedule.timezone)?;
        let catchup_window_ms = match (schedule.catchup, schedule.catchup_window_ms) {
            (Catchup::All, Some(w)) if w > 0 => w,
            (Catchup::All, _) => {
                return Err(
                    "`catchup all` needs a window longer than 0 ms (`catchup_window_ms`)".into(),
                );
            }
            (_, Some(_)) => {
                return Err(
                    "`catchup_window_ms` applies only to `catchup all`; remove it".to_string(),
                );
            }
            (_, None) => 0,
        };
        Ok(Compiled {
            calendar,
            overlap: schedule.overlap,
            catchup: schedule.catchup,
            catchup_window_ms,
            jitter_ms: schedule.jitter_ms.unwrap_or(0),
        })
    }

    pub fn calendar(&self) -> &Calendar {
        &self.calendar
    }

    /// The next nominal fire time strictly after `after_ms`; `None` if the
    /// expression never fires again.
    pub fn next_after(&self, after_ms: u64) -> Option<u64> {
        self.calendar.next_after(after_ms)
    }

    /// When a nominal time is due: the nominal time plus its jitter.
    pub fn start_at(&self, schedule_id: &str, nominal_ms: u64) -> u64 {
        nominal_ms.saturating_add(jitter_ms(schedule_id, nominal_ms, self.jitter_ms))
    }

    /// When a schedule that has handled every fire time up to
    /// `processed_through_ms` is next due: what to store for a new or resumed
    /// schedule. `None`: never again.
    pub fn next_due(&self, schedule_id: &str, processed_through_ms: u64) -> Option<u64> {
        self.next_after(processed_through_ms)
            .map(|t| self.start_at(schedule_id, t))
    }

    /// What to do when the schedule is due (or at any other time: with nothing
    /// due, the plan is empty and says when to come back).
    pub fn plan(&self, schedule_id: &str, tick: &Tick) -> Plan {
        let now = tick.now_ms;
        let done = tick.processed_through_ms;
        let due = |t: u64| self.start_at(schedule_id, t) <= now;
        // Fire times at or after this are on time; before it, missed.
        let on_time_from = now.saturating_sub(self.jitter_ms.saturating_add(GRACE_MS));
        let missed_last = on_time_from
            .checked_sub(1)
            .and_then(|t| self.calendar.latest_at_or_before(t))
            .filter(|&t| t > done);

        // The on-time fire times that are due, one more than could start.
        let mut on_time = Vec::new();
        let mut next = self.next_after(missed_last.unwrap_or(done).max(done));
        while let Some(t) = next {
            if !due(t) || on_time.len() > MAX_STARTS_PER_PLAN {
                break;
            }
            on_time.push(t);
            next = self.next_after(t);
        }

        let mut skipped = Vec::new();
        // Consecutive fire times offered to the overlap policy, oldest first.
        let mut offered = Vec::new();
        if let Some(last) = missed_last {
            // `missed_last > done`, so there is a first one.
            let first = self.next_after(done).unwrap_or(last);
            let skip_through = |through: Option<u64>, skipped: &mut Vec<Skipped>| {
                if let Some(through) = through.filter(|&t| t >= first) {
                    skipped.push(Skipped {
                        first_ms: first,
                        last_ms: through,
                        reason: SkipReason::Catchup,
                    });
                }
            };
            match self.catchup {
                Catchup::Skip => skip_through(Some(last), &mut skipped),
                Catchup::Once if !on_time.is_empty() => skip_through(Some(last), &mut skipped),
                Catchup::Once => {
                    skip_through(
                        last.checked_sub(1)
                            .and_then(|t| self.calendar.latest_at_or_before(t)),
                        &mut skipped,
                    );
                    offered.push(last);
                }
                Catchup::All => {
                    let cutoff = now.saturating_sub(self.catchup_window_ms);
                    let too_old = cutoff
                        .checked_sub(1)
                        .and_then(|t| self.calendar.latest_at_or_before(t.min(last)));
                    skip_through(too_old, &mut skipped);
                    let mut next = self.next_after(too_old.unwrap_or(done).max(done));
                    while let Some(t) = next.filter(|&t| t <= last) {
                        if offered.len() > MAX_STARTS_PER_PLAN {
                            break;
                        }
                        offered.push(t);
                        next = self.next_after(t);
                    }
                }
            }
        }
        offered.extend(on_time);
        let more = offered.len() > MAX_STARTS_PER_PLAN;
        offered.truncate(MAX_STARTS_PER_PLAN);

        let processed_through_ms = offered
            .last()
            .copied()
            .or(missed_last)
            .map_or(done, |t| t.max(done));
        let mut plan = Plan {
            starts: Vec::new(),
            skipped,
            cancel_running: false,
            buffered: None,
            processed_through_ms,
            next_due_ms: if more {
                Some(now)
            } else {
                self.next_due(schedule_id, processed_through_ms)
            },
        };
        self.apply_overlap(schedule_id, tick, &offered, &mut plan);
        plan.skipped.sort_by_key(|s| s.first_ms);
        plan
    }

    /// Run the buffered start (if any), then `offered`, through the overlap policy.
    fn apply_overlap(&self, schedule_id: &str, tick: &Tick, offered: &[u64], plan: &mut Plan) {
        let start = |t: u64| Start {
            nominal_ms: t,
            start_at_ms: self.start_at(schedule_id, t),
            run_id: run_id(schedule_id, t),
        };
        // The buffered start is older than every offered one and not next to them.
        let candidates = tick
            .buffered
            .map(|b| (b, false))
            .into_iter()
            .chain(offered.iter().map(|&t| (t, true)));
        let last = offered.last().copied().or(tick.buffered);
        let mut busy = u64::from(tick.running);
        let mut overlap_skips: Vec<Skipped> = Vec::new();
        let skip = |t: u64, consecutive: bool, skips: &mut Vec<Skipped>| match skips.last_mut() {
            // Extend the range if it ended with the fire time just before this one.
            Some(s) if consecutive && s.last_ms == prev_of(offered, t) => s.last_ms = t,
            _ => skips.push(Skipped {
                first_ms: t,
                last_ms: t,
                reason: SkipReason::Overlap,
            }),
        };
        for (t, consecutive) in candidates {
            match self.overlap {
                Overlap::AllowAll => plan.starts.push(start(t)),
                Overlap::Skip if busy == 0 => {
                    plan.starts.push(start(t));
                    busy += 1;
                }
                Overlap::Skip => skip(t, consecutive, &mut overlap_skips),
                Overlap::BufferOne if busy == 0 && plan.buffered.is_none() => {
                    plan.starts.push(start(t));
                    busy += 1;
                }
                Overlap::BufferOne if plan.buffered.is_none() => plan.buffered = Some(t),
                Overlap::BufferOne => skip(t, consecutive, &mut overlap_skips),
                Overlap::CancelRunning if Some(t) == last => {
                    plan.cancel_running = tick.running > 0;
                    plan.starts.push(start(t));
                }
                Overlap::CancelRunning => skip(t, consecutive, &mut overlap_skips),
            }
        }
        plan.skipped.extend(overlap_skips);
    }

    /// A run of this schedule finished and `running` others are still going:
    /// the buffered start to make now, if there is one and nothing runs. The
    /// caller clears the buffer in the same transaction.
    pub fn on_run_finished(
        &self,
        schedule_id: &str,
        running: u32,
        buffered: Option<u64>,
    ) -> Option<Start> {
        let t = buffered.filter(|_| running == 0)?;
        Some(Start {
            nominal_ms: t,
            start_at_ms: self.start_at(schedule_id, t),
            run_id: run_id(schedule_id, t),
        })
    }

    /// Every nominal fire time from `from_ms` to `to_ms` inclusive, to start now
    /// whatever the catch-up and overlap policies; an error if the range ends
    /// before it begins or holds more than [`MAX_BACKFILL`]. A range without
    /// a fire time gives no starts.
    pub fn backfill(
        &self,
        schedule_id: &str,
        from_ms: u64,
        to_ms: u64,
    ) -> Result<Vec<Start>, String> {
        if from_ms > to_ms {
            return Err("the backfill range ends before it begins".to_string());
        }
        let mut starts = Vec::new();
        let mut next = self.calendar.next_at_or_after(from_ms);
        while let Some(t) = next.filter(|&t| t <= to_ms) {
            if starts.len() == MAX_BACKFILL {
                return Err(format!(
                    "the range holds more than {MAX_BACKFILL} fire times; backfill a shorter range"
                ));
            }
            starts.push(Start {
                nominal_ms: t,
                start_at_ms: self.start_at(schedule_id, t),
                run_id: run_id(schedule_id, t),
            });
            next = self.next_after(t);
        }
        Ok(starts)
    }
}

/// The offered fire time before `t`, if `t` is offered and not the first.
fn prev_of(offered: &[u64], t: u64) -> u64 {
    match offered.binary_search(&t) {
        Ok(i) if i > 0 => offered[i - 1],
        _ => u64::MAX,
    }
}

/// The next `count` fire times of `cron` in `tz` strictly after `from_ms`, as the
/// scheduler computes them (`eflow schedule preview`); fewer, or none, if the
/// expression stops firing.
pub fn preview(cron: &str, tz: &str, from_ms: u64, count: usize) -> Result<Vec<u64>, String> {
    let calendar = Calendar::new(cron, tz)?;
    Ok(calendar.iter_after(from_ms).take(count).collect())
}

/// The delay of the start for nominal time `nominal_ms`, in `[0, jitter_ms)`.
///
/// FNV-1a over the id's bytes and the time's 8 little-endian bytes, then
/// SplitMix64's finalizer so that neighbouring times spread out. Stored start
/// times depend on it: change it only with a migration.
pub fn jitter_ms(schedule_id: &str, nominal_ms: u64, jitter_ms: u64) -> u64 {
    if jitter_ms == 0 {
        return 0;
    }
    let h = crate::hash::fnv1a(schedule_id.bytes().chain(nominal_ms.to_le_bytes()));
    crate::hash::mix64(h) % jitter_ms
}

/// The id of the run a schedule starts for a nominal time, e.g.
/// `nightly.20250301T030000Z` (`.123` before the `Z` when the time has
/// milliseconds).
///
/// URL-safe: only `A-Z a-z 0-9 - . _ ~`. Bytes of the schedule id outside
/// `A-Z a-z 0-9 - . _` are written `~XX` (hex), so distinct ids stay distinct
/// and, the time having a fixed shape, distinct pairs give distinct run ids.
pub fn run_id(schedule_id: &str, nominal_ms: u64) -> String {
    let mut out = String::with_capacity(schedule_id.len() + 18);
    for b in schedule_id.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("~{b:02X}"));
        }
    }
    out.push('.');
    out.extend(
        crate::time::format_rfc3339(nominal_ms)
            .chars()
            .filter(|c| !matches!(c, '-' | ':')),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_are_readable_and_url_safe() {
        assert_eq!(
            run_id("nightly", 1_740_798_000_000),
            "nightly.20250301T030000Z"
        );
        assert_eq!(
            run_id("acme/retrain 2", 1_740_798_000_250),
            "acme~2Fretrain~202.20250301T030000.250Z"
        );
        assert_eq!(run_id("a~b", 0), "a~7Eb.19700101T000000Z");
        let id = run_id("tenant:ünï/x?y#z&%", 42);
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b)),
            "{id}"
        );
    }

    #[test]
    fn jitter_is_reproducible_bounded_and_spread() {
        assert_eq!(jitter_ms("s", 1_000, 0), 0);
        assert_eq!(jitter_ms("s", 1_000, 1), 0);
        // Pinned: stored due times depend on it (an independent computation gives the same).
        assert_eq!(
            jitter_ms("tenant-1/nightly", 1_740_798_000_000, 300_000),
            210_167
        );
        // 1,000 tenants on the same schedule spread over the whole window.
        let mut buckets = [0u32; 10];
        for n in 0..1_000 {
            let j = jitter_ms(&format!("tenant-{n}/nightly"), 1_740_798_000_000, 300_000);
            assert!(j < 300_000);
            buckets[(j / 30_000) as usize] += 1;
        }
        assert!(
            buckets.iter().all(|&b| (60..=140).contains(&b)),
            "{buckets:?}"
        );
    }
}
