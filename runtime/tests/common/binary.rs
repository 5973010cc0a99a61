//! The real `eflow` binary as a test process: started on a free port and a
//! fresh data directory, killed (and its directory removed) when dropped.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use super::{ADMIN, poll_until};

/// The `eflow serve` process of a test, killed when the test ends.
pub struct Eflow {
    pub child: Child,
    pub addr: SocketAddr,
    pub data: PathBuf,
}

impl Drop for Eflow {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

/// Starts the binary with `flags` and waits until it answers.
pub async fn eflow(name: &str, flags: &[&str]) -> Eflow {
    eflow_with_env(name, flags, &[]).await
}

/// [`eflow`] with more variables in its environment.
pub async fn eflow_with_env(name: &str, flags: &[&str], env: &[(&str, &str)]) -> Eflow {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let data = std::env::temp_dir().join(format!("eflow-{name}-{}-{port}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let child = Command::new(env!("CARGO_BIN_EXE_eflow"))
        .args(["serve", "--data"])
        .arg(&data)
        .args(["--listen", &addr.to_string(), "--admin-token", ADMIN])
        .args(flags)
        .envs(env.iter().copied())
        .env("EFLOW_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start eflow serve");
    let server = Eflow { child, addr, data };
    let url = format!("http://{addr}/v1/health");
    poll_until(
        "eflow to answer",
        std::time::Duration::from_secs(60),
        || async {
            let r = reqwest::get(&url).await.ok()?;
            r.status().is_success().then_some(())
        },
    )
    .await;
    server
}

/// `VmRSS` or `VmHWM` of a process, in MB.
pub fn proc_mb(pid: u32, field: &str) -> f64 {
    eflow_runtime::service::process_status_mb(&pid.to_string(), &format!("{field}:"))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}
