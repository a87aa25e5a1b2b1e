//! Maps keyed by 128-bit content hashes (the caches of every stage). The keys are already
//! uniformly distributed, so hashing them again, with SipHash, only costs time: the map uses the
//! key's low 64 bits as is. Not for keys anyone else chooses (no protection against flooding;
//! content hashes are xxh3 of data the operator controls).

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
}
