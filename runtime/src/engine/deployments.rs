//! Deployed bundles, validated once and shared by every worker, kept in a
//! cache bounded by bytes.

use std::sync::{Arc, Mutex};

use eflow_core::ValidatedBundle;
use eflow_ir::Bundle;

use super::Error;
use crate::byte_lru::ByteLru;
use crate::store::Store;

/// The default of the server's `bundle_cache_bytes`: 256 MiB.
pub const DEFAULT_BUNDLE_CACHE_BYTES: u64 = 256 * 1024 * 1024;

/// A bundle as the engine runs it: validated IR and the environment whose
/// bindings carry out its steps.
#[derive(Debug)]
pub struct Deployed {
    pub id: String,
    pub tenant: String,
    pub env: String,
    pub bundle: ValidatedBundle,
}

/// A cache of deployed bundles by id, the least recently used dropped first
/// once their IR passes a number of bytes. Bundles are immutable, so entries
/// never go stale; one dropped is read from the store again on its next use.
/// A bundle larger than the whole cache is never kept.
#[derive(Debug, Clone)]
pub struct Deployments {
    store: Store,
    cache: Arc<Mutex<Cache>>,
}

/// Each bundle with the length of its IR JSON, the measure of its size.
type Cache = ByteLru<String, Arc<Deployed>>;

/// Counts the bytes written to it: a bundle's size without a second copy of it.
struct Counter(u64);

impl std::io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Deployments {
    /// A cache that keeps bundles up to `max_bytes` of IR JSON.
    pub fn new(store: Store, max_bytes: u64) -> Self {
        Self {
            store,
            cache: Arc::new(Mutex::new(Cache::new(max_bytes))),
        }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub async fn get(&self, id: &str) -> Result<Arc<Deployed>, Error> {
        if let Some(d) = self.cache().get(&id.to_string()) {
            return Ok(d);
        }
        let Some((tenant, env, ir)) = self.store.bundle(id).await? else {
            return Err(Error::Bundle(id.into(), "no such bundle".into()));
        };
        let size = ir.len() as u64;
        let bundle: Bundle =
            serde_json::from_slice(&ir).map_err(|e| Error::Bundle(id.into(), e.to_string()))?;
        drop(ir);
        let bundle = eflow_core::validate(&bundle).map_err(|errors| {
            let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
            Error::Bundle(id.into(), text.join("; "))
        })?;
        let d = Arc::new(Deployed {
            id: id.into(),
            tenant,
            env,
            bundle,
        });
        self.cache().put(id.to_string(), d.clone(), size);
        Ok(d)
    }

    /// Puts a bundle that was just validated and stored into the cache.
    pub fn insert(&self, d: Arc<Deployed>) {
        let mut size = Counter(0);
        // The same bytes the store holds: the bundle's JSON, counted, not kept.
        if serde_json::to_writer(&mut size, d.bundle.bundle()).is_err() {
            return;
        }
        self.cache().put(d.id.clone(), d, size.0);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::json;

    use super::*;

    fn deployed(id: &str) -> Arc<Deployed> {
        let mut flow: eflow_ir::Flow = serde_json::from_value(json!({
            "name": "F", "module": "m", "hash": "",
            "params": [], "output": {"kind": "int"},
            "nodes": [{"id": "s0", "call": {"step": {"contract": "m.Work"}}, "inputs": {},
                "retry": {"max_attempts": 1, "backoff": {"kind": "exponential", "initial_ms": 10000, "max_ms": 600000}},
                "output": {"kind": "int"}}],
            "conditions": [], "result": {"node": {"id": "s0"}}, "types": {},
            "contracts": {"m.Work": {"kind": "remote", "params": [], "output": {"kind": "int"}}},
            "bindings": {"test": {"m.Work": {"connector": "sim", "config": {"duration": 1000}}}}
        }))
        .unwrap();
        flow.hash = flow.compute_hash();
        let bundle: Bundle =
            serde_json::from_value(json!({"ir_version": eflow_ir::IR_VERSION, "flows": [flow]}))
                .unwrap();
        Arc::new(Deployed {
            id: id.into(),
            tenant: "acme".into(),
            env: "test".into(),
            bundle: eflow_core::validate(&bundle).unwrap(),
        })
    }

    #[test]
    fn the_least_recently_used_bundles_go_past_the_byte_limit() {
        let mut c = Cache::new(100);
        let put = |c: &mut Cache, id: &str, size| c.put(id.to_string(), deployed(id), size);
        put(&mut c, "a", 40);
        put(&mut c, "b", 40);
        assert!(c.get(&"a".into()).is_some(), "a is used again");
        put(&mut c, "c", 40);
        assert!(c.contains(&"a".into()) && c.contains(&"c".into()));
        assert!(!c.contains(&"b".into()), "b was the least recently used");
        assert_eq!(c.bytes(), 80);
        // Larger than the whole cache: never kept, and nothing dropped for it.
        put(&mut c, "huge", 101);
        assert!(!c.contains(&"huge".into()));
        assert_eq!(c.bytes(), 80);
        // The same bundle again replaces itself.
        put(&mut c, "a", 60);
        assert_eq!((c.len(), c.bytes()), (2, 100));
    }
}
