//! A least-recently-used cache bounded by the bytes of what it holds, for
//! values that are expensive to read again (deployed bundles, values kept by
//! reference). Sizes are the caller's measure of an entry; an entry larger than
//! the whole cache is never kept.

use std::hash::Hash;

use lru::LruCache;

#[derive(Debug)]
pub struct ByteLru<K: Hash + Eq, V> {
    entries: LruCache<K, (V, u64)>,
    bytes: u64,
    max_bytes: u64,
}

impl<K: Hash + Eq, V: Clone> ByteLru<K, V> {
    pub fn new(max_bytes: u64) -> Self {
        Self {
            entries: LruCache::unbounded(),
            bytes: 0,
            max_bytes,
        }
    }

    /// The entry for `key`, now the most recently used.
    pub fn get(&mut self, key: &K) -> Option<V> {
        self.entries.get(key).map(|(v, _)| v.clone())
    }

    /// Keeps `value` of `size` bytes, dropping the least recently used
    /// entries until it fits.
    pub fn put(&mut self, key: K, value: V, size: u64) {
        if let Some((_, old)) = self.entries.pop(&key) {
            self.bytes -= old;
        }
        if size > self.max_bytes {
            return;
        }
        while self.bytes + size > self.max_bytes {
            let Some((_, (_, dropped))) = self.entries.pop_lru() else {
                break;
            };
            self.bytes -= dropped;
        }
        self.bytes += size;
        self.entries.put(key, (value, size));
    }

    /// The bytes held.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn contains(&self, key: &K) -> bool {
        self.entries.contains(key)
    }
}
