//! Patching the last resource set when only a few Mapping objects changed.
//!
//! The source hands over every object each time; usually all but one or two are the objects of
//! the last translation, in the same order. [`patch`] walks both lists of content keys side by
//! side (a few steps ahead where they part), and when the objects that changed all parse to
//! Mappings, it moves those in and out of the last set's sorted Mappings instead of sorting and
//! checking every object again.
//!
//! Must not change output: anything it cannot patch exactly (another kind changed, a Mapping that
//! does not parse, a name defined twice, many changes) returns `None`, and the set is built in
//! full. The property tests in `tests/determinism.rs` compare both ways over random edits.

use std::sync::Arc;

use crate::diagnostic::Diagnostic;
use crate::source::RawObject;

use super::{parse_one, Mapping, Meta, ParseCache, ParseOptions, Parsed, ResourceSet, Spec};

/// A Mapping as the set shares it.
type Shared = Arc<(Meta, Mapping)>;

/// Above this many changed objects (removed plus added), the set is built in full.
const MAX_PATCHED: usize = 256;

/// How far ahead the walk looks for the next object both lists share.
const LOOKAHEAD: usize = 16;

/// What the last translation read, for the next one to patch.
#[derive(Debug)]
pub(super) struct Last {
    /// The objects' content keys, in input order.
    keys: Vec<u128>,
    /// Shared with the translation that read it: once that translation is done, the next patch
    /// changes it in place rather than copying it.
    set: Arc<ResourceSet>,
    diagnostics: Vec<Diagnostic>,
}

/// Remembers a set built in full. `duplicates`: whether two Mappings had one name (a patch
/// would have to redo that choice).
pub(super) fn remember(
    cache: &mut ParseCache,
    objects: &[RawObject],
    set: &Arc<ResourceSet>,
    diagnostics: &[Diagnostic],
    duplicates: bool,
) {
    cache.last = (!duplicates).then(|| Last {
        keys: objects.iter().map(RawObject::key).collect(),
        set: Arc::clone(set),
        diagnostics: diagnostics.to_vec(),
    });
}

/// Which of the last objects are gone and which objects are new (indices), walking both lists
/// of keys in order; `None` if too many differ.
fn changes(last: &[u128], objects: &[RawObject]) -> Option<(Vec<usize>, Vec<usize>)> {
    let (mut removed, mut added) = (Vec::new(), Vec::new());
    let (mut i, mut j) = (0, 0);
    while i < last.len() || j < objects.len() {
        match (last.get(i), objects.get(j)) {
            (Some(a), Some(b)) if *a == b.key() => {
                i += 1;
                j += 1;
                continue;
            }
            (Some(_), Some(b)) => {
                // The nearest place where the lists meet again: objects removed, or added.
                let gone = (1..=LOOKAHEAD).find(|&d| last.get(i + d) == Some(&b.key()));
                let new = (1..=LOOKAHEAD).find(|&d| objects.get(j + d).is_some_and(|o| o.key() == last[i]));
                match (gone, new) {
                    (Some(d), n) if n.is_none_or(|n| d <= n) => {
                        removed.extend(i..i + d);
                        i += d;
                    }
                    (_, Some(d)) => {
                        added.extend(j..j + d);
                        j += d;
                    }
                    _ => {
                        removed.push(i);
                        added.push(j);
                        i += 1;
                        j += 1;
                    }
                }
            }
            (Some(_), None) => {
                removed.push(i);
                i += 1;
            }
            (None, Some(_)) => {
                added.push(j);
                j += 1;
            }
            (None, None) => break,
        }
        if removed.len() + added.len() > MAX_PATCHED {
            return None;
        }
    }
    Some((removed, added))
}

/// The Mapping an object parsed to, if it did.
fn mapping_of(parsed: &Parsed) -> Option<&Shared> {
    match &parsed.0 {
        Some(r) => match &r.spec {
            Spec::Mapping(m) => Some(m),
            _ => None,
        },
        None => None,
    }
}

/// The last set with the changed Mappings moved in and out, and the diagnostics to go with it;
/// `None` when the set must be built in full (see the module's documentation).
pub(super) fn patch(
    objects: &[RawObject],
    options: &ParseOptions,
    cache: &mut ParseCache,
) -> Option<(Arc<ResourceSet>, Vec<Diagnostic>)> {
    let last = cache.last.as_ref()?;
    let (removed, added) = changes(&last.keys, objects)?;
    // What went: each a Mapping the cache holds.
    let gone: Vec<(u128, &Parsed)> = removed
        .iter()
        .map(|&i| {
            let key = last.keys[i];
            let parsed = cache.entries.get(&key)?;
            mapping_of(parsed)?;
            Some((key, &**parsed))
        })
        .collect::<Option<_>>()?;
    // What came: each a Mapping (read now, unless the cache has it).
    let came: Vec<(u128, Box<Parsed>)> = added
        .iter()
        .map(|&j| {
            let obj = &objects[j];
            let parsed = match cache.entries.get(&obj.key()) {
                Some(p) => p.clone(),
                None => {
                    let mut ds = Vec::new();
                    let r = parse_one(obj, options, &mut ds);
                    Box::new((r, ds))
                }
            };
            mapping_of(&parsed)?;
            Some((obj.key(), parsed))
        })
        .collect::<Option<_>>()?;
    // From here on the last set is changed in place; should it turn out not to be patchable
    // after all, the cache forgets it (the next translation builds the set in full).
    let gone: Vec<(u128, Shared, Vec<Diagnostic>)> = gone
        .into_iter()
        .filter_map(|(key, parsed)| Some((key, Arc::clone(mapping_of(parsed)?), parsed.1.clone())))
        .collect();
    let mut last = cache.last.take()?;
    // Two Mappings with one name: which one is used is decided in full.
    let moved = super::move_mappings(
        &mut Arc::make_mut(&mut last.set).mappings,
        gone.iter().map(|(_, m, _)| m),
        came.iter().filter_map(|(_, parsed)| mapping_of(parsed)),
    );
    if !moved {
        return None;
    }
    for (_, _, ds) in &gone {
        for d in ds {
            if let Some(at) = last.diagnostics.iter().position(|x| x == d) {
                last.diagnostics.swap_remove(at);
            }
        }
    }
    for (_, parsed) in &came {
        last.diagnostics.extend(parsed.1.iter().cloned());
    }
    // The cache now holds this translation.
    for (key, _, _) in &gone {
        cache.entries.remove(key);
    }
    for (key, parsed) in came {
        cache.entries.insert(key, parsed);
    }
    cache.mapping_order = last.set.mappings.iter().map(|m| Arc::as_ptr(m) as usize).collect();
    last.keys.clear();
    last.keys.extend(objects.iter().map(RawObject::key));
    let out = (Arc::clone(&last.set), last.diagnostics.clone());
    cache.last = Some(last);
    Some(out)
}
