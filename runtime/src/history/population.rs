//! The population: per (tenant, flow, key) the key's latest top-level run,
//! and per (tenant, flow) how many keys have their latest run in each status
//! and on each version. The history consumer keeps both up to date in the
//! transaction that writes the runs ([`fold`], called by each backend's
//! `write`), so a page reads rows and never counts or groups runs.
//!
//! A key's latest run is the one created last (then the greatest id). Its
//! `failed_in_a_row` is how many of the key's runs, in the order they
//! started, failed one after the other up to the latest: 0 unless the latest
//! failed, 2 when it and the one before it failed. A retried run is the same
//! run: running again it is 0, failed again it is what it was. A run that
//! finishes after a newer run of its key started changes nothing here.
//! Subflow children and runs without a key are not in the population.
//!
//! Retention leaves the population as it is: a key whose latest run the
//! history forgot keeps its row, which names a run the history no longer
//! holds. A tenant's purge deletes its rows.

use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::store::RunRecord;

/// A key of a flow's population, with its latest run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Member {
    pub tenant: String,
    pub flow: String,
    pub key: String,
    /// The latest run's id, status, version, times and error.
    pub run: String,
    pub status: String,
    pub version: String,
    pub created_at: u64,
    pub updated_at: u64,
    pub error_code: Option<String>,
    /// How many of the key's latest runs failed in a row (0 unless the
    /// latest failed).
    pub failed_in_a_row: u32,
    /// The streak before the latest run: its `failed_in_a_row` once it fails.
    pub failed_before: u32,
}

/// What `GET /v1/population` asks.
#[derive(Debug, Clone, Default)]
pub struct PopulationQuery {
    /// `None`: every tenant (an admin's question).
    pub tenant: Option<String>,
    pub flow: String,
    pub status: Option<String>,
    pub version: Option<String>,
    /// Keys whose latest runs failed at least this many times in a row
    /// (at least 1). Such a page lists the longest streaks first.
    pub failed_in_a_row: Option<u32>,
    /// Keys whose latest run was created before this (ms): a bulk job's
    /// selection, frozen when it was made. Not in the indexes: it leaves
    /// out only the keys whose latest run is newer.
    pub before: Option<u64>,
    pub cursor: Option<String>,
    pub limit: u32,
}

/// A page of a population, by key (with `failed_in_a_row`: by streak,
/// longest first, then key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PopulationPage {
    pub items: Vec<Member>,
    pub next: Option<String>,
}

/// How many keys of a flow have their latest run in each status and on
/// each version, by name; none with 0.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PopulationCounts {
    pub by_status: Vec<(String, u64)>,
    pub by_version: Vec<(String, u64)>,
}

impl PopulationCounts {
    /// Counts from rows of (what, value, keys), `what` being `status` or
    /// `version`.
    pub(super) fn from_rows(rows: impl IntoIterator<Item = (String, String, i64)>) -> Self {
        let mut c = PopulationCounts::default();
        for (what, value, keys) in rows {
            if keys <= 0 {
                continue;
            }
            match what.as_str() {
                STATUS => c.by_status.push((value, keys as u64)),
                VERSION => c.by_version.push((value, keys as u64)),
                _ => {}
            }
        }
        c
    }
}

const STATUS: &str = "status";
const VERSION: &str = "version";

/// A change of one count: `keys` more (or fewer) keys of `tenant`'s `flow`
/// have their latest run with `what` = `value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CountDelta {
    pub flow: String,
    pub tenant: String,
    pub what: &'static str,
    pub value: String,
    pub keys: i64,
}

/// (tenant, flow, key) of a member.
pub type MemberKey = (String, String, String);

/// The population rows a batch of runs may change: those of its keyed
/// top-level runs, each once.
pub fn keys_of(runs: &[RunRecord]) -> Vec<MemberKey> {
    let mut seen = std::collections::HashSet::new();
    runs.iter()
        .filter_map(member_key)
        .filter(|k| seen.insert(k.clone()))
        .collect()
}

fn member_key(r: &RunRecord) -> Option<MemberKey> {
    match (&r.key, &r.parent) {
        (Some(key), None) if !r.tenant.is_empty() => {
            Some((r.tenant.clone(), r.flow.clone(), key.clone()))
        }
        _ => None,
    }
}

/// The rows `runs` (one batch, in the order written) make of the `held`
/// rows of their keys, and how the counts move: the rows to write (only
/// those that changed) and the count changes (none of 0).
pub fn fold(held: Vec<Member>, runs: &[RunRecord]) -> (Vec<Member>, Vec<CountDelta>) {
    let mut rows: HashMap<MemberKey, Member> = HashMap::new();
    let mut before: HashMap<MemberKey, Option<(String, String)>> = HashMap::new();
    for m in held {
        let k = (m.tenant.clone(), m.flow.clone(), m.key.clone());
        before.insert(k.clone(), Some((m.status.clone(), m.version.clone())));
        rows.insert(k, m);
    }
    // Older runs first, so a batch holding several runs of a key ends with
    // its newest; a run's repeats keep their order (a stable sort).
    let mut order: Vec<&RunRecord> = runs.iter().collect();
    order.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
    let mut changed: Vec<MemberKey> = Vec::new();
    let mut is_changed = std::collections::HashSet::new();
    for r in order {
        let Some(k) = member_key(r) else { continue };
        before.entry(k.clone()).or_insert(None);
        let mut moved = false;
        let row = rows.entry(k.clone()).or_insert_with(|| {
            moved = true;
            Member {
                tenant: k.0.clone(),
                flow: k.1.clone(),
                key: k.2.clone(),
                run: r.id.clone(),
                created_at: r.created_at,
                ..Member::default()
            }
        });
        if row.run != r.id {
            if (r.created_at, &r.id) < (row.created_at, &row.run) {
                continue;
            }
            // A newer run: the key's streak so far is what it goes on from.
            row.failed_before = row.failed_in_a_row;
            row.run.clone_from(&r.id);
            row.created_at = r.created_at;
            row.error_code = None;
            moved = true;
        }
        let last = row.clone();
        row.status.clone_from(&r.status);
        row.version.clone_from(&r.version);
        row.updated_at = r.updated_at;
        // As the run's row keeps it: a finished run's error, the one held
        // unless the batch brings one; none while it runs.
        row.error_code = if crate::bus::is_final(&r.status) {
            r.error_code.clone().or(last.error_code.clone())
        } else {
            None
        };
        row.failed_in_a_row = if r.status == "failed" {
            row.failed_before + 1
        } else {
            0
        };
        if (moved || *row != last) && is_changed.insert(k.clone()) {
            changed.push(k);
        }
    }
    let mut deltas: HashMap<(String, String, &'static str, String), i64> = HashMap::new();
    let mut members = Vec::with_capacity(changed.len());
    for k in changed {
        let Some(m) = rows.remove(&k) else { continue };
        let was = before.get(&k).cloned().flatten();
        let mut moved = |what: &'static str, value: &str, by: i64| {
            *deltas
                .entry((k.1.clone(), k.0.clone(), what, value.to_string()))
                .or_default() += by;
        };
        if let Some((status, version)) = &was {
            moved(STATUS, status, -1);
            moved(VERSION, version, -1);
        }
        moved(STATUS, &m.status, 1);
        moved(VERSION, &m.version, 1);
        members.push(m);
    }
    let mut deltas: Vec<CountDelta> = deltas
        .into_iter()
        .filter(|(_, keys)| *keys != 0)
        .map(|((flow, tenant, what, value), keys)| CountDelta {
            flow,
            tenant,
            what,
            value,
            keys,
        })
        .collect();
    deltas.sort_by(|a, b| {
        (&a.flow, &a.tenant, a.what, &a.value).cmp(&(&b.flow, &b.tenant, b.what, &b.value))
    });
    (members, deltas)
}

/// The columns a backend reads a [`Member`] from, in this order, of
/// `h_population` named `p`.
pub(super) const MEMBER_COLUMNS: &str = "SELECT p.tenant, p.flow, p.key, p.run, p.status, p.version, \
    p.created_at, p.updated_at, p.error_code, p.failed_in_a_row, p.failed_before";

/// The SQL of a population page, one row more than the page, on either
/// backend: by key within a tenant (by key, then tenant, over every
/// tenant); with a streak filter by streak, longest first, then so. Every
/// filter has an index in that order (the migrations' `h_population_*`).
/// The streak is a number written into the SQL, so that the planner sees
/// it implies the partial indexes' condition (`failed_in_a_row > 0`).
pub(super) fn page_query<'a, DB>(
    q: &'a PopulationQuery,
    prefix: &str,
) -> Result<sqlx::QueryBuilder<'a, DB>, super::store::Error>
where
    DB: sqlx::Database,
    <DB as sqlx::Database>::Arguments<'a>: Default,
    &'a str: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    String: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    i64: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    let limit = q.limit.clamp(1, 1000);
    let mut b = sqlx::QueryBuilder::<DB>::new(format!(
        "{prefix}{MEMBER_COLUMNS} FROM h_population p WHERE flow = "
    ));
    b.push_bind(q.flow.as_str());
    if let Some(t) = &q.tenant {
        b.push(" AND tenant = ").push_bind(t.as_str());
    }
    if let Some(s) = &q.status {
        b.push(" AND status = ").push_bind(s.as_str());
    }
    if let Some(v) = &q.version {
        b.push(" AND version = ").push_bind(v.as_str());
    }
    if let Some(t) = q.before {
        b.push(" AND created_at < ")
            .push_bind(t.min(i64::MAX as u64) as i64);
    }
    let streak = q.failed_in_a_row.map(|n| n.clamp(1, i32::MAX as u32));
    if let Some(n) = streak {
        // The partial indexes' own term too: SQLite uses a partial index
        // only for a query holding its condition as written.
        b.push(format!(
            " AND failed_in_a_row > 0 AND failed_in_a_row >= {n}"
        ));
    }
    if let Some(c) = &q.cursor {
        let (f, t, k) = decode_cursor(c).ok_or(super::store::Error::BadCursor)?;
        b.push(" AND ");
        if streak.is_some() {
            // A bound of the index range, then the rest of the streak `f`:
            // `+ 0` keeps the planner from answering the OR by two index
            // scans and a sort.
            b.push(format!(
                "failed_in_a_row <= {f} AND (failed_in_a_row + 0 < {f} OR "
            ));
        }
        if q.tenant.is_some() {
            b.push("key > ").push_bind(k);
        } else {
            b.push("(key, tenant) > (")
                .push_bind(k)
                .push(", ")
                .push_bind(t)
                .push(")");
        }
        if streak.is_some() {
            b.push(")");
        }
    }
    b.push(" ORDER BY ");
    if streak.is_some() {
        b.push("failed_in_a_row DESC, ");
    }
    b.push(if q.tenant.is_some() {
        "key"
    } else {
        "key, tenant"
    });
    b.push(" LIMIT ").push_bind(i64::from(limit) + 1);
    Ok(b)
}

/// Where a population page ends: its last member's streak (when the
/// query filters by it), tenant and key.
pub fn encode_cursor(m: &Member) -> String {
    let json = serde_json::to_vec(&(m.failed_in_a_row, &m.tenant, &m.key))
        .expect("a tuple of a number and strings is JSON");
    URL_SAFE_NO_PAD.encode(json)
}

pub fn decode_cursor(c: &str) -> Option<(u32, String, String)> {
    let bytes = URL_SAFE_NO_PAD.decode(c).ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(id: &str, created_at: u64, status: &str) -> RunRecord {
        RunRecord {
            id: id.into(),
            tenant: "acme".into(),
            flow: "Retrain".into(),
            version: "v1".into(),
            status: status.into(),
            key: Some("model-a".into()),
            created_at,
            updated_at: created_at + 1,
            ..RunRecord::default()
        }
    }

    /// Folds each batch onto what the one before left, as the store would.
    fn replay(batches: &[Vec<RunRecord>]) -> (Option<Member>, Vec<CountDelta>) {
        let mut held: Vec<Member> = Vec::new();
        let mut all = Vec::new();
        for b in batches {
            let (changed, deltas) = fold(held.clone(), b);
            for m in changed {
                held.retain(|h| h.key != m.key);
                held.push(m);
            }
            all.extend(deltas);
        }
        (held.pop(), all)
    }

    #[test]
    fn a_streak_counts_failed_runs_in_a_row_and_a_success_ends_it() {
        let (m, _) = replay(&[
            vec![run("r1", 1, "failed")],
            vec![run("r2", 2, "running")],
            vec![run("r2", 2, "failed")],
        ]);
        let m = m.unwrap();
        assert_eq!((m.run.as_str(), m.failed_in_a_row), ("r2", 2));
        let (m, _) = replay(&[
            vec![run("r1", 1, "failed"), run("r2", 2, "failed")],
            vec![run("r3", 3, "succeeded")],
        ]);
        assert_eq!(m.unwrap().failed_in_a_row, 0);
    }

    #[test]
    fn a_retry_is_the_same_run() {
        let (m, _) = replay(&[
            vec![run("r1", 1, "failed")],
            vec![run("r2", 2, "failed")],
            vec![run("r2", 2, "running")],
        ]);
        let m = m.unwrap();
        assert_eq!((m.status.as_str(), m.failed_in_a_row), ("running", 0));
        let (m, _) = replay(&[
            vec![run("r1", 1, "failed")],
            vec![run("r2", 2, "failed")],
            vec![run("r2", 2, "running")],
            vec![run("r2", 2, "failed")],
        ]);
        assert_eq!(m.unwrap().failed_in_a_row, 2);
    }

    #[test]
    fn an_older_run_changes_nothing_and_children_and_unkeyed_runs_are_left_out() {
        let child = RunRecord {
            parent: Some("r2".into()),
            ..run("r2.c.0", 5, "failed")
        };
        let unkeyed = RunRecord {
            key: None,
            ..run("r9", 9, "failed")
        };
        let (m, deltas) = replay(&[
            vec![run("r2", 2, "running")],
            vec![run("r1", 1, "failed"), child, unkeyed],
        ]);
        let m = m.unwrap();
        assert_eq!((m.run.as_str(), m.status.as_str()), ("r2", "running"));
        // One key, running, on v1: counted once.
        let sum = |what: &str, value: &str| -> i64 {
            deltas
                .iter()
                .filter(|d| d.what == what && d.value == value)
                .map(|d| d.keys)
                .sum()
        };
        assert_eq!(sum("status", "running"), 1);
        assert_eq!(sum("status", "failed"), 0);
        assert_eq!(sum("version", "v1"), 1);
    }

    #[test]
    fn counts_move_from_the_old_status_to_the_new() {
        let (_, deltas) = replay(&[vec![run("r1", 1, "running")], vec![run("r1", 1, "failed")]]);
        // The first batch counts the key in once by status and by version.
        let last: Vec<(&str, &str, i64)> = deltas[2..]
            .iter()
            .map(|d| (d.what, d.value.as_str(), d.keys))
            .collect();
        assert_eq!(
            last,
            vec![("status", "failed", 1), ("status", "running", -1)]
        );
    }

    #[test]
    fn cursors_round_trip() {
        let m = Member {
            tenant: "t|1".into(),
            key: "a\"b".into(),
            failed_in_a_row: 3,
            ..Member::default()
        };
        assert_eq!(
            decode_cursor(&encode_cursor(&m)),
            Some((3, "t|1".into(), "a\"b".into()))
        );
        assert_eq!(decode_cursor("nonsense"), None);
    }
}
