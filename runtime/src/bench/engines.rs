//! `eflow bench --engines N`: N - 1 more engine processes beside the bench's
//! embedded server, each an `eflow serve --role engine` of this same binary
//! on the same store and bus, sharing the shards with it. The bench reads
//! their counters from their `/metrics` and their CPU and memory from
//! `/proc`, and adds them to the embedded server's.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;

/// What an extra engine is started with.
pub struct EngineConfig<'a> {
    pub store: &'a str,
    pub history_store: &'a str,
    pub bus: &'a str,
    pub shards: u32,
    /// Where remote systems send callbacks: the embedded server's API (an
    /// engine-only process serves no API).
    pub public_url: &'a str,
}

/// One extra engine process, killed (and its data directory removed) when dropped.
pub struct EngineProcess {
    child: std::process::Child,
    pub addr: SocketAddr,
    data: PathBuf,
}

/// The counters of one process's `/metrics` the bench adds up.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counters {
    pub transitions: u64,
    pub commits: u64,
    pub finished: u64,
    pub bytes_written: u64,
    pub shards_held: u64,
}

impl EngineProcess {
    /// Starts `eflow serve --role engine` in `under/engine-{index}` and waits
    /// until it answers on its operations port.
    pub async fn spawn(
        config: &EngineConfig<'_>,
        under: &Path,
        index: usize,
    ) -> anyhow::Result<EngineProcess> {
        let exe = std::env::current_exe().context("finding this binary to start an engine")?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .context("finding a free port for an engine")?
            .port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let data = under.join(format!("engine-{index}"));
        let child = std::process::Command::new(exe)
            .arg("serve")
            .arg("--data")
            .arg(&data)
            .args(["--role", "engine", "--listen", &addr.to_string()])
            .args(["--store", config.store])
            .args(["--history-store", config.history_store])
            .args(["--bus", config.bus])
            .args(["--shards", &config.shards.to_string()])
            .args(["--public-url", config.public_url])
            .env("EFLOW_LOG", "warn")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .context("starting an engine process (`eflow serve --role engine`)")?;
        let engine = EngineProcess { child, addr, data };
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let answered = client
                .get(format!("http://{addr}/v1/health"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if answered {
                return Ok(engine);
            }
            if Instant::now() > deadline {
                anyhow::bail!("engine process {index} did not answer on {addr} within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its counters, from its `/metrics`.
    pub async fn counters(&self, client: &reqwest::Client) -> anyhow::Result<Counters> {
        let text = client
            .get(format!("http://{}/metrics", self.addr))
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        Ok(parse_counters(&text))
    }
}

impl Drop for EngineProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

/// The counters the bench adds up, from Prometheus' text format (a sample
/// line is `NAME VALUE`; lines starting with `#` are comments).
pub fn parse_counters(text: &str) -> Counters {
    let mut c = Counters::default();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let mut parts = line.split_whitespace();
        let (Some(name), Some(value)) = (parts.next(), parts.next()) else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let slot = match name {
            "eflow_transitions_total" => &mut c.transitions,
            "eflow_commits_total" => &mut c.commits,
            "eflow_runs_finished_total" => &mut c.finished,
            "eflow_bytes_written_total" => &mut c.bytes_written,
            "eflow_shards_held" => &mut c.shards_held,
            _ => continue,
        };
        *slot = value as u64;
    }
    c
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_the_counters_it_adds_up_and_skips_the_rest() {
        let c = super::parse_counters(
            "# HELP eflow_transitions_total x\n# TYPE eflow_transitions_total counter\n\
             eflow_transitions_total 1234\neflow_commits_total 56\n\
             eflow_commit_seconds_bucket{le=\"0.005\"} 9\neflow_runs_finished_total 7\n\
             eflow_bytes_written_total 1e3\nnot a number here\n",
        );
        assert_eq!(
            (c.transitions, c.commits, c.finished, c.bytes_written),
            (1234, 56, 7, 1000)
        );
    }
}
