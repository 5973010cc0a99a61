//! `eflow bulk`: bulk actions, durable jobs that cancel or retry every run a
//! filter selects, previewed and confirmed before they start.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::bail;
use clap::{Args, Subcommand, ValueEnum};

use super::table::Table;
use super::{Conn, client, opt, print};
use crate::api::model::*;
use crate::cli::client::seg;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Action {
    /// Cancel each run (finished ones are skipped).
    Cancel,
    /// Retry each failed run (others are skipped).
    Retry,
}

/// The runs a bulk job acts on: the filter of `eflow run list`, or with
/// `--population` the latest run of each key `eflow population` lists.
#[derive(Debug, Args, Clone)]
pub struct Filter {
    /// Act on the latest run of each key of `--flow`'s population (filtered
    /// by `--status`, `--version` and `--failed-in-a-row`), not on a run list.
    #[arg(long)]
    pub population: bool,
    /// With `--population`: keys whose latest runs failed at least this many
    /// times in a row.
    #[arg(long, requires = "population")]
    pub failed_in_a_row: Option<u32>,
    /// The tenant (with an admin token, which must name one).
    #[arg(long)]
    pub tenant: Option<String>,
    #[arg(long)]
    pub flow: Option<String>,
    #[arg(long)]
    pub version: Option<String>,
    /// created, running, succeeded, failed or cancelled.
    #[arg(long)]
    pub status: Option<String>,
    /// Runs that failed at this step.
    #[arg(long)]
    pub step: Option<String>,
    /// Runs that failed with this error code.
    #[arg(long)]
    pub error: Option<String>,
    /// Runs of this key (the model or customer they belong to).
    #[arg(long)]
    pub key: Option<String>,
    /// Created at or after (RFC 3339).
    #[arg(long)]
    pub since: Option<String>,
    /// Created before (RFC 3339).
    #[arg(long)]
    pub until: Option<String>,
}

impl Filter {
    fn selector(self: Box<Self>) -> anyhow::Result<BulkSelector> {
        if !self.population {
            return Ok(BulkSelector::Runs(RunSelector {
                tenant: self.tenant,
                flow: self.flow,
                version: self.version,
                status: self.status,
                step: self.step,
                error: self.error,
                key: self.key,
                since: self.since,
                until: self.until,
            }));
        }
        let run_only = [
            ("--step", &self.step),
            ("--error", &self.error),
            ("--key", &self.key),
            ("--since", &self.since),
            ("--until", &self.until),
        ];
        if let Some((flag, _)) = run_only.iter().find(|(_, v)| v.is_some()) {
            bail!(
                "{flag} filters a run list, not a population: leave it out, or drop --population"
            );
        }
        let Some(flow) = self.flow else {
            bail!("--population needs --flow: the flow whose keys to act on");
        };
        Ok(BulkSelector::Population(PopulationSelector {
            tenant: self.tenant,
            flow,
            status: self.status,
            version: self.version,
            failed_in_a_row: self.failed_in_a_row,
        }))
    }
}

#[derive(Debug, Subcommand)]
pub enum BulkCommand {
    /// Start a bulk job over the runs a filter selects, created up to now.
    /// It shows how many runs it will touch and asks first, unless `--yes`.
    Start {
        #[arg(value_enum)]
        action: Action,
        #[command(flatten)]
        filter: Box<Filter>,
        /// Why, recorded with the job and in each run's events.
        #[arg(long)]
        reason: Option<String>,
        /// Runs acted on per second, at most (default 1000).
        #[arg(long)]
        rate: Option<u32>,
        /// Start without asking.
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// A bulk job's state and counts.
    Get {
        id: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Bulk jobs, newest first.
    List {
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// From a previous page's `next`.
        #[arg(long)]
        cursor: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Pause a running bulk job.
    Pause {
        id: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Resume a paused bulk job.
    Resume {
        id: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Cancel a bulk job: it acts on no more runs.
    Cancel {
        id: String,
        #[command(flatten)]
        conn: Conn,
    },
}

pub async fn bulk_command(bc: BulkCommand) -> anyhow::Result<()> {
    match bc {
        BulkCommand::Start {
            action,
            filter,
            reason,
            rate,
            yes,
            conn,
        } => {
            let c = client(&conn)?;
            let req = BulkRequest {
                action: match action {
                    Action::Cancel => BulkAction::Cancel,
                    Action::Retry => BulkAction::Retry,
                },
                query: filter.selector()?,
                reason,
                rate,
            };
            if !yes {
                let p: BulkPreview = c.post("/v1/bulk/preview", &req).await?;
                let mut err = std::io::stderr().lock();
                write!(err, "{}", preview_text(&p))?;
                if p.runs == 0 {
                    bail!("the filter selects no run: nothing to do");
                }
                if !std::io::stdin().is_terminal() {
                    bail!("not started: add --yes to start it without being asked");
                }
                write!(err, "start it? [y/N] ")?;
                err.flush()?;
                let mut answer = String::new();
                std::io::stdin().lock().read_line(&mut answer)?;
                if !matches!(answer.trim(), "y" | "Y" | "yes") {
                    bail!("not started");
                }
            }
            let r: BulkJobView = c.post("/v1/bulk", &req).await?;
            print(conn.output, &r, job_text)
        }
        BulkCommand::Get { id, conn } => {
            let c = client(&conn)?;
            let r: BulkJobView = c.get(&format!("/v1/bulk/{}", seg(&id)), &[]).await?;
            print(conn.output, &r, job_text)
        }
        BulkCommand::List {
            tenant,
            limit,
            cursor,
            conn,
        } => {
            let c = client(&conn)?;
            let mut q = vec![("limit", limit.to_string())];
            opt(&mut q, "tenant", &tenant);
            opt(&mut q, "cursor", &cursor);
            let r: Page<BulkJobView> = c.get("/v1/bulk", &q).await?;
            print(conn.output, &r, |r| {
                let mut t = Table::new(vec![
                    "JOB", "TENANT", "ACTION", "STATE", "SELECTED", "ACTED", "SKIPPED", "ERRORS",
                    "CREATED",
                ]);
                for j in &r.items {
                    t.row(vec![
                        j.id.clone(),
                        j.tenant.clone(),
                        j.action.as_str().into(),
                        j.state.clone(),
                        j.selected.to_string(),
                        j.acted.to_string(),
                        j.skipped.to_string(),
                        j.errors.to_string(),
                        j.created_at.clone(),
                    ]);
                }
                let mut out = t.render();
                if let Some(n) = &r.next {
                    out.push_str(&format!("more: --cursor {n}\n"));
                }
                out
            })
        }
        BulkCommand::Pause { id, conn } => change(&id, "pause", &conn).await,
        BulkCommand::Resume { id, conn } => change(&id, "resume", &conn).await,
        BulkCommand::Cancel { id, conn } => change(&id, "cancel", &conn).await,
    }
}

async fn change(id: &str, verb: &str, conn: &Conn) -> anyhow::Result<()> {
    let c = client(conn)?;
    let r: BulkJobView = c
        .post(
            &format!("/v1/bulk/{}/{verb}", seg(id)),
            &serde_json::json!({}),
        )
        .await?;
    print(conn.output, &r, job_text)
}

fn preview_text(p: &BulkPreview) -> String {
    let more = if p.more { "at least " } else { "" };
    let mut s = format!(
        "{} would touch {more}{} run{} (those created up to its start), first:\n",
        p.action.as_str(),
        p.runs,
        if p.runs == 1 { "" } else { "s" }
    );
    let mut t = Table::new(vec!["RUN", "FLOW", "STATUS", "CREATED"]);
    for r in &p.first {
        t.row(vec![
            r.id.clone(),
            r.flow.clone(),
            r.status.clone(),
            r.created_at.clone(),
        ]);
    }
    s.push_str(&t.render());
    s
}

fn job_text(j: &BulkJobView) -> String {
    let mut s = format!(
        "bulk job {}  {}  {} of tenant {}  at most {}/s  by {}\n",
        j.id,
        j.state,
        j.action.as_str(),
        j.tenant,
        j.rate,
        j.created_by
    );
    s.push_str(&format!(
        "selected {}  acted {}  skipped {}  errors {}\n",
        j.selected, j.acted, j.skipped, j.errors
    ));
    for (why, n) in &j.skipped_by {
        s.push_str(&format!("  skipped {n}: {why}\n"));
    }
    if let Some(e) = &j.last_error {
        s.push_str(&format!("last error: {e}\n"));
    }
    s
}
