//! The harness of the whole-system tests: the real binaries as a user runs them (a
//! server process in a directory of its own, the CLI beside it, the language server
//! over stdio), with no library of eflow's linked in.

pub mod chaos;
pub mod instances;
pub mod proxy;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The repository's root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// The path of one of eflow's binaries (`eflow`, `eflowc`, `eflow-lsp`), built from
/// this checkout. Under cargo, the first call builds all three (a no-op when they are
/// fresh), so the tests never run stale binaries, whichever package was asked for.
pub fn bin(name: &str) -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        // target/<profile>/deps/<this test> → target/<profile>
        let exe = std::env::current_exe().expect("the test knows its own path");
        let dir = exe
            .parent()
            .and_then(Path::parent)
            .map(Path::to_path_buf)
            .expect("the test runs from target/<profile>/deps");
        if let Ok(cargo) = std::env::var("CARGO") {
            let profile = match dir.file_name().and_then(|n| n.to_str()) {
                Some("debug") | None => "dev".to_string(),
                Some(other) => other.to_string(),
            };
            // Without the variables cargo set for this test: build scripts
            // that watch them (ring's watches CARGO_MANIFEST_DIR) would see
            // them change and rebuild, here and again in the next `cargo test`.
            let mut command = Command::new(cargo);
            for (key, _) in std::env::vars_os() {
                let key = key.to_string_lossy();
                if key == "CARGO_MANIFEST_DIR"
                    || key == "CARGO_MANIFEST_PATH"
                    || key == "CARGO_CRATE_NAME"
                    || key == "CARGO_PRIMARY_PACKAGE"
                    || key == "CARGO_TARGET_TMPDIR"
                    || key == "CARGO_RUSTC_CURRENT_DIR"
                    || key.starts_with("CARGO_PKG_")
                    || key.starts_with("CARGO_BIN_")
                {
                    command.env_remove(key.as_ref());
                }
            }
            let status = command
                .current_dir(repo())
                .args(["build", "--quiet", "--profile", &profile, "--bins"])
                .args([
                    "-p",
                    "eflow-compiler",
                    "-p",
                    "eflow-runtime",
                    "-p",
                    "eflow-lsp",
                ])
                .status()
                .expect("cargo runs");
            assert!(status.success(), "building the binaries failed");
        }
        dir
    });
    let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build --bins`",
        path.display()
    );
    path
}

/// A free port on loopback (bound, then released for the server to take).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Polls `f` every 100 ms until it returns `Some`, or panics after `deadline`.
pub fn wait_for<T>(what: &str, deadline: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `eflow serve` run in a directory of its own, as the README's quickstart does,
/// on a port of its own; the CLI is run in the same directory, so it finds the
/// admin token the server wrote to `.eflow/admin-token`. Killed when dropped.
pub struct Server {
    child: Child,
    pub dir: PathBuf,
    pub url: String,
}

impl Server {
    /// Starts `eflow serve` in `dir` and waits until its API answers.
    pub fn start(dir: &Path) -> Server {
        let port = free_port();
        let url = format!("http://127.0.0.1:{port}");
        let log = std::fs::File::create(dir.join("server.log")).expect("a log file");
        let child = Command::new(bin("eflow"))
            .current_dir(dir)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("eflow serve starts");
        let server = Server {
            child,
            dir: dir.to_path_buf(),
            url,
        };
        wait_for("the server's API", Duration::from_secs(30), || {
            std::net::TcpStream::connect(("127.0.0.1", port))
                .ok()
                .filter(|_| dir.join(".eflow/admin-token").exists())
        });
        server
    }

    /// The `eflow` CLI in the server's directory, pointed at it with the admin
    /// token the server wrote (the CLI reads that file by itself only for the
    /// default address, which parallel tests cannot share).
    pub fn eflow(&self, args: &[&str]) -> Output {
        let token = std::fs::read_to_string(self.dir.join(".eflow/admin-token"))
            .expect("the server wrote its admin token");
        Command::new(bin("eflow"))
            .current_dir(&self.dir)
            .env("EFLOW_SERVER", &self.url)
            .env("EFLOW_TOKEN", token.trim())
            .args(args)
            .output()
            .expect("eflow runs")
    }

    /// [`Server::eflow`], which must succeed; its standard output.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.eflow(args);
        assert!(
            out.status.success(),
            "`eflow {}` failed ({}):\n{}{}\nserver log:\n{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// [`Server::ok`] with `-o json`, parsed.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        let text = self.ok(&all);
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("`eflow {}` printed no JSON ({e}):\n{text}", all.join(" ")))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `eflowc` with `args` in `dir`.
pub fn eflowc(dir: &Path, args: &[&str]) -> Output {
    Command::new(bin("eflowc"))
        .current_dir(dir)
        .args(args)
        .output()
        .expect("eflowc runs")
}

/// `eflow-lsp` over stdio, spoken to as an editor does: JSON-RPC with
/// `Content-Length` framing. Killed when dropped.
pub struct LanguageServer {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    next_id: i64,
    /// Notifications received while waiting for a response.
    pub notifications: Vec<Value>,
}

impl LanguageServer {
    /// Starts `eflow-lsp` and completes the `initialize` handshake with `root`.
    pub fn start(root: &Path) -> LanguageServer {
        let mut child = Command::new(bin("eflow-lsp"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("eflow-lsp starts");
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut ls = LanguageServer {
            child,
            stdin,
            stdout,
            next_id: 1,
            notifications: Vec::new(),
        };
        let root_uri = uri(root);
        ls.request(
            "initialize",
            json!({
                "processId": std::process::id(),
                "rootUri": root_uri,
                "workspaceFolders": [{ "uri": root_uri, "name": "root" }],
                "capabilities": {
                    "textDocument": {
                        "hover": { "contentFormat": ["markdown", "plaintext"] },
                        "publishDiagnostics": {}
                    }
                }
            }),
        );
        ls.notify("initialized", json!({}));
        ls
    }

    fn send(&mut self, msg: &Value) {
        let body = msg.to_string();
        write!(self.stdin, "Content-Length: {}\r\n\r\n{body}", body.len())
            .and_then(|()| self.stdin.flush())
            .expect("the language server reads its input");
    }

    /// The next message the server sends.
    pub fn receive(&mut self) -> Value {
        let mut length = None;
        loop {
            let mut line = String::new();
            let n = self
                .stdout
                .read_line(&mut line)
                .expect("the language server's output");
            assert!(n > 0, "the language server closed its output");
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some(v) = line.strip_prefix("Content-Length: ") {
                length = v.parse::<usize>().ok();
            }
        }
        let mut body = vec![0; length.expect("a Content-Length header")];
        self.stdout
            .read_exact(&mut body)
            .expect("the message's body");
        serde_json::from_slice(&body).expect("a JSON message")
    }

    pub fn notify(&mut self, method: &str, params: Value) {
        self.send(&json!({ "jsonrpc": "2.0", "method": method, "params": params }));
    }

    /// Sends a request and returns its result, keeping notifications that arrive
    /// before it; answers the server's own requests with `null`.
    pub fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        self.send(&json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params }));
        loop {
            let msg = self.receive();
            if msg.get("id") == Some(&json!(id)) && msg.get("method").is_none() {
                assert!(msg.get("error").is_none(), "{method} failed: {msg}");
                return msg["result"].clone();
            }
            if let (Some(server_id), Some(_)) = (msg.get("id"), msg.get("method")) {
                let reply = json!({ "jsonrpc": "2.0", "id": server_id, "result": null });
                self.send(&reply);
                continue;
            }
            self.notifications.push(msg);
        }
    }

    /// The diagnostics last published for `uri`, waiting until some are.
    pub fn diagnostics(&mut self, uri: &str) -> Vec<Value> {
        loop {
            if let Some(n) = self.notifications.iter().rev().find(|n| {
                n["method"] == "textDocument/publishDiagnostics" && n["params"]["uri"] == uri
            }) {
                return n["params"]["diagnostics"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
            }
            let msg = self.receive();
            self.notifications.push(msg);
        }
    }
}

impl Drop for LanguageServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `file://` URI of a path.
pub fn uri(path: &Path) -> String {
    format!("file://{}", path.display())
}

/// Copies the directory `from` into `to`, recursively.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from)
        .expect("readable directory")
        .flatten()
    {
        let path = entry.path();
        let target = to.join(entry.file_name());
        if path.is_dir() {
            copy_dir(&path, &target);
        } else {
            std::fs::copy(&path, &target).expect("copy");
        }
    }
}
