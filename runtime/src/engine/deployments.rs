//! Deployed bundles, validated once and shared by every worker.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use eflow_core::ValidatedBundle;
use eflow_ir::Bundle;

use super::Error;
use crate::store::Store;

/// A bundle as the engine runs it: validated IR and the environment whose
/// bindings carry out its steps.
#[derive(Debug)]
pub struct Deployed {
    pub id: String,
    pub tenant: String,
    pub env: String,
    pub bundle: ValidatedBundle,
}

/// A cache of deployed bundles by id. Bundles are immutable, so entries never
/// go stale; there are few of them (one per deploy), so they are not evicted.
#[derive(Debug, Clone)]
pub struct Deployments {
    store: Store,
    cache: Arc<RwLock<HashMap<String, Arc<Deployed>>>>,
}

impl Deployments {
    pub fn new(store: Store) -> Self {
        Self {
            store,
            cache: Arc::default(),
        }
    }

    pub async fn get(&self, id: &str) -> Result<Arc<Deployed>, Error> {
        if let Some(d) = self.cache.read().ok().and_then(|c| c.get(id).cloned()) {
            return Ok(d);
        }
        let Some((tenant, env, ir)) = self.store.bundle(id).await? else {
            return Err(Error::Bundle(id.into(), "no such bundle".into()));
        };
        let bundle: Bundle =
            serde_json::from_slice(&ir).map_err(|e| Error::Bundle(id.into(), e.to_string()))?;
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
        if let Ok(mut c) = self.cache.write() {
            c.insert(id.into(), d.clone());
        }
        Ok(d)
    }

    /// Puts a bundle that was just validated and stored into the cache.
    pub fn insert(&self, d: Arc<Deployed>) {
        if let Ok(mut c) = self.cache.write() {
            c.insert(d.id.clone(), d);
        }
    }
}
