//! Private PostgreSQL and NATS servers for the cluster fault suite: each in a
//! directory of its own on a free port, crashed and started again by the
//! test, and killed by their own process ids when dropped. The machine's
//! shared servers (PostgreSQL on 5432, NATS on 4222) are never touched.
//!
//! PostgreSQL refuses to run as root: run as root (as on this project's
//! machines), `initdb` and `postgres` run through `runuser -u postgres`, in a
//! directory owned by that user; run as anyone else, as that user. The unix
//! socket is in the data directory.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::free_port;

/// Why a private server cannot be had here, for the test to skip (outside
/// CI) or fail (in CI) with.
pub fn missing(what: &str) -> Option<String> {
    match what {
        "postgres" => postgres_bin().err(),
        "nats" => (!Path::new(NATS_SERVER).exists())
            .then(|| format!("{NATS_SERVER} is missing: install nats-server (2.9 or newer)")),
        "faketime" => faketime().err(),
        _ => Some(format!("no private server called {what}")),
    }
}

/// Debian's libfaketime, multi-threaded flavour (`apt-get install
/// faketime`): preloaded into a process, it shifts the clock that process
/// reads (`FAKETIME=+30s`), and nothing else on the machine.
pub fn faketime() -> Result<PathBuf, String> {
    let lib = PathBuf::from(format!(
        "/usr/lib/{}-linux-gnu/faketime/libfaketimeMT.so.1",
        std::env::consts::ARCH
    ));
    if lib.exists() {
        Ok(lib)
    } else {
        Err(format!(
            "{} is missing: install Debian's faketime (apt-get install faketime)",
            lib.display()
        ))
    }
}

/// The newest `/usr/lib/postgresql/VERSION/bin` holding `initdb` and
/// `postgres` (the version is found, not fixed).
fn postgres_bin() -> Result<PathBuf, String> {
    let versions = Path::new("/usr/lib/postgresql");
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir(versions)
        .map_err(|e| format!("{}: {e}: install PostgreSQL's server", versions.display()))?
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            (bin.join("initdb").exists() && bin.join("postgres").exists()).then_some((version, bin))
        })
        .collect();
    found.sort();
    let (_, bin) = found.pop().ok_or_else(|| {
        format!(
            "no {}/VERSION/bin with initdb and postgres: install PostgreSQL's server",
            versions.display()
        )
    })?;
    if root() && !Path::new("/usr/sbin/runuser").exists() && !Path::new("/usr/bin/runuser").exists()
    {
        return Err("runuser is missing (util-linux): PostgreSQL cannot be run as root".into());
    }
    Ok(bin)
}

/// Whether this process runs as root (`Uid:` in `/proc/self/status`).
fn root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().next().map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// `program` as PostgreSQL's user: through `runuser` when this is root.
fn as_postgres(program: &Path) -> Command {
    if root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// The parent process id of `pid`, from `/proc/PID/stat`.
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid …`; comm may hold spaces and parentheses.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// The processes whose parent is `pid`.
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| parent_of(p) == Some(pid))
        .collect()
}

fn alive(pid: u32) -> bool {
    // A zombie has exited: only its parent's wait is missing.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = s[s.rfind(')')? + 1..].to_string();
            rest.split_whitespace().next().map(|st| st != "Z")
        })
        .unwrap_or(false)
}

fn signal(pid: u32, sig: &str) -> Result<(), String> {
    let status = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("kill -{sig} {pid}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("kill -{sig} {pid} failed ({status})"))
    }
}

fn wait_gone(pids: &[u32], within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while pids.iter().any(|&p| alive(p)) {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

fn log_file(path: &Path) -> Result<std::fs::File, String> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// How PostgreSQL is made to crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgCrash {
    /// SIGQUIT to the postmaster: what `pg_ctl stop -m immediate` sends. The
    /// postmaster ends its backends at once and exits without a checkpoint;
    /// the next start recovers from the WAL.
    Immediate,
    /// SIGKILL to the postmaster; its backends notice and exit by themselves
    /// (those that do not within 10 s are killed by their ids).
    Kill,
}

/// A private PostgreSQL server. Killed (SIGQUIT, then SIGKILL) when dropped;
/// its directory is removed then.
pub struct Postgres {
    bin: PathBuf,
    /// Owned by the `postgres` user: the data directory and the socket.
    data: PathBuf,
    log: PathBuf,
    pub port: u16,
    /// `runuser`, whose child is the postmaster (as root); or the
    /// postmaster itself.
    child: Option<Child>,
}

impl Postgres {
    /// `initdb` in `dir/pgdata` (trust authentication for `postgres`) and a
    /// first start on a free port.
    pub fn init(dir: &Path) -> Result<Postgres, String> {
        let bin = postgres_bin()?;
        let data = dir.join("pgdata");
        std::fs::create_dir_all(&data).map_err(|e| format!("{}: {e}", data.display()))?;
        if root() {
            // The postgres user must reach its directory, and own it.
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir)
                .map_err(|e| format!("{}: {e}", dir.display()))?
                .permissions()
                .mode();
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode | 0o011))
                .map_err(|e| format!("{}: {e}", dir.display()))?;
            let owned = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&data)
                .status()
                .map_err(|e| format!("chown: {e}"))?;
            if !owned.success() {
                return Err(format!("chown postgres {} failed", data.display()));
            }
        }
        let log = dir.join("postgres.log");
        let out = as_postgres(&bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            // The cluster made here is not under test: its files need not
            // reach the disk before the test starts.
            .args(["-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8"])
            .stdout(Stdio::null())
            .stderr(log_file(&log)?)
            .status()
            .map_err(|e| format!("initdb: {e}"))?;
        if !out.success() {
            return Err(format!("initdb failed ({out}); see {}", log.display()));
        }
        let mut pg = Postgres {
            bin,
            data,
            log,
            port: free_port(),
            child: None,
        };
        pg.start()?;
        Ok(pg)
    }

    /// The URL of its `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the postmaster on the same directory and port (after a crash
    /// it recovers from the WAL first). [`Postgres::ready`] waits for it.
    pub fn start(&mut self) -> Result<(), String> {
        if self.child.is_some() {
            return Err("PostgreSQL is running already".into());
        }
        let child = as_postgres(&self.bin.join("postgres"))
            .arg("-D")
            .arg(&self.data)
            .args(["-p", &self.port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .arg("-c")
            .arg(format!("unix_socket_directories={}", self.data.display()))
            // Durable, as the issue asks of the cluster: fsync and
            // synchronous commit stay on (their defaults).
            .args(["-c", "max_connections=200"])
            .stdout(Stdio::null())
            .stderr(log_file(&self.log)?)
            .spawn()
            .map_err(|e| format!("postgres did not start: {e}"))?;
        self.child = Some(child);
        Ok(())
    }

    /// Waits until it answers a query (a start after a crash replays the WAL
    /// first, refusing connections meanwhile).
    pub async fn ready(&mut self, within: Duration) -> Result<(), String> {
        use sqlx::Connection;
        let deadline = Instant::now() + within;
        let mut last = String::new();
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                self.child = None;
                return Err(format!(
                    "postgres exited on start ({status}); see {}",
                    self.log.display()
                ));
            }
            match sqlx::PgConnection::connect(&self.url()).await {
                Ok(mut conn) => match sqlx::query("SELECT 1").execute(&mut conn).await {
                    Ok(_) => {
                        let _ = conn.close().await;
                        return Ok(());
                    }
                    Err(e) => last = e.to_string(),
                },
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(format!(
            "postgres did not answer within {within:?} ({last}); see {}",
            self.log.display()
        ))
    }

    /// The postmaster's process id: the child of its `runuser` (as root),
    /// or the child itself.
    fn postmaster(&self) -> Option<u32> {
        let child = self.child.as_ref()?.id();
        if root() {
            children_of(child).into_iter().next()
        } else {
            Some(child)
        }
    }

    /// Crashes it; it stays down until [`Postgres::start`].
    pub fn crash(&mut self, how: PgCrash) -> Result<(), String> {
        let Some(postmaster) = self.postmaster() else {
            if let Some(mut child) = self.child.take() {
                let _ = child.kill();
                let _ = child.wait();
                return Err("postgres had exited before the crash".into());
            }
            return Err("PostgreSQL is not running".into());
        };
        let Some(mut child) = self.child.take() else {
            return Err("PostgreSQL is not running".into());
        };
        let backends = children_of(postmaster);
        match how {
            PgCrash::Immediate => {
                signal(postmaster, "QUIT")?;
                if !wait_gone(&[postmaster], Duration::from_secs(10)) {
                    let _ = signal(postmaster, "KILL");
                }
            }
            PgCrash::Kill => signal(postmaster, "KILL")?,
        }
        // Backends of a killed postmaster exit once they notice; a new
        // postmaster cannot start while one still holds shared memory.
        if !wait_gone(&backends, Duration::from_secs(10)) {
            for &b in &backends {
                if alive(b) {
                    let _ = signal(b, "KILL");
                }
            }
            wait_gone(&backends, Duration::from_secs(5));
        }
        let _ = child.wait();
        Ok(())
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some(pm) = self.postmaster() {
            let _ = signal(pm, "QUIT");
            if !wait_gone(&[pm], Duration::from_secs(10)) {
                let _ = self.crash(PgCrash::Kill);
            }
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

const NATS_SERVER: &str = "/usr/sbin/nats-server";

/// A private NATS server with JetStream, its store in a directory of its
/// own. Killed when dropped; its directory is removed then.
pub struct Nats {
    store: PathBuf,
    log: PathBuf,
    pub port: u16,
    child: Option<Child>,
}

impl Nats {
    /// Starts it on a free port with its JetStream store in `dir/nats`.
    pub fn start_in(dir: &Path) -> Result<Nats, String> {
        if let Some(why) = missing("nats") {
            return Err(why);
        }
        let store = dir.join("nats");
        std::fs::create_dir_all(&store).map_err(|e| format!("{}: {e}", store.display()))?;
        let mut nats = Nats {
            store,
            log: dir.join("nats.log"),
            port: free_port(),
            child: None,
        };
        nats.start()?;
        Ok(nats)
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts it again on the same store and port.
    pub fn start(&mut self) -> Result<(), String> {
        if self.child.is_some() {
            return Err("nats-server is running already".into());
        }
        let child = Command::new(NATS_SERVER)
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(&self.store)
            .stdout(Stdio::null())
            .stderr(log_file(&self.log)?)
            .spawn()
            .map_err(|e| format!("nats-server did not start: {e}"))?;
        self.child = Some(child);
        Ok(())
    }

    /// Waits until it greets a client with JetStream on (it recovers its
    /// streams before it listens).
    pub async fn ready(&mut self, within: Duration) -> Result<(), String> {
        use tokio::io::AsyncBufReadExt;
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                self.child = None;
                return Err(format!(
                    "nats-server exited on start ({status}); see {}",
                    self.log.display()
                ));
            }
            if let Ok(s) = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await {
                let mut line = String::new();
                let mut reader = tokio::io::BufReader::new(s);
                let read =
                    tokio::time::timeout(Duration::from_secs(2), reader.read_line(&mut line)).await;
                if matches!(read, Ok(Ok(_))) && line.contains("\"jetstream\":true") {
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(format!(
            "nats-server did not answer within {within:?}; see {}",
            self.log.display()
        ))
    }

    /// SIGKILL: whatever it had not written to its store is lost.
    pub fn kill(&mut self) -> Result<(), String> {
        let Some(mut child) = self.child.take() else {
            return Err("nats-server is not running".into());
        };
        child.kill().map_err(|e| format!("kill nats-server: {e}"))?;
        let _ = child.wait();
        Ok(())
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.kill();
        let _ = std::fs::remove_dir_all(&self.store);
    }
}
