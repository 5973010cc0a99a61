//! The main loop: one thread, one `enum Event`, one `match`.
//!
//! Messages from the client and the diagnostics timer are the only inputs. Edits
//! are recorded at once; diagnostics are pushed once the user has paused (or
//! right away on open and save); every request brings the analysis up to date
//! first. Each request runs under `catch_unwind`: a bug answers that request with
//! an error and the server carries on.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crossbeam_channel::{never, select};
use lsp_server::{
    Connection, ErrorCode, Message, Notification, Request, RequestId, Response, ResponseError,
};
use lsp_types::notification::{self as notif, Notification as _};
use lsp_types::request as req;
use lsp_types::{ClientCapabilities, InitializeParams, Url};
use serde_json::Value;

use crate::handlers;
use crate::workspace::Workspace;

/// What the client can do, as far as the server's answers depend on it.
#[derive(Debug, Clone, Default)]
pub struct ClientCaps {
    pub snippets: bool,
    pub markdown: bool,
    /// The client pulls diagnostics (`textDocument/diagnostic`).
    pub pull_diagnostics: bool,
    /// The client accepts `workspace/diagnostic/refresh`.
    pub diagnostic_refresh: bool,
    pub hierarchical_symbols: bool,
    pub watch_files: bool,
}

/// Settings from `initializationOptions`.
#[derive(Debug, Clone)]
pub struct Config {
    /// Quiet time after an edit before diagnostics are pushed.
    pub diagnostics_delay: Duration,
    /// Push diagnostics even to a client that pulls them.
    pub push_diagnostics: bool,
}

impl Config {
    fn from_options(options: Option<&Value>, caps: &ClientCaps) -> Config {
        let get = |k: &str| options.and_then(|o| o.get(k));
        let delay = get("diagnosticsDelayMs")
            .and_then(Value::as_u64)
            .unwrap_or(150);
        let mode = get("diagnostics").and_then(Value::as_str).unwrap_or("auto");
        Config {
            diagnostics_delay: Duration::from_millis(delay.min(10_000)),
            push_diagnostics: match mode {
                "push" => true,
                "pull" => false,
                _ => !caps.pull_diagnostics,
            },
        }
    }
}

enum Event {
    Message(Message),
    /// The diagnostics timer fired.
    Publish,
}

pub struct Server {
    pub(crate) sender: crossbeam_channel::Sender<Message>,
    pub(crate) ws: Workspace,
    pub(crate) caps: ClientCaps,
    pub(crate) config: Config,
    /// When to push diagnostics next.
    deadline: Option<Instant>,
    /// What each file was last sent, to send only changes and to clear fixed ones.
    published: HashMap<Url, Vec<lsp_types::Diagnostic>>,
    /// Buffers opened since the last push: they get their diagnostics even when
    /// there are none, so the client knows they were checked.
    opened: Vec<Url>,
    next_request: i32,
}

/// Run the server over a connection until the client says `exit`.
pub fn run(connection: Connection) -> Result<(), String> {
    let (id, params) = connection
        .initialize_start()
        .map_err(|e| format!("initialize failed: {e}"))?;
    let params: InitializeParams =
        serde_json::from_value(params).map_err(|e| format!("bad initialize params: {e}"))?;
    let caps = client_caps(&params.capabilities);
    let config = Config::from_options(params.initialization_options.as_ref(), &caps);
    let result = handlers::initialize_result(&caps, &config);
    connection
        .initialize_finish(id, serde_json::to_value(result).unwrap_or_default())
        .map_err(|e| format!("initialize failed: {e}"))?;
    let roots = workspace_roots(&params);
    let mut server = Server {
        sender: connection.sender.clone(),
        ws: Workspace::new(roots),
        caps,
        config,
        deadline: None,
        published: HashMap::new(),
        opened: Vec::new(),
        next_request: 0,
    };
    server.main_loop(&connection)
}

#[allow(deprecated)]
fn workspace_roots(params: &InitializeParams) -> Vec<PathBuf> {
    let mut roots: Vec<PathBuf> = params
        .workspace_folders
        .iter()
        .flatten()
        .filter_map(|f| f.uri.to_file_path().ok())
        .collect();
    if roots.is_empty()
        && let Some(p) = params.root_uri.as_ref().and_then(|u| u.to_file_path().ok())
    {
        roots.push(p);
    }
    if roots.is_empty()
        && let Some(p) = &params.root_path
    {
        roots.push(PathBuf::from(p));
    }
    roots
        .into_iter()
        .map(|r| crate::workspace::normalize(&r))
        .collect()
}

fn client_caps(c: &ClientCapabilities) -> ClientCaps {
    let td = c.text_document.as_ref();
    ClientCaps {
        snippets: td
            .and_then(|t| t.completion.as_ref())
            .and_then(|c| c.completion_item.as_ref())
            .and_then(|i| i.snippet_support)
            .unwrap_or(false),
        markdown: td
            .and_then(|t| t.hover.as_ref())
            .and_then(|h| h.content_format.as_ref())
            .is_none_or(|f| f.contains(&lsp_types::MarkupKind::Markdown)),
        pull_diagnostics: td.and_then(|t| t.diagnostic.as_ref()).is_some(),
        diagnostic_refresh: c
            .workspace
            .as_ref()
            .and_then(|w| w.diagnostic.as_ref())
            .and_then(|d| d.refresh_support)
            .unwrap_or(false),
        hierarchical_symbols: td
            .and_then(|t| t.document_symbol.as_ref())
            .and_then(|s| s.hierarchical_document_symbol_support)
            .unwrap_or(false),
        watch_files: c
            .workspace
            .as_ref()
            .and_then(|w| w.did_change_watched_files.as_ref())
            .and_then(|d| d.dynamic_registration)
            .unwrap_or(false),
    }
}

impl Server {
    fn main_loop(&mut self, connection: &Connection) -> Result<(), String> {
        loop {
            let timer = match self.deadline {
                Some(at) => crossbeam_channel::at(at),
                None => never(),
            };
            let event = select! {
                recv(connection.receiver) -> msg => match msg {
                    Ok(m) => Event::Message(m),
                    Err(_) => return Ok(()),
                },
                recv(timer) -> _ => Event::Publish,
            };
            match event {
                Event::Message(Message::Request(r)) => {
                    match connection.handle_shutdown(&r) {
                        Ok(true) => return Ok(()),
                        Ok(false) => {}
                        Err(e) => return Err(format!("shutdown failed: {e}")),
                    }
                    self.on_request(r);
                }
                Event::Message(Message::Notification(n)) => {
                    if n.method == notif::Exit::METHOD {
                        return Ok(());
                    }
                    self.on_notification(n);
                }
                Event::Message(Message::Response(_)) => {}
                Event::Publish => {
                    self.deadline = None;
                    self.publish_diagnostics();
                }
            }
        }
    }

    pub(crate) fn send(&self, m: impl Into<Message>) {
        // The client hanging up ends the loop through the receiver.
        let _ = self.sender.send(m.into());
    }

    pub(crate) fn notify<N: lsp_types::notification::Notification>(&self, params: N::Params) {
        self.send(Notification::new(N::METHOD.to_string(), params));
    }

    fn request_client<R: lsp_types::request::Request>(&mut self, params: R::Params) {
        self.next_request += 1;
        let id = RequestId::from(format!("eflow-{}", self.next_request));
        self.send(Request::new(id, R::METHOD.to_string(), params));
    }

    pub(crate) fn log(&self, message: String) {
        eprintln!("eflow-lsp: {message}");
        self.notify::<notif::LogMessage>(lsp_types::LogMessageParams {
            typ: lsp_types::MessageType::LOG,
            message,
        });
    }

    fn schedule_diagnostics(&mut self, delay: Duration) {
        // Each edit pushes the deadline back: diagnostics wait for a pause.
        self.deadline = Some(Instant::now() + delay);
    }

    fn on_request(&mut self, r: Request) {
        let id = r.id.clone();
        let method = r.method.clone();
        let outcome = catch_unwind(AssertUnwindSafe(|| handlers::dispatch(self, r)));
        let response = match outcome {
            Ok(answer) => Response {
                id,
                response_result: answer,
            },
            Err(panic) => {
                let what = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "unknown panic".to_string());
                self.log(format!("request `{method}` panicked: {what}"));
                Response::new_err(
                    id,
                    ErrorCode::InternalError as i32,
                    format!("eflow-lsp failed on `{method}`: {what}"),
                )
            }
        };
        self.send(response);
    }

    fn on_notification(&mut self, n: Notification) {
        let method = n.method.clone();
        let outcome = catch_unwind(AssertUnwindSafe(|| self.handle_notification(n)));
        if outcome.is_err() {
            self.log(format!("notification `{method}` panicked"));
        }
    }

    fn handle_notification(&mut self, n: Notification) {
        match n.method.as_str() {
            notif::Initialized::METHOD => {
                if self.caps.watch_files {
                    self.request_client::<req::RegisterCapability>(handlers::watch_registration());
                }
                // Diagnostics of the whole workspace, once.
                self.schedule_diagnostics(Duration::ZERO);
            }
            notif::DidOpenTextDocument::METHOD => {
                if let Ok(p) =
                    serde_json::from_value::<lsp_types::DidOpenTextDocumentParams>(n.params)
                {
                    let d = p.text_document;
                    self.opened.push(d.uri.clone());
                    self.ws.open(d.uri, d.text, d.version);
                    self.schedule_diagnostics(Duration::ZERO);
                }
            }
            notif::DidChangeTextDocument::METHOD => {
                if let Ok(p) =
                    serde_json::from_value::<lsp_types::DidChangeTextDocumentParams>(n.params)
                {
                    self.ws.change(
                        &p.text_document.uri,
                        p.text_document.version,
                        p.content_changes,
                    );
                    self.schedule_diagnostics(self.config.diagnostics_delay);
                }
            }
            notif::DidSaveTextDocument::METHOD => self.schedule_diagnostics(Duration::ZERO),
            notif::DidCloseTextDocument::METHOD => {
                if let Ok(p) =
                    serde_json::from_value::<lsp_types::DidCloseTextDocumentParams>(n.params)
                {
                    self.ws.close(&p.text_document.uri);
                    self.schedule_diagnostics(Duration::ZERO);
                }
            }
            notif::DidChangeWatchedFiles::METHOD => {
                if let Ok(p) =
                    serde_json::from_value::<lsp_types::DidChangeWatchedFilesParams>(n.params)
                {
                    for c in p.changes {
                        self.ws.disk_changed(&c.uri);
                    }
                    self.schedule_diagnostics(self.config.diagnostics_delay);
                }
            }
            _ => {}
        }
    }

    /// Diagnostics of every workspace file, by URI.
    pub(crate) fn diagnostics_by_file(&self) -> HashMap<Url, Vec<lsp_types::Diagnostic>> {
        let ws = &self.ws;
        let mut out: HashMap<Url, Vec<lsp_types::Diagnostic>> = HashMap::new();
        for m in ws
            .analysis
            .modules
            .iter()
            .filter(|m| !m.is_std && !ws.is_hidden(m.file))
        {
            if let Some(url) = ws.url_of(m.file) {
                out.entry(url).or_default();
            }
        }
        let mut by_file: HashMap<
            eflow_compiler::analysis::FileId,
            Vec<eflow_compiler::diagnostics::Diagnostic>,
        > = HashMap::new();
        for d in ws.analysis.diagnostics() {
            by_file.entry(d.primary.file).or_default().push(d);
        }
        for (file, diags) in by_file {
            if ws.db().module(file).is_none_or(|m| m.is_std) || ws.is_hidden(file) {
                continue;
            }
            let Some(url) = ws.url_of(file) else {
                continue;
            };
            let text = ws.db().text(file);
            let index = crate::convert::LineIndex::new(text);
            out.insert(
                url,
                diags
                    .iter()
                    .map(|d| crate::convert::diagnostic(ws, &index, d))
                    .collect(),
            );
        }
        out
    }

    fn publish_diagnostics(&mut self) {
        let changed = self.ws.refresh();
        if !self.config.push_diagnostics {
            if changed && self.caps.diagnostic_refresh {
                self.request_client::<req::WorkspaceDiagnosticRefresh>(());
            }
            return;
        }
        let now = self.diagnostics_by_file();
        let opened = std::mem::take(&mut self.opened);
        let mut sends = Vec::new();
        for (url, diags) in &now {
            let fresh = opened.contains(url);
            if fresh
                || self
                    .published
                    .get(url)
                    .map_or(!diags.is_empty(), |old| old != diags)
            {
                sends.push((url.clone(), diags.clone()));
            }
        }
        for url in self.published.keys() {
            if !now.contains_key(url) {
                sends.push((url.clone(), Vec::new()));
            }
        }
        sends.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
        for (url, diags) in sends {
            let version = self.ws.docs.get(&self.ws.path_of(&url)).map(|d| d.version);
            self.notify::<notif::PublishDiagnostics>(lsp_types::PublishDiagnosticsParams {
                uri: url,
                diagnostics: diags,
                version,
            });
        }
        self.published = now.into_iter().filter(|(_, d)| !d.is_empty()).collect();
    }
}

/// An error answer for a request.
pub(crate) fn error(code: ErrorCode, message: impl Into<String>) -> ResponseError {
    ResponseError {
        code: code as i32,
        message: message.into(),
        data: None,
    }
}
