//! The closed set of connectors: their catalogue (names, the steps they carry out,
//! their configuration keys) and their typed configuration, parsed once from an IR
//! [`Binding`].
//!
//! This is the one definition. The compiler checks `bindings` blocks against
//! [`CATALOGUE`], the language server completes and explains from it, and the
//! runtime parses every binding it deploys with [`Connector::from_binding`], so a
//! binding the compiler accepts is one the runtime can carry out and a connector
//! name it does not know is refused at deploy instead of guessed at.
//!
//! Adding a connector is one [`Spec`] in [`CATALOGUE`] and one variant of
//! [`Connector`]: `match`es on it point at every other place to handle it.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{Binding, StepKind, suggest};

/// The type of a configuration key's value, as the language writes it.
///
/// Its own small enum so that this crate does not depend on the compiler; the
/// compiler maps it to its `Ty` to check literals. Displayed as the language
/// spells the type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    String,
    Int,
    Float,
    /// Milliseconds, as a whole number in the IR.
    Duration,
    /// `List<String>`.
    StringList,
    /// `Map<String, String>`.
    StringMap,
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyType::String => "String",
            KeyType::Int => "Int",
            KeyType::Float => "Float",
            KeyType::Duration => "Duration",
            KeyType::StringList => "List<String>",
            KeyType::StringMap => "Map<String, String>",
        })
    }
}

/// A configuration key a connector understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    pub name: &'static str,
    pub ty: KeyType,
    pub required: bool,
    /// For people: hover, completion and error help.
    pub doc: &'static str,
}

/// A connector as the language and its tools see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spec {
    pub name: &'static str,
    /// The kinds of step it can carry out.
    pub kinds: &'static [StepKind],
    pub doc: &'static str,
    pub keys: &'static [Key],
}

impl Spec {
    pub fn key(&self, name: &str) -> Option<&'static Key> {
        self.keys.iter().find(|k| k.name == name)
    }
}

const fn key(name: &'static str, ty: KeyType, required: bool, doc: &'static str) -> Key {
    Key {
        name,
        ty,
        required,
        doc,
    }
}

/// `http`: a remote system.
pub const HTTP: Spec = Spec {
    name: "http",
    kinds: &[StepKind::Remote, StepKind::Call],
    doc: "POSTs the invocation to a remote system; a remote step completes when the system calls back",
    keys: &[
        key("url", KeyType::String, true, "where to POST the invocation"),
        key(
            "timeout",
            KeyType::Duration,
            false,
            "how long to wait for the HTTP response (default 30s)",
        ),
        key(
            "headers",
            KeyType::StringMap,
            false,
            "extra request headers",
        ),
        key(
            "cancel_url",
            KeyType::String,
            false,
            "where to POST when an attempt is no longer wanted (timed out, run cancelled); best effort",
        ),
        key(
            "max_inline",
            KeyType::Int,
            false,
            "the largest input, in bytes of JSON, sent inline in the invocation (default 4194304 = 4 MiB); a larger one is sent as a signed URL the remote system reads a page at a time",
        ),
        key(
            "batch_url",
            KeyType::String,
            false,
            "where to POST many invocations at once (`{\"invocations\": [...]}`, answered with one result each); without it each invocation is POSTed to `url` alone",
        ),
    ],
};

/// `sim`: simulated compute.
pub const SIM: Spec = Spec {
    name: "sim",
    kinds: &[StepKind::Remote, StepKind::Call],
    doc: "simulated compute for demos, tests and benchmarks: completes after `duration`, fails with probability `failure_rate`",
    keys: &[
        key(
            "duration",
            KeyType::Duration,
            false,
            "how long the simulated work takes (default 1s)",
        ),
        key(
            "failure_rate",
            KeyType::Float,
            false,
            "probability from 0 to 1 that an attempt fails (default 0)",
        ),
        key(
            "seed",
            KeyType::Int,
            false,
            "seed for the simulated outcomes",
        ),
    ],
};

/// `registry`: the built-in metadata registry.
pub const REGISTRY: Spec = Spec {
    name: "registry",
    kinds: &[StepKind::Call],
    doc: "the built-in metadata registry: registers models or datasets with their lineage",
    keys: &[key(
        "kind",
        KeyType::String,
        true,
        "\"model\" or \"dataset\"",
    )],
};

/// `approval`: a person decides.
pub const APPROVAL: Spec = Spec {
    name: "approval",
    kinds: &[StepKind::Approval],
    doc: "a person's decision through the API, CLI or web UI",
    keys: &[
        key("approvers", KeyType::StringList, false, "who may decide"),
        key(
            "channel",
            KeyType::String,
            false,
            "where to announce the request",
        ),
    ],
};

/// Every connector, in the order they are listed to people.
pub const CATALOGUE: &[Spec] = &[HTTP, SIM, REGISTRY, APPROVAL];

/// The connector called `name`, if there is one.
pub fn spec(name: &str) -> Option<&'static Spec> {
    CATALOGUE.iter().find(|c| c.name == name)
}

/// Whether `value`, already of the key's type, is one the connector can use.
/// The reason, when it is not, completes "invalid `KEY`: …".
pub fn check_value(connector: &str, key: &str, value: &Value) -> Result<(), String> {
    match (connector, key) {
        ("http", "url") => {
            let s = value.as_str().unwrap_or("");
            if !(s.starts_with("http://") || s.starts_with("https://")) || s.len() < 10 {
                return Err(format!("`{s}` is not an http:// or https:// URL"));
            }
        }
        ("http", "batch_url") => {
            let s = value.as_str().unwrap_or("");
            if !(s.starts_with("http://") || s.starts_with("https://")) || s.len() < 10 {
                return Err(format!("`{s}` is not an http:// or https:// URL"));
            }
        }
        ("http", "max_inline") => {
            let n = value.as_i64().unwrap_or(-1);
            if n < 0 {
                return Err(format!("{n} is not a number of bytes (0 or more)"));
            }
        }
        ("sim", "failure_rate") => {
            let f = value.as_f64().unwrap_or(-1.0);
            if !(0.0..=1.0).contains(&f) {
                return Err(format!("{f} is not a probability between 0 and 1"));
            }
        }
        ("registry", "kind") => {
            let s = value.as_str().unwrap_or("");
            if RegistryKind::parse(s).is_none() {
                return Err(format!("`{s}` is neither \"model\" nor \"dataset\""));
            }
        }
        _ => {}
    }
    Ok(())
}

/// Why a binding cannot be carried out.
#[derive(Debug, Clone, PartialEq)]
pub enum ConnectorError {
    UnknownConnector {
        name: String,
    },
    UnknownKey {
        connector: &'static str,
        key: String,
    },
    MissingKey {
        connector: &'static str,
        key: &'static Key,
    },
    WrongType {
        connector: &'static str,
        key: &'static Key,
        found: &'static str,
    },
    InvalidValue {
        connector: &'static str,
        key: &'static str,
        why: String,
    },
}

impl fmt::Display for ConnectorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectorError::UnknownConnector { name } => {
                write!(f, "unknown connector `{name}`: ")?;
                match suggest::did_you_mean(name, CATALOGUE.iter().map(|c| c.name)) {
                    Some(help) => f.write_str(&help),
                    None => write!(
                        f,
                        "the connectors are `{}`",
                        names(CATALOGUE.iter().map(|c| c.name))
                    ),
                }
            }
            ConnectorError::UnknownKey { connector, key } => {
                write!(f, "connector `{connector}` has no setting `{key}`: ")?;
                let keys = spec(connector).map_or(&[][..], |c| c.keys);
                match suggest::did_you_mean(key, keys.iter().map(|k| k.name)) {
                    Some(help) => f.write_str(&help),
                    None => write!(
                        f,
                        "`{connector}` understands `{}`",
                        names(keys.iter().map(|k| k.name))
                    ),
                }
            }
            ConnectorError::MissingKey { connector, key } => {
                write!(
                    f,
                    "connector `{connector}` needs `{}` ({})",
                    key.name, key.doc
                )
            }
            ConnectorError::WrongType {
                connector,
                key,
                found,
            } => write!(
                f,
                "`{}` of connector `{connector}` expects a `{}`, found {found}",
                key.name, key.ty
            ),
            ConnectorError::InvalidValue {
                connector,
                key,
                why,
            } => write!(f, "invalid `{key}` of connector `{connector}`: {why}"),
        }
    }
}

impl std::error::Error for ConnectorError {}

fn names<'a>(names: impl Iterator<Item = &'a str>) -> String {
    names.collect::<Vec<_>>().join("`, `")
}

/// A binding, typed: which connector carries out a step, and its configuration
/// with defaults applied.
///
/// It serializes as the IR binding it came from (`{"connector", "config"}`), so
/// what is stored (e.g. in the runtime's outbox) keeps the IR's shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "Binding", into = "Binding")]
pub enum Connector {
    Http(HttpConfig),
    Sim(SimConfig),
    Registry(RegistryConfig),
    Approval(ApprovalConfig),
}

/// `http`: a remote system that is POSTed each invocation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "BTreeMap<String, Value>", into = "BTreeMap<String, Value>")]
pub struct HttpConfig {
    pub url: String,
    /// The HTTP request's timeout.
    pub timeout_ms: u64,
    /// Extra request headers, on invocations and cancellations.
    pub headers: BTreeMap<String, String>,
    /// Where to POST when an attempt is no longer wanted; nothing is sent without it.
    pub cancel_url: Option<String>,
    /// The largest input sent inline, in bytes of JSON; a larger one goes as a URL.
    pub max_inline_bytes: u64,
    /// Where to POST many invocations in one request; `None`: each alone to `url`.
    pub batch_url: Option<String>,
}

impl HttpConfig {
    pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;
    pub const DEFAULT_MAX_INLINE: u64 = 4 << 20;
}

/// `sim`: simulated compute.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// How long each attempt takes.
    pub duration_ms: u64,
    /// Probability from 0 to 1 that an attempt fails.
    pub failure_rate: f64,
    pub seed: i64,
}

impl SimConfig {
    pub const DEFAULT_DURATION_MS: u64 = 1000;
}

/// `registry`: the built-in metadata registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegistryConfig {
    pub kind: RegistryKind,
}

/// What a registry binding registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistryKind {
    Model,
    Dataset,
}

impl RegistryKind {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "model" => Some(RegistryKind::Model),
            "dataset" => Some(RegistryKind::Dataset),
            _ => None,
        }
    }

    /// As written in the binding and stored with registry entries.
    pub fn as_str(self) -> &'static str {
        match self {
            RegistryKind::Model => "model",
            RegistryKind::Dataset => "dataset",
        }
    }
}

/// `approval`: a person decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalConfig {
    /// Who may decide.
    pub approvers: Vec<String>,
    /// Where the request is announced, e.g. `"ui"`, `"slack:#model-approvals"`.
    pub channel: Option<String>,
}

impl Connector {
    /// Parses and checks a binding: a known connector, every key known, of its
    /// type and valid, every required key given.
    pub fn from_binding(b: &Binding) -> Result<Connector, ConnectorError> {
        let spec = spec(&b.connector).ok_or_else(|| ConnectorError::UnknownConnector {
            name: b.connector.clone(),
        })?;
        let config = Config::new(spec, &b.config)?;
        Ok(match spec.name {
            "http" => Connector::Http(HttpConfig::read(&config)),
            "sim" => Connector::Sim(SimConfig {
                duration_ms: config
                    .u64("duration")
                    .unwrap_or(SimConfig::DEFAULT_DURATION_MS),
                failure_rate: config.f64("failure_rate").unwrap_or(0.0),
                seed: config.i64("seed").unwrap_or(0),
            }),
            "registry" => Connector::Registry(RegistryConfig {
                kind: config
                    .str("kind")
                    .and_then(RegistryKind::parse)
                    .unwrap_or(RegistryKind::Model),
            }),
            "approval" => Connector::Approval(ApprovalConfig {
                approvers: config.strings("approvers"),
                channel: config.str("channel").map(str::to_string),
            }),
            // Every name in the catalogue has a variant; a test checks.
            other => {
                return Err(ConnectorError::UnknownConnector { name: other.into() });
            }
        })
    }

    /// The connector's entry in the catalogue.
    pub fn spec(&self) -> &'static Spec {
        match self {
            Connector::Http(_) => &HTTP,
            Connector::Sim(_) => &SIM,
            Connector::Registry(_) => &REGISTRY,
            Connector::Approval(_) => &APPROVAL,
        }
    }

    pub fn name(&self) -> &'static str {
        self.spec().name
    }

    /// Whether it can carry out steps of `kind`.
    pub fn carries_out(&self, kind: StepKind) -> bool {
        self.spec().kinds.contains(&kind)
    }

    /// The IR binding: the configuration with every value the connector uses.
    pub fn to_binding(&self) -> Binding {
        let config = match self {
            Connector::Http(c) => c.clone().into(),
            Connector::Sim(c) => {
                let mut m = BTreeMap::new();
                m.insert("duration".into(), Value::from(c.duration_ms));
                m.insert("failure_rate".into(), Value::from(c.failure_rate));
                m.insert("seed".into(), Value::from(c.seed));
                m
            }
            Connector::Registry(c) => {
                BTreeMap::from([("kind".into(), Value::from(c.kind.as_str()))])
            }
            Connector::Approval(c) => {
                let mut m = BTreeMap::new();
                m.insert("approvers".into(), Value::from(c.approvers.clone()));
                if let Some(ch) = &c.channel {
                    m.insert("channel".into(), Value::from(ch.as_str()));
                }
                m
            }
        };
        Binding {
            connector: self.name().to_string(),
            config,
        }
    }
}

impl TryFrom<Binding> for Connector {
    type Error = ConnectorError;
    fn try_from(b: Binding) -> Result<Self, Self::Error> {
        Connector::from_binding(&b)
    }
}

impl From<Connector> for Binding {
    fn from(c: Connector) -> Self {
        c.to_binding()
    }
}

impl HttpConfig {
    fn read(config: &Config<'_>) -> HttpConfig {
        HttpConfig {
            url: config.str("url").unwrap_or_default().to_string(),
            timeout_ms: config
                .u64("timeout")
                .unwrap_or(HttpConfig::DEFAULT_TIMEOUT_MS),
            headers: config
                .map
                .get("headers")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                        .collect()
                })
                .unwrap_or_default(),
            cancel_url: config.str("cancel_url").map(str::to_string),
            max_inline_bytes: config
                .u64("max_inline")
                .unwrap_or(HttpConfig::DEFAULT_MAX_INLINE),
            batch_url: config.str("batch_url").map(str::to_string),
        }
    }
}

impl TryFrom<BTreeMap<String, Value>> for HttpConfig {
    type Error = ConnectorError;
    fn try_from(map: BTreeMap<String, Value>) -> Result<Self, Self::Error> {
        Ok(HttpConfig::read(&Config::new(&HTTP, &map)?))
    }
}

impl From<HttpConfig> for BTreeMap<String, Value> {
    fn from(c: HttpConfig) -> Self {
        let mut m = BTreeMap::new();
        m.insert("url".into(), Value::from(c.url));
        m.insert("timeout".into(), Value::from(c.timeout_ms));
        if !c.headers.is_empty() {
            let headers = c
                .headers
                .into_iter()
                .map(|(k, v)| (k, Value::from(v)))
                .collect();
            m.insert("headers".into(), Value::Object(headers));
        }
        if let Some(u) = c.cancel_url {
            m.insert("cancel_url".into(), Value::from(u));
        }
        if c.max_inline_bytes != HttpConfig::DEFAULT_MAX_INLINE {
            m.insert("max_inline".into(), Value::from(c.max_inline_bytes));
        }
        if let Some(u) = c.batch_url {
            m.insert("batch_url".into(), Value::from(u));
        }
        m
    }
}

/// A binding's configuration, checked against its connector's keys: the typed
/// readers below only see values of the key's type.
struct Config<'a> {
    map: &'a BTreeMap<String, Value>,
}

impl<'a> Config<'a> {
    fn new(
        spec: &'static Spec,
        map: &'a BTreeMap<String, Value>,
    ) -> Result<Config<'a>, ConnectorError> {
        for (name, value) in map {
            let Some(key) = spec.key(name) else {
                return Err(ConnectorError::UnknownKey {
                    connector: spec.name,
                    key: name.clone(),
                });
            };
            if !fits(value, key.ty) {
                return Err(ConnectorError::WrongType {
                    connector: spec.name,
                    key,
                    found: describe(value),
                });
            }
            check_value(spec.name, key.name, value).map_err(|why| {
                ConnectorError::InvalidValue {
                    connector: spec.name,
                    key: key.name,
                    why,
                }
            })?;
        }
        if let Some(key) = spec
            .keys
            .iter()
            .find(|k| k.required && !map.contains_key(k.name))
        {
            return Err(ConnectorError::MissingKey {
                connector: spec.name,
                key,
            });
        }
        Ok(Config { map })
    }

    fn str(&self, key: &str) -> Option<&'a str> {
        self.map.get(key).and_then(Value::as_str)
    }
    fn u64(&self, key: &str) -> Option<u64> {
        self.map.get(key).and_then(Value::as_u64)
    }
    fn i64(&self, key: &str) -> Option<i64> {
        self.map.get(key).and_then(Value::as_i64)
    }
    fn f64(&self, key: &str) -> Option<f64> {
        self.map.get(key).and_then(Value::as_f64)
    }
    fn strings(&self, key: &str) -> Vec<String> {
        self.map
            .get(key)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| Some(v.as_str()?.to_string()))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Whether a JSON value is one of the key's type, as the compiler writes it.
fn fits(value: &Value, ty: KeyType) -> bool {
    match ty {
        KeyType::String => value.is_string(),
        KeyType::Int => value.is_i64(),
        KeyType::Float => value.is_number(),
        KeyType::Duration => value.is_u64(),
        KeyType::StringList => value
            .as_array()
            .is_some_and(|a| a.iter().all(Value::is_string)),
        KeyType::StringMap => value
            .as_object()
            .is_some_and(|m| m.values().all(Value::is_string)),
    }
}

fn describe(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_f64() => "a fractional number",
        Value::Number(n) if n.is_i64() && !n.is_u64() => "a negative number",
        Value::Number(_) => "a whole number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use serde_json::json;

    fn binding(connector: &str, config: Value) -> Binding {
        Binding {
            connector: connector.into(),
            config: serde_json::from_value(config).unwrap(),
        }
    }

    fn error(connector: &str, config: Value) -> String {
        Connector::from_binding(&binding(connector, config))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn every_catalogue_entry_has_a_variant() {
        for spec in CATALOGUE {
            let config: BTreeMap<String, Value> = spec
                .keys
                .iter()
                .filter(|k| k.required)
                .map(|k| {
                    let v = match (spec.name, k.name) {
                        ("http", "url") => json!("http://example.com"),
                        ("registry", "kind") => json!("dataset"),
                        _ => json!(""),
                    };
                    (k.name.to_string(), v)
                })
                .collect();
            let c = Connector::from_binding(&Binding {
                connector: spec.name.into(),
                config,
            })
            .unwrap();
            assert_eq!(c.name(), spec.name);
            assert_eq!(c.spec(), spec);
        }
    }

    #[test]
    fn typed_configuration_with_defaults() {
        let c = Connector::from_binding(&binding(
            "http",
            json!({"url": "https://train.example.com", "timeout": 5000, "headers": {"X-Team": "ml"}}),
        ))
        .unwrap();
        assert_eq!(
            c,
            Connector::Http(HttpConfig {
                url: "https://train.example.com".into(),
                timeout_ms: 5000,
                headers: BTreeMap::from([("X-Team".into(), "ml".into())]),
                cancel_url: None,
                max_inline_bytes: HttpConfig::DEFAULT_MAX_INLINE,
                batch_url: None,
            })
        );
        let c = Connector::from_binding(&binding("sim", json!({"failure_rate": 0.25}))).unwrap();
        assert_eq!(
            c,
            Connector::Sim(SimConfig {
                duration_ms: 1000,
                failure_rate: 0.25,
                seed: 0
            })
        );
        let c = Connector::from_binding(&binding(
            "approval",
            json!({"approvers": ["me@example.com"], "channel": "ui"}),
        ))
        .unwrap();
        assert!(c.carries_out(StepKind::Approval));
        assert!(!c.carries_out(StepKind::Remote));
    }

    #[test]
    fn mistakes_are_named() {
        assert_eq!(
            error("htp", json!({})),
            "unknown connector `htp`: did you mean `http`?"
        );
        assert_eq!(
            error("kafka", json!({})),
            "unknown connector `kafka`: the connectors are `http`, `sim`, `registry`, `approval`"
        );
        assert_eq!(
            error("http", json!({})),
            "connector `http` needs `url` (where to POST the invocation)"
        );
        assert_eq!(
            error("http", json!({"url": "https://a.example.com", "timout": 1})),
            "connector `http` has no setting `timout`: did you mean `timeout`?"
        );
        assert_eq!(
            error(
                "http",
                json!({"url": "https://a.example.com", "timeout": "5s"})
            ),
            "`timeout` of connector `http` expects a `Duration`, found a string"
        );
        assert_eq!(
            error("http", json!({"url": "ftp://a.example.com"})),
            "invalid `url` of connector `http`: `ftp://a.example.com` is not an http:// or https:// URL"
        );
        assert_eq!(
            error("sim", json!({"failure_rate": 2})),
            "invalid `failure_rate` of connector `sim`: 2 is not a probability between 0 and 1"
        );
        assert_eq!(
            error("registry", json!({"kind": "modle"})),
            "invalid `kind` of connector `registry`: `modle` is neither \"model\" nor \"dataset\""
        );
    }

    #[test]
    fn serializes_as_its_binding() {
        let b = binding(
            "http",
            json!({"url": "https://a.example.com", "timeout": 2000, "cancel_url": "https://a.example.com/cancel"}),
        );
        let c = Connector::from_binding(&b).unwrap();
        assert_eq!(
            serde_json::to_value(&c).unwrap(),
            serde_json::to_value(&b).unwrap()
        );
        let back: Connector = serde_json::from_value(serde_json::to_value(&b).unwrap()).unwrap();
        assert_eq!(back, c);
        let Connector::Http(http) = c else { panic!() };
        let map: BTreeMap<String, Value> = http.clone().into();
        assert_eq!(map, b.config);
        assert!(
            serde_json::from_value::<Connector>(json!({"connector": "htp", "config": {}})).is_err()
        );
    }
}
