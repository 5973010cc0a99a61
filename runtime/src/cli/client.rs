//! The CLI's HTTP client: finds the server and the token, turns API errors
//! into messages.

use std::path::PathBuf;

use anyhow::{Context, bail};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::model::ErrorBody;

pub const DEFAULT_SERVER: &str = "http://127.0.0.1:7700";
pub const DEFAULT_DATA: &str = ".eflow";

#[derive(Clone)]
pub struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl Client {
    /// The server from `--server`/`EFLOW_SERVER` (default the local one); the
    /// token from `EFLOW_TOKEN`, or for the local server the admin token it
    /// wrote to `.eflow/admin-token` on first start.
    pub fn new(server: Option<String>, token: Option<String>) -> anyhow::Result<Self> {
        let base = server
            .unwrap_or_else(|| DEFAULT_SERVER.to_string())
            .trim_end_matches('/')
            .to_string();
        let token = token.or_else(|| {
            let local = base == DEFAULT_SERVER;
            let path = PathBuf::from(DEFAULT_DATA).join("admin-token");
            if local {
                std::fs::read_to_string(path)
                    .ok()
                    .map(|t| t.trim().to_string())
            } else {
                None
            }
        });
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(120))
            .build()?;
        Ok(Self { base, token, http })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    async fn send<T: DeserializeOwned>(&self, req: reqwest::RequestBuilder) -> anyhow::Result<T> {
        let req = match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        };
        let resp = req.send().await.with_context(|| {
            format!(
                "cannot reach the eflow server at {}: start it with `eflow serve`, or point EFLOW_SERVER at it",
                self.base
            )
        })?;
        let status = resp.status();
        let bytes = resp.bytes().await?;
        if status.is_success() {
            return serde_json::from_slice(&bytes).with_context(|| {
                format!("the server answered {status} with a body this CLI does not understand")
            });
        }
        match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(e) => bail!("{} ({})", e.error.message, e.error.code),
            Err(_) => bail!(
                "the server answered {status}: {}",
                String::from_utf8_lossy(&bytes)
                    .chars()
                    .take(300)
                    .collect::<String>()
            ),
        }
    }

    pub async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> anyhow::Result<T> {
        self.send(self.http.get(format!("{}{path}", self.base)).query(query))
            .await
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        self.send(self.http.post(format!("{}{path}", self.base)).json(body))
            .await
    }

    pub async fn patch<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        self.send(self.http.patch(format!("{}{path}", self.base)).json(body))
            .await
    }

    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.send(self.http.delete(format!("{}{path}", self.base)))
            .await
    }
}

/// Percent-encodes one path segment.
pub fn seg(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
