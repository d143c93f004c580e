//! A small time-bounded cache for the two lookups every call makes (the API key, and
//! whether the tenant exists). Entries live `ttl`; the process that revokes a key or
//! deletes a tenant clears the cache at once, other replicas see it within `ttl`.
//! With a `ttl` of [`FOREVER`] it keeps what is derived from text that cannot change
//! (a tenant's signing key from its seed, an endpoint's parsed URL).

use std::{
    borrow::Borrow,
    collections::HashMap,
    hash::Hash,
    sync::Mutex,
    time::{Duration, Instant},
};

/// A `ttl` for values that never go stale.
pub const FOREVER: Duration = Duration::MAX;

/// Entries kept before the cache is emptied (cheaper than LRU bookkeeping, and the
/// working set of keys and tenants is small).
const MAX_ENTRIES: usize = 50_000;

pub struct TtlCache<K, V> {
    ttl: Duration,
    entries: Mutex<HashMap<K, (V, Instant)>>,
}

impl<K: Eq + Hash, V: Clone> TtlCache<K, V> {
    pub fn new(ttl: Duration) -> Self {
        TtlCache {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(key)
            .filter(|(_, at)| at.elapsed() < self.ttl)
            .map(|(v, _)| v.clone())
    }

    pub fn insert(&self, key: K, value: V) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= MAX_ENTRIES {
            entries.clear();
        }
        entries.insert(key, (value, Instant::now()));
    }

    /// The value for `key`, or the one `make` derives, kept unless deriving failed.
    pub fn get_or_try_insert<Q, E>(
        &self,
        key: &Q,
        make: impl FnOnce() -> Result<V, E>,
    ) -> Result<V, E>
    where
        K: Borrow<Q>,
        Q: ToOwned<Owned = K> + Hash + Eq + ?Sized,
    {
        if let Some(value) = self.get(key) {
            return Ok(value);
        }
        let value = make()?;
        self.insert(key.to_owned(), value.clone());
        Ok(value)
    }

    pub fn clear(&self) {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_and_clear() {
        let cache = TtlCache::new(Duration::from_millis(30));
        cache.insert("a", 1);
        assert_eq!(cache.get(&"a"), Some(1));
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(cache.get(&"a"), None);
        cache.insert("b", 2);
        cache.clear();
        assert_eq!(cache.get(&"b"), None);
    }
}
