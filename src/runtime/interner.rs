//! Equal values kept once. Caches of thousands of namespaces hold the same few label keys and
//! values, the same policy content, the same egress summaries over and over: each is made once
//! and shared while anything holds it.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::sync::{Arc, Mutex, Weak};

/// Equal values made once: `share` hands out the value already made for an equal key while any
/// user still holds it. Dead entries are swept when the table has doubled since the last sweep,
/// so it stays proportional to the distinct values alive.
pub struct Interner<Key, T> {
    table: Mutex<(HashMap<Key, Weak<T>>, usize)>,
}

impl<Key, T> Default for Interner<Key, T> {
    fn default() -> Self {
        Self {
            table: Mutex::new((HashMap::new(), 0)),
        }
    }
}

impl<T: Hash + Eq + Clone> Interner<T, T> {
    /// `value`, or the equal one already kept.
    pub fn intern(&self, value: T) -> Arc<T> {
        self.share(value.clone(), || value)
    }
}

impl<Key: Hash + Eq, T> Interner<Key, T> {
    pub fn share(&self, key: Key, make: impl FnOnce() -> T) -> Arc<T> {
        let mut guard = self.table.lock().unwrap();
        let (table, live_at_sweep) = &mut *guard;
        if let Some(alive) = table.get(&key).and_then(Weak::upgrade) {
            return alive;
        }
        if table.len() >= 64.max(2 * *live_at_sweep) {
            table.retain(|_, v| v.strong_count() > 0);
            *live_at_sweep = table.len();
        }
        let value = Arc::new(make());
        table.insert(key, Arc::downgrade(&value));
        value
    }

    /// Whether a value still held by some user satisfies `pred`: a few distinct values are
    /// looked at, not every holder.
    pub fn any_alive(&self, pred: impl Fn(&T) -> bool) -> bool {
        let guard = self.table.lock().unwrap();
        guard.0.values().filter_map(Weak::upgrade).any(|v| pred(&v))
    }

    /// How many distinct values the table holds (some possibly dead until the next sweep).
    pub fn entries(&self) -> usize {
        self.table.lock().unwrap().0.len()
    }
}

/// Strings kept once (label keys and values). A string nobody else holds any more is dropped when
/// the set has doubled since the last sweep.
#[derive(Default)]
pub struct Strings {
    set: Mutex<(HashSet<Arc<str>>, usize)>,
}

impl Strings {
    pub fn share(&self, s: &str) -> Arc<str> {
        let mut guard = self.set.lock().unwrap();
        let (set, live_at_sweep) = &mut *guard;
        if let Some(kept) = set.get(s) {
            return kept.clone();
        }
        if set.len() >= 64.max(2 * *live_at_sweep) {
            set.retain(|kept| Arc::strong_count(kept) > 1);
            *live_at_sweep = set.len();
        }
        let kept: Arc<str> = Arc::from(s);
        set.insert(kept.clone());
        kept
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_interner_forgets_values_nobody_holds() {
        let interner: Interner<u32, String> = Interner::default();
        let kept = interner.share(0, || "zero".into());
        for i in 1..200 {
            drop(interner.share(i, || i.to_string()));
        }
        assert!(interner.entries() < 130, "dead entries swept: {}", interner.entries());
        assert!(Arc::ptr_eq(&kept, &interner.share(0, || "other".into())));
    }

    #[test]
    fn strings_are_shared_and_swept_when_unused() {
        let strings = Strings::default();
        let a = strings.share("team");
        assert!(Arc::ptr_eq(&a, &strings.share("team")));
        for i in 0..200 {
            drop(strings.share(&i.to_string()));
        }
        assert!(strings.set.lock().unwrap().0.len() < 130);
        assert!(Arc::ptr_eq(&a, &strings.share("team")));
    }
}
