//! What the caches of every stage share: maps keyed by 128-bit content hashes or by the address
//! of a shared (`Arc`) value, and a sort that reuses the last one's order.
//!
//! Content hashes are already uniformly distributed, so hashing them again, with SipHash, only
//! costs time: the map uses the key's low 64 bits as is. Not for keys anyone else chooses (no
//! protection against flooding; content hashes are xxh3 of data the operator controls).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A `HashMap` from a content hash.
pub type KeyMap<V> = HashMap<u128, V, BuildHasherDefault<KeyHasher>>;

/// A `HashMap` from the address of a shared (`Arc`) value. Valid only while the map holds a clone
/// of that `Arc`: an address is unique for as long as its allocation lives.
pub type AddrMap<V> = HashMap<usize, V, BuildHasherDefault<KeyHasher>>;

/// A `KeyMap` with room for `n` entries.
pub fn with_capacity<V>(n: usize) -> KeyMap<V> {
    KeyMap::with_capacity_and_hasher(n, BuildHasherDefault::default())
}

/// Passes a `u128` key through (its low 64 bits).
#[derive(Default)]
pub struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only reached for keys other than `u128`: fold them in.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_usize(&mut self, addr: usize) {
        // Addresses are aligned (low bits zero) and close together: spread them (Fibonacci
        // hashing).
        self.0 = (addr as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    fn write_u128(&mut self, key: u128) {
        // Truncation intended: the low half of a content hash is as good as the whole.
        #[allow(clippy::cast_possible_truncation)]
        {
            self.0 = key as u64;
        }
    }
}

/// Sorts `items` by `order` reusing `previous`, the addresses of the last sort's items in order:
/// the items it names keep their relative order, which still holds since their content did not
/// change, and only the others are compared and placed (O(n) plus O(k log n) comparisons for k
/// new items, instead of O(n log n)). `known` gives an item's address when it is the same item
/// (the same live allocation) as in the last sort. With a total order the result is exactly a
/// full sort's; items that compare equal may come in another order than a stable sort's.
pub fn sort_incrementally<T>(
    items: Vec<T>,
    previous: &[usize],
    known: impl Fn(&T) -> Option<usize>,
    order: impl Fn(&T, &T) -> std::cmp::Ordering,
) -> Vec<T> {
    let mut at: AddrMap<usize> = AddrMap::with_capacity_and_hasher(items.len(), Default::default());
    for (i, item) in items.iter().enumerate() {
        if let Some(a) = known(item) {
            at.insert(a, i);
        }
    }
    let mut sorted: Vec<usize> = previous.iter().filter_map(|a| at.get(a).copied()).collect();
    let mut placed = vec![false; items.len()];
    for &i in &sorted {
        placed[i] = true;
    }
    let mut new: Vec<usize> = (0..items.len()).filter(|&i| !placed[i]).collect();
    new.sort_by(|&a, &b| order(&items[a], &items[b]));
    if new.len() > sorted.len() / 8 {
        // Many new items: one merge pass.
        let old = std::mem::take(&mut sorted);
        let (mut o, mut n) = (old.into_iter().peekable(), new.into_iter().peekable());
        while let (Some(&a), Some(&b)) = (o.peek(), n.peek()) {
            if order(&items[b], &items[a]) == std::cmp::Ordering::Less {
                sorted.push(b);
                n.next();
            } else {
                sorted.push(a);
                o.next();
            }
        }
        sorted.extend(o);
        sorted.extend(n);
    } else {
        for i in new {
            let p = sorted.partition_point(|&j| order(&items[j], &items[i]) == std::cmp::Ordering::Less);
            sorted.insert(p, i);
        }
    }
    let mut slots: Vec<Option<T>> = items.into_iter().map(Some).collect();
    sorted.iter().filter_map(|&i| slots[i].take()).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn entries_are_found_by_their_key() {
        let mut m = super::with_capacity(4);
        m.insert(1u128 << 64 | 7, "a");
        m.insert(7, "b");
        assert_eq!(m.get(&(1u128 << 64 | 7)), Some(&"a"));
        assert_eq!(m.get(&7), Some(&"b"));
        assert_eq!(m.get(&8), None);
        let mut a = super::AddrMap::default();
        for addr in (0..64usize).map(|i| 0x7f00_0000 + 16 * i) {
            a.insert(addr, addr);
        }
        assert!((0..64usize)
            .map(|i| 0x7f00_0000 + 16 * i)
            .all(|addr| a.get(&addr) == Some(&addr)));
    }

    #[test]
    fn an_incremental_sort_equals_a_full_sort() {
        // Items are (address, value); the last sort saw some of them (and one that is gone).
        let mut seed = 7u64;
        let mut next = || {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            seed >> 33
        };
        for round in 0..200 {
            let n = (next() % 40) as usize;
            let items: Vec<(usize, u64)> = (0..n).map(|i| (i * 16, next() % 1000 * 100 + i as u64)).collect();
            let mut previous: Vec<(usize, u64)> = items.iter().copied().filter(|_| next() % 4 != 0).collect();
            previous.push((9999, 0));
            previous.sort_by_key(|&(_, v)| v);
            let previous: Vec<usize> = previous.iter().map(|&(a, _)| a).collect();
            let mut full = items.clone();
            full.sort_by_key(|&(_, v)| v);
            let incremental = super::sort_incrementally(
                items.clone(),
                &previous,
                |&(a, _)| (a != 0).then_some(a),
                |a, b| a.1.cmp(&b.1),
            );
            assert_eq!(incremental, full, "round {round}");
        }
    }
}
