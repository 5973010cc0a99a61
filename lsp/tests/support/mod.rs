//! A scripted LSP client for the protocol tests: it starts the real `eflow-lsp`
//! binary and talks JSON-RPC to it over stdio, exactly as an editor does.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub const TIMEOUT: Duration = Duration::from_secs(20);

pub struct Client {
    child: Child,
    stdin: ChildStdin,
    messages: Receiver<Value>,
    /// Notifications and server requests received while waiting for something else.
    pub backlog: Vec<Value>,
    next_id: i64,
    pub root: PathBuf,
}

/// A copy of some files in a fresh folder: the workspace of one test.
pub struct Fixture {
    pub dir: tempfile::TempDir,
}

impl Fixture {
    pub fn new(files: &[(&str, &str)]) -> Fixture {
        let dir = tempfile::tempdir().expect("temp dir");
        for (name, text) in files {
            let p = dir.path().join(name);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(p, text).expect("write fixture");
        }
        Fixture { dir }
    }

    /// The repository's examples, copied.
    pub fn examples() -> Fixture {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        let mut files = Vec::new();
        for entry in walk(&root) {
            let rel = entry
                .strip_prefix(&root)
                .expect("under root")
                .to_string_lossy()
                .to_string();
            files.push((rel, std::fs::read_to_string(&entry).expect("read example")));
        }
        let refs: Vec<(&str, &str)> = files
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        Fixture::new(&refs)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        std::fs::canonicalize(self.dir.path())
            .expect("canonical")
            .join(name)
    }

    pub fn uri(&self, name: &str) -> String {
        url::Url::from_file_path(self.path(name))
            .expect("file url")
            .to_string()
    }

    pub fn text(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).expect("read")
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("read dir").flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else if p.extension().is_some_and(|x| x == "eflow") {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// Client capabilities of a modern editor: snippets, markdown, hierarchical
/// symbols; push diagnostics only.
pub fn editor_caps() -> Value {
    json!({
        "textDocument": {
            "completion": { "completionItem": { "snippetSupport": true } },
            "hover": { "contentFormat": ["markdown", "plaintext"] },
            "documentSymbol": { "hierarchicalDocumentSymbolSupport": true },
            "synchronization": { "didSave": true }
        },
        "workspace": { "workspaceFolders": true }
    })
}

impl Client {
    pub fn start(root: &Path, capabilities: Value, options: Value) -> Client {
        Client::start_with_env(root, capabilities, options, &[])
    }

    pub fn start_with_env(
        root: &Path,
        capabilities: Value,
        options: Value,
        env: &[(&str, &str)],
    ) -> Client {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_eflow-lsp"));
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let cache = root.join(".cache");
        cmd.env("XDG_CACHE_HOME", &cache);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start eflow-lsp");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            loop {
                let mut len = None;
                loop {
                    let mut line = String::new();
                    match r.read_line(&mut line) {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                    let line = line.trim_end();
                    if line.is_empty() {
                        break;
                    }
                    if let Some(v) = line.strip_prefix("Content-Length: ") {
                        len = v.parse::<usize>().ok();
                    }
                }
                let Some(len) = len else { return };
                let mut buf = vec![0; len];
                if r.read_exact(&mut buf).is_err() {
                    return;
                }
                let Ok(v) = serde_json::from_slice::<Value>(&buf) else {
                    return;
                };
                if tx.send(v).is_err() {
                    return;
                }
            }
        });
        let root = std::fs::canonicalize(root).expect("canonical root");
        let mut c = Client {
            child,
            stdin,
            messages: rx,
            backlog: Vec::new(),
            next_id: 0,
            root: root.clone(),
        };
        let root_uri = url::Url::from_file_path(&root)
            .expect("root url")
            .to_string();
        let result = c.request(
            "initialize",
            json!({
                "processId": null,
                "rootUri": root_uri,
                "capabilities": capabilities,
                "initializationOptions": options,
                "workspaceFolders": [{ "uri": root_uri, "name": "test" }],
            }),
        );
        assert!(
            result["capabilities"].is_object(),
            "initialize answered {result}"
        );
        c.notify("initialized", json!({}));
        c
    }

    pub fn send(&mut self, v: &Value) {
        let body = serde_json::to_string(v).expect("json");
        write!(self.stdin, "Content-Length: {}\r\n\r\n{}", body.len(), body)
            .expect("write to server");
        self.stdin.flush().expect("flush");
    }

    pub fn notify(&mut self, method: &str, params: Value) {
        self.send(&json!({ "jsonrpc": "2.0", "method": method, "params": params }));
    }

    /// Send a request and wait for its whole response (result or error).
    pub fn request_raw(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        self.send(&json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params }));
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let m = self
                .next_message(deadline)
                .unwrap_or_else(|| panic!("no answer to {method} within {TIMEOUT:?}"));
            if m.get("id") == Some(&json!(id)) && m.get("method").is_none() {
                return m;
            }
            self.answer_server_request(&m);
            self.backlog.push(m);
        }
    }

    /// Send a request; its result, failing the test on an error.
    pub fn request(&mut self, method: &str, params: Value) -> Value {
        let r = self.request_raw(method, params);
        if let Some(e) = r.get("error") {
            panic!("{method} failed: {e}");
        }
        r["result"].clone()
    }

    fn answer_server_request(&mut self, m: &Value) {
        // Requests from the server (registrations, refreshes) get an empty answer.
        if m.get("method").is_some()
            && let Some(id) = m.get("id")
        {
            let id = id.clone();
            self.send(&json!({ "jsonrpc": "2.0", "id": id, "result": null }));
        }
    }

    fn next_message(&mut self, deadline: Instant) -> Option<Value> {
        let wait = deadline.saturating_duration_since(Instant::now());
        match self.messages.recv_timeout(wait) {
            Ok(m) => Some(m),
            Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => None,
        }
    }

    /// Wait for a notification matching `pred`, looking at the backlog first.
    pub fn wait_for(&mut self, method: &str, pred: impl Fn(&Value) -> bool) -> Value {
        if let Some(i) = self
            .backlog
            .iter()
            .position(|m| m["method"] == method && pred(&m["params"]))
        {
            return self.backlog.remove(i)["params"].clone();
        }
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let m = self.next_message(deadline).unwrap_or_else(|| {
                panic!(
                    "no {method} notification within {TIMEOUT:?}; backlog: {:?}",
                    self.backlog
                )
            });
            self.answer_server_request(&m);
            if m["method"] == method && pred(&m["params"]) {
                return m["params"].clone();
            }
            self.backlog.push(m);
        }
    }

    /// The next diagnostics pushed for a URI.
    pub fn diagnostics(&mut self, uri: &str) -> Vec<Value> {
        let p = self.wait_for("textDocument/publishDiagnostics", |p| p["uri"] == uri);
        p["diagnostics"].as_array().cloned().unwrap_or_default()
    }

    pub fn open(&mut self, uri: &str, text: &str) {
        self.notify(
            "textDocument/didOpen",
            json!({ "textDocument": { "uri": uri, "languageId": "eflow", "version": 1, "text": text } }),
        );
    }

    pub fn change_full(&mut self, uri: &str, version: i32, text: &str) {
        self.notify(
            "textDocument/didChange",
            json!({ "textDocument": { "uri": uri, "version": version }, "contentChanges": [{ "text": text }] }),
        );
    }

    pub fn change_range(&mut self, uri: &str, version: i32, range: Value, text: &str) {
        self.notify(
            "textDocument/didChange",
            json!({ "textDocument": { "uri": uri, "version": version }, "contentChanges": [{ "range": range, "text": text }] }),
        );
    }

    pub fn shutdown(mut self) {
        let _ = self.request("shutdown", Value::Null);
        self.notify("exit", Value::Null);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                assert!(status.success(), "server exited with {status}");
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        panic!("server did not exit after `exit`");
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The 0-based line and UTF-16 column of the first occurrence of `needle` in
/// `text`, plus `delta` characters.
pub fn pos(text: &str, needle: &str, delta: usize) -> Value {
    let at = text
        .find(needle)
        .unwrap_or_else(|| panic!("`{needle}` not in the text"))
        + delta;
    let before = &text[..at];
    let line = before.matches('\n').count();
    let col: usize = before[before.rfind('\n').map_or(0, |i| i + 1)..]
        .chars()
        .map(char::len_utf16)
        .sum();
    json!({ "line": line, "character": col })
}

pub fn at(uri: &str, position: Value) -> Value {
    json!({ "textDocument": { "uri": uri }, "position": position })
}

/// The labels of a completion answer.
pub fn labels(result: &Value) -> Vec<String> {
    let items = if result.is_array() {
        result
    } else {
        &result["items"]
    };
    items
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|i| i["label"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}
