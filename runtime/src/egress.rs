//! The egress policy: which hosts and networks `http` bindings may reach.
//!
//! The public internet is always allowed; loopback, link-local (the cloud
//! metadata address 169.254.169.254 among them), private, shared (CGNAT),
//! unspecified, multicast and reserved addresses are refused unless a rule
//! allows them. Rules come from the server (`eflow serve --allow-egress`) and,
//! added to those, from the call's tenant (set by the admin).
//!
//! The check is on the address a connection is made to, never on the text of
//! a URL: a literal address is checked directly, and a name is resolved by
//! [`PolicyResolver`], which hands the HTTP client only the allowed addresses,
//! so a name that resolves to a refused address (DNS rebinding) cannot pass.
//! Redirects are not followed (a redirect to a literal address would skip the
//! resolver), and proxies from the environment are not used (a proxy would
//! resolve the name where the policy cannot see it).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ipnet::IpNet;
use lru::LruCache;

use crate::store::Store;

/// Why no way out could be given for a call (the call is tried again later).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    #[error("cannot build the HTTP client for an egress policy: {0}")]
    Client(#[from] reqwest::Error),
}

/// The step error code of a call the policy refused.
pub const REFUSED: &str = "EgressRefused";

/// One rule: a network, an exact host name, or every name under a suffix.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rule {
    /// `10.0.0.0/8`, `127.0.0.1` (a single address), `fd00::/8`.
    Net(IpNet),
    /// `models.internal`: this name, whatever it resolves to.
    Host(String),
    /// `*.internal`: every name ending in `.internal` (not `internal` itself).
    Suffix(String),
}

impl Rule {
    /// Parses `CIDR`, `ADDRESS`, `HOST` or `*.SUFFIX`.
    pub fn parse(text: &str) -> Result<Rule, String> {
        let t = text.trim();
        let bad = |why: &str| {
            format!(
                "`{text}` is not an egress rule: {why}; write a network (`10.0.0.0/8`), an address (`127.0.0.1`), a host name (`models.internal`) or `*.` and a domain (`*.internal`)"
            )
        };
        if t.is_empty() {
            return Err(bad("it is empty"));
        }
        if let Ok(net) = t.parse::<IpNet>() {
            return Ok(Rule::Net(canonical_net(net.trunc())));
        }
        if let Ok(ip) = t
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            return Ok(Rule::Net(canonical_net(IpNet::from(ip))));
        }
        let (suffix, name) = match t.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, t),
        };
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        };
        if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
            return Err(bad("it is neither a network, an address nor a host name"));
        }
        Ok(if suffix {
            Rule::Suffix(name)
        } else {
            Rule::Host(name)
        })
    }
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rule::Net(n) if n.prefix_len() == n.max_prefix_len() => write!(f, "{}", n.addr()),
            Rule::Net(n) => write!(f, "{n}"),
            Rule::Host(h) => f.write_str(h),
            Rule::Suffix(s) => write!(f, "*.{s}"),
        }
    }
}

/// What a call may reach beyond the public internet: a set of rules.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Policy {
    /// Sorted and without duplicates, so equal policies compare equal.
    rules: Vec<Rule>,
}

impl Policy {
    /// Parses each rule; the first bad one is the error.
    pub fn parse<S: AsRef<str>>(rules: &[S]) -> Result<Policy, String> {
        let rules = rules
            .iter()
            .map(|r| Rule::parse(r.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Policy::from_rules(rules))
    }

    fn from_rules(mut rules: Vec<Rule>) -> Policy {
        rules.sort();
        rules.dedup();
        Policy { rules }
    }

    /// This policy's rules and `other`'s.
    pub fn with(&self, other: &Policy) -> Policy {
        let mut rules = self.rules.clone();
        rules.extend(other.rules.iter().cloned());
        Policy::from_rules(rules)
    }

    /// The rules as they are written (`127.0.0.1`, `10.0.0.0/8`, `*.internal`).
    pub fn rules(&self) -> Vec<String> {
        self.rules.iter().map(Rule::to_string).collect()
    }

    /// Whether a connection to `ip` is allowed: a public address, or one a rule allows.
    pub fn allows_ip(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        let ruled = self
            .rules
            .iter()
            .any(|r| matches!(r, Rule::Net(n) if n.contains(&ip)));
        ruled || refused_by_default(ip).is_none()
    }

    /// Whether a rule names `host` (so any address it resolves to is allowed).
    pub fn allows_name(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.rules.iter().any(|r| match r {
            Rule::Host(h) => *h == host,
            Rule::Suffix(s) => host
                .strip_suffix(s.as_str())
                .is_some_and(|head| head.ends_with('.')),
            Rule::Net(_) => false,
        })
    }

    /// Checks a URL's host when it is a literal address (a name is checked by
    /// the resolver, on what it resolves to).
    pub fn check_url(&self, url: &str) -> Result<(), Refused> {
        let Ok(parsed) = reqwest::Url::parse(url) else {
            // The client reports the malformed URL itself.
            return Ok(());
        };
        let host = parsed.host_str().unwrap_or_default();
        let Ok(ip) = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        else {
            return Ok(());
        };
        if self.allows_ip(ip) {
            Ok(())
        } else {
            Err(Refused {
                host: ip.to_string(),
                addrs: vec![ip],
                literal: true,
            })
        }
    }
}

/// A call the policy refused: the host and the addresses it was refused.
#[derive(Debug, Clone)]
pub struct Refused {
    host: String,
    addrs: Vec<IpAddr>,
    /// The URL named the address itself.
    literal: bool,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let addrs: Vec<String> = self
            .addrs
            .iter()
            .map(|ip| {
                let ip = canonical(*ip);
                match refused_by_default(ip) {
                    Some(kind) => format!("{ip} ({kind})"),
                    None => ip.to_string(),
                }
            })
            .collect();
        let what = if self.literal {
            format!("the address {}", addrs.join(", "))
        } else {
            format!("`{}`, which resolves to {},", self.host, addrs.join(", "))
        };
        // The rule to suggest: an IPv4 address where there is one (`localhost`
        // is `127.0.0.1` more often than `::1`), else the first address.
        let allow = self
            .addrs
            .iter()
            .map(|ip| canonical(*ip))
            .find(IpAddr::is_ipv4)
            .or_else(|| self.addrs.first().copied())
            .map(|ip| canonical(ip).to_string())
            .unwrap_or_else(|| self.host.clone());
        write!(
            f,
            "egress refused: {what} is not on the public internet and no egress rule allows it; \
             an admin allows it for every tenant with `eflow serve --allow-egress {allow}` \
             or for this tenant with `PATCH /v1/tenants/{{id}}` {{\"allow_egress\": [\"{allow}\"]}}"
        )
    }
}

impl std::error::Error for Refused {}

/// Why an address is refused unless a rule allows it, or `None` for a public one.
pub fn refused_by_default(ip: IpAddr) -> Option<&'static str> {
    match canonical(ip) {
        IpAddr::V4(v4) => refused_v4(v4),
        IpAddr::V6(v6) => refused_v6(v6),
    }
}

fn refused_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    Some(if ip.is_loopback() {
        "loopback"
    } else if ip.is_private() {
        "private"
    } else if ip.is_link_local() {
        "link-local"
    } else if a == 0 {
        "unspecified"
    } else if a == 100 && (64..128).contains(&b) {
        "shared address space"
    } else if ip.is_multicast() {
        "multicast"
    } else if a >= 240 {
        "reserved"
    } else {
        return None;
    })
}

fn refused_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    // NAT64 (64:ff9b::/96) carries an IPv4 address: judge that one.
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let [a, b, c, d] = ip.octets()[12..] else {
            return None;
        };
        return refused_v4(Ipv4Addr::new(a, b, c, d));
    }
    Some(if ip.is_loopback() {
        "loopback"
    } else if ip.is_unspecified() {
        "unspecified"
    } else if s[0] & 0xfe00 == 0xfc00 {
        "private"
    } else if s[0] & 0xffc0 == 0xfe80 {
        "link-local"
    } else if s[0] & 0xffc0 == 0xfec0 {
        "site-local"
    } else if ip.is_multicast() {
        "multicast"
    } else if s[..6] == [0, 0, 0, 0, 0, 0] {
        // IPv4-compatible (deprecated): never a public destination.
        "reserved"
    } else {
        return None;
    })
}

/// An IPv4-mapped IPv6 address (`::ffff:127.0.0.1`) as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

fn canonical_net(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(n) if n.prefix_len() >= 96 => match n.addr().to_ipv4_mapped() {
            Some(v4) => IpNet::new(IpAddr::V4(v4), n.prefix_len() - 96).unwrap_or(net),
            None => net,
        },
        n => n,
    }
}

/// The HTTP client's resolver under a policy: it resolves the name and hands
/// on only the allowed addresses, or refuses the name when none is.
#[derive(Debug)]
pub struct PolicyResolver {
    policy: Policy,
}

impl reqwest::dns::Resolve for PolicyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if found.is_empty() {
                // Not the policy's doing: a name without addresses, tried again later.
                let e = std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("`{host}` resolves to no address"),
                );
                return Err(Box::new(e) as Box<_>);
            }
            if policy.allows_name(&host) {
                return Ok(Box::new(found.into_iter()) as reqwest::dns::Addrs);
            }
            let (allowed, refused): (Vec<SocketAddr>, Vec<SocketAddr>) =
                found.into_iter().partition(|a| policy.allows_ip(a.ip()));
            if allowed.is_empty() {
                let ips = refused.iter().map(SocketAddr::ip).collect();
                return Err(Box::new(Refused {
                    host,
                    addrs: ips,
                    literal: false,
                }) as Box<_>);
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The refusal in an HTTP client's error, if the policy caused it.
pub fn refusal<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a Refused> {
    let mut e: Option<&'a (dyn std::error::Error + 'static)> = Some(error);
    while let Some(err) = e {
        if let Some(r) = err.downcast_ref::<Refused>() {
            return Some(r);
        }
        e = err.source();
    }
    None
}

/// The `http` connector's way out: the server's policy, each tenant's rules,
/// and one HTTP client per distinct policy, so a connection opened under one
/// tenant's rules is never reused under another's.
///
/// A tenant's rules are read from the store and kept for [`TENANT_RULES_TTL`]:
/// a call does not cost a read of the store. A change made through this
/// process ([`Egress::forget`]) applies to the next call; one made by another
/// process sharing the store, within that time.
#[derive(Clone)]
pub struct Egress {
    inner: Arc<Inner>,
}

struct Inner {
    server: Policy,
    store: Store,
    max_answer_bytes: u64,
    /// The most recently used clients; one evicted is built again when needed.
    clients: Mutex<LruCache<Policy, reqwest::Client>>,
    /// Tenants' ways out as last read, and when.
    tenants: Mutex<LruCache<String, (tokio::time::Instant, Way)>>,
}

/// How long a tenant's rules read from the store are used before they are
/// read again.
pub const TENANT_RULES_TTL: Duration = Duration::from_secs(1);

/// Tenants whose ways out are kept.
const TENANTS: NonZeroUsize = NonZeroUsize::new(4096).expect("not zero");

/// Clients kept: one per distinct policy in use (the server's, and one per
/// tenant with rules of its own).
const CLIENTS: NonZeroUsize = NonZeroUsize::new(256).expect("not zero");

impl std::fmt::Debug for Egress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Egress")
            .field("server", &self.inner.server)
            .field("max_answer_bytes", &self.inner.max_answer_bytes)
            .finish_non_exhaustive()
    }
}

/// What a call to a remote system goes out with: the HTTP client and the
/// policy it was built for.
#[derive(Clone)]
pub struct Way {
    pub client: reqwest::Client,
    pub policy: Policy,
    /// The largest answer read from a remote system.
    pub max_answer_bytes: u64,
}

impl Egress {
    /// The server's rules, and its client built at once: a server that
    /// cannot build one does not start.
    pub fn new(server: Policy, store: Store, max_answer_bytes: u64) -> Result<Self, Error> {
        let client = build_client(&server)?;
        let mut clients = LruCache::new(CLIENTS);
        clients.put(server.clone(), client);
        Ok(Self {
            inner: Arc::new(Inner {
                server,
                store,
                max_answer_bytes,
                clients: Mutex::new(clients),
                tenants: Mutex::new(LruCache::new(TENANTS)),
            }),
        })
    }

    /// The way out for a call of `tenant`: the server's rules and the tenant's.
    pub async fn way(&self, tenant: &str) -> Result<Way, Error> {
        let now = tokio::time::Instant::now();
        if let Some((at, way)) = self.tenants().get(tenant)
            && now.duration_since(*at) < TENANT_RULES_TTL
        {
            return Ok(way.clone());
        }
        let way = self.read_way(tenant).await?;
        self.tenants().put(tenant.to_string(), (now, way.clone()));
        Ok(way)
    }

    /// Drops what is kept of `tenant`'s rules: they changed, or it is gone.
    pub fn forget(&self, tenant: &str) {
        self.tenants().pop(tenant);
    }

    fn tenants(&self) -> std::sync::MutexGuard<'_, LruCache<String, (tokio::time::Instant, Way)>> {
        self.inner.tenants.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn read_way(&self, tenant: &str) -> Result<Way, Error> {
        let own = self
            .inner
            .store
            .tenant(tenant)
            .await?
            .map(|t| t.allow_egress)
            .unwrap_or_default();
        // Rules were checked when the admin set them; one that no longer
        // parses is skipped rather than stopping every call.
        let own = Policy::from_rules(
            own.iter()
                .filter_map(|r| Rule::parse(r).ok())
                .collect::<Vec<_>>(),
        );
        let policy = self.inner.server.with(&own);
        Ok(Way {
            client: self.client(&policy)?,
            policy,
            max_answer_bytes: self.inner.max_answer_bytes,
        })
    }

    fn client(&self, policy: &Policy) -> Result<reqwest::Client, Error> {
        let mut clients = self.inner.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = clients.get(policy) {
            return Ok(c.clone());
        }
        let client = build_client(policy)?;
        clients.put(policy.clone(), client.clone());
        Ok(client)
    }
}

/// A client that connects only where `policy` allows.
fn build_client(policy: &Policy) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .user_agent(concat!("eflow/", env!("CARGO_PKG_VERSION")))
        .dns_resolver(Arc::new(PolicyResolver {
            policy: policy.clone(),
        }))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .pool_idle_timeout(Duration::from_secs(90))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn non_public_addresses_are_refused_by_default() {
        let p = Policy::default();
        for refused in [
            "127.0.0.1",
            "127.1.2.3",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fc00::1",
            "fd12::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "::127.0.0.1",
        ] {
            assert!(!p.allows_ip(ip(refused)), "{refused} is refused");
        }
        for public in ["93.184.216.34", "8.8.8.8", "2606:4700::1111", "172.32.0.1"] {
            assert!(p.allows_ip(ip(public)), "{public} is allowed");
        }
    }

    #[test]
    fn rules_allow_networks_and_names() {
        let p = Policy::parse(&["127.0.0.1", "10.0.0.0/8", "models.internal", "*.corp"]).unwrap();
        assert!(p.allows_ip(ip("127.0.0.1")));
        assert!(p.allows_ip(ip("::ffff:127.0.0.1")), "the mapped form too");
        assert!(!p.allows_ip(ip("127.0.0.2")));
        assert!(!p.allows_ip(ip("::1")));
        assert!(p.allows_ip(ip("10.200.0.1")));
        assert!(!p.allows_ip(ip("169.254.169.254")));
        assert!(p.allows_name("models.internal"));
        assert!(p.allows_name("Models.Internal."));
        assert!(!p.allows_name("evil-models.internal"));
        assert!(p.allows_name("a.b.corp"));
        assert!(!p.allows_name("corp"));
        assert!(!p.allows_name("evilcorp"));
        assert_eq!(
            p.rules(),
            ["10.0.0.0/8", "127.0.0.1", "models.internal", "*.corp"]
        );
        assert!(
            Policy::parse(&["::ffff:127.0.0.1"])
                .unwrap()
                .allows_ip(ip("127.0.0.1"))
        );
    }

    #[test]
    fn bad_rules_say_what_to_write() {
        for bad in ["", "10.0.0.0/33", "http://x", "a..b", "*."] {
            let e = Rule::parse(bad).unwrap_err();
            assert!(e.contains("10.0.0.0/8"), "{bad}: {e}");
        }
    }

    /// The resolver hands on only the allowed addresses a name resolves to,
    /// and refuses the name when none is.
    #[tokio::test]
    async fn the_resolver_filters_what_a_name_resolves_to() {
        use reqwest::dns::Resolve;
        let resolve = |rules: &[&str]| {
            let r = PolicyResolver {
                policy: Policy::parse(rules).unwrap(),
            };
            r.resolve("localhost".parse().unwrap())
        };
        let refused = match resolve(&[]).await {
            Err(e) => e.to_string(),
            Ok(addrs) => panic!("refused, not {:?}", addrs.collect::<Vec<_>>()),
        };
        assert!(
            refused.contains("`localhost`, which resolves to"),
            "{refused}"
        );
        assert!(refused.contains("--allow-egress 127.0.0.1"), "{refused}");
        let addrs: Vec<SocketAddr> = resolve(&["127.0.0.1"]).await.unwrap().collect();
        assert!(!addrs.is_empty());
        assert!(
            addrs.iter().all(|a| a.ip() == ip("127.0.0.1")),
            "only the allowed address: {addrs:?}"
        );
        // A rule naming the host trusts whatever it resolves to.
        let addrs: Vec<SocketAddr> = resolve(&["localhost"]).await.unwrap().collect();
        assert!(addrs.iter().any(|a| a.ip().is_loopback()), "{addrs:?}");
    }

    #[test]
    fn literal_addresses_in_urls_are_checked() {
        let p = Policy::default();
        let e = p.check_url("http://169.254.169.254/latest").unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("169.254.169.254 (link-local)"), "{msg}");
        assert!(msg.contains("--allow-egress 169.254.169.254"), "{msg}");
        assert!(p.check_url("http://[::1]:80/").is_err());
        assert!(p.check_url("http://[::ffff:7f00:1]/").is_err());
        assert!(p.check_url("https://example.com/").is_ok());
        assert!(p.check_url("http://8.8.8.8/").is_ok());
    }
}
