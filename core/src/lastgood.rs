//! Last known good: when an object that was valid becomes invalid, its last valid version is
//! served in its place (and said so, loudly) until the object is fixed or deleted.
//!
//! The rule, by identity (kind, namespace, name of a getambassador.io object; files and
//! Kubernetes alike):
//! - an object is *valid* in a translation when no error names it and it was read for this
//!   instance (`ambassador_id`); a valid object is served as it is, and remembered;
//! - an object that has errors is replaced by its *previous version* (the one the source keeps,
//!   `Loaded::previous`, or else the one remembered here), as long as that version still
//!   translates without errors; the current version's errors stay, with a warning saying which
//!   version is served instead;
//! - an object that was never valid is left out, as before; a deleted object is forgotten at once;
//!   two objects with one identity are never replaced.
//!
//! Pure: the translation is a function of the source's objects, the source's previous versions
//! and a [`LastGood`] value the caller holds between translations (no clock, no I/O). Replicas
//! agree byte for byte once they read the same previous versions: in Kubernetes the status
//! writer stores them beside the objects (`status.lastValid`), and a source's version wins over
//! what a replica remembers.

use std::collections::{BTreeMap, BTreeSet};

use crate::diagnostic::{Diagnostic, ObjectRef, Severity};
use crate::resource::str_text;
use crate::source::{Loaded, RawObject};
use crate::Translation;

/// The diagnostic code of an object served from its previous version.
pub const SERVING_PREVIOUS: &str = "lastgood.serving_previous";

/// The code that says an object is for another instance (not served, so never "valid").
const OTHER_INSTANCE: &str = "resource.other_ambassador_id";

/// The identity of a getambassador.io object: kind, namespace (`default` when it names none),
/// name. Other objects (Secrets, Services, Ingresses) have none here: they are never replaced.
pub fn identity(object: &RawObject) -> Option<ObjectRef> {
    let root = &object.root;
    if !str_text(root, &["apiVersion"])?.starts_with("getambassador.io/") {
        return None;
    }
    Some(ObjectRef {
        kind: str_text(root, &["kind"])?.to_string(),
        namespace: str_text(root, &["metadata", "namespace"])
            .unwrap_or(crate::source::DEFAULT_NAMESPACE)
            .to_string(),
        name: str_text(root, &["metadata", "name"])?.to_string(),
    })
}

/// An object served from its previous version in a translation.
#[derive(Clone, Debug, PartialEq)]
pub struct Kept {
    /// Its identity.
    pub object: ObjectRef,
    /// The version served.
    pub served: RawObject,
}

/// The last valid version of each object, as one process saw them. Held by the caller between
/// translations ([`translate`] reads it, [`LastGood::remember`] updates it).
#[derive(Clone, Debug, Default)]
pub struct LastGood {
    by_id: BTreeMap<ObjectRef, RawObject>,
}

impl LastGood {
    /// The remembered version of an object.
    pub fn get(&self, object: &ObjectRef) -> Option<&RawObject> {
        self.by_id.get(object)
    }

    /// How many objects have a remembered version.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Updates what is remembered after `translation` of `loaded`: objects that were valid are
    /// remembered as they are now, objects that were invalid keep what was remembered, objects
    /// that are gone (or ambiguous) are forgotten.
    pub fn remember(&mut self, loaded: &Loaded, translation: &Translation) {
        let (invalid, other_instance) = judged(&translation.diagnostics);
        let mut next = BTreeMap::new();
        for (id, object) in unique(&loaded.objects) {
            if invalid.contains(&id) {
                if let Some(old) = self.by_id.remove(&id) {
                    next.insert(id, old);
                }
            } else if !other_instance.contains(&id) {
                next.insert(id, object.clone());
            }
        }
        self.by_id = next;
    }
}

/// Objects named by an error, and objects for another instance.
fn judged(diagnostics: &[Diagnostic]) -> (BTreeSet<ObjectRef>, BTreeSet<ObjectRef>) {
    let mut invalid = BTreeSet::new();
    let mut other = BTreeSet::new();
    for d in diagnostics {
        let Some(o) = &d.object else { continue };
        if d.severity == Severity::Error {
            invalid.insert(o.clone());
        } else if d.code == OTHER_INSTANCE {
            other.insert(o.clone());
        }
    }
    (invalid, other)
}

/// The objects of a set that have an identity no other object shares.
fn unique(objects: &[RawObject]) -> BTreeMap<ObjectRef, &RawObject> {
    let mut seen: BTreeMap<ObjectRef, Option<&RawObject>> = BTreeMap::new();
    for o in objects {
        if let Some(id) = identity(o) {
            seen.entry(id).and_modify(|slot| *slot = None).or_insert(Some(o));
        }
    }
    seen.into_iter().filter_map(|(id, o)| Some((id, o?))).collect()
}

/// `loaded` with the objects of `replaced` swapped for their previous versions.
fn substituted(loaded: &Loaded, replaced: &BTreeMap<ObjectRef, RawObject>) -> Loaded {
    let mut out = loaded.clone();
    for o in &mut out.objects {
        if let Some(previous) = identity(o).and_then(|id| replaced.get(&id)) {
            *o = previous.clone();
        }
    }
    out
}

/// Translates `loaded` with `run`, serving previous versions of objects that turned invalid (see
/// the module's rule). `run` is the plain pipeline ([`crate::translate`]) or a
/// [`crate::Translator`]'s; it runs once when nothing needs replacing (the usual case), else
/// two or three times.
pub fn translate(loaded: &Loaded, memory: &LastGood, mut run: impl FnMut(&Loaded) -> Translation) -> Translation {
    let first = run(loaded);
    let (invalid, _) = judged(&first.diagnostics);
    if invalid.is_empty() {
        return first;
    }
    let from_source: BTreeMap<ObjectRef, &RawObject> = unique(&loaded.previous);
    let current = unique(&loaded.objects);
    let mut replaced: BTreeMap<ObjectRef, RawObject> = invalid
        .iter()
        .filter_map(|id| {
            let now = current.get(id)?;
            let previous = from_source.get(id).copied().or_else(|| memory.get(id))?;
            // The same content is just as invalid.
            (previous.root != now.root).then(|| (id.clone(), previous.clone()))
        })
        .collect();
    if replaced.is_empty() {
        return first;
    }
    let mut out = run(&substituted(loaded, &replaced));
    // A previous version that no longer translates cleanly (what it refers to changed) is not
    // served: the current one is, as without this rule.
    let (still_invalid, _) = judged(&out.diagnostics);
    let before = replaced.len();
    replaced.retain(|id, _| !still_invalid.contains(id));
    if replaced.is_empty() {
        return first;
    }
    if replaced.len() != before {
        out = run(&substituted(loaded, &replaced));
    }
    // The served versions' own warnings point at lines that may be gone: the current version's
    // diagnostics are what the user needs, plus which version is served.
    out.diagnostics
        .retain(|d| d.severity == Severity::Error || !d.object.as_ref().is_some_and(|o| replaced.contains_key(o)));
    out.diagnostics.extend(
        first
            .diagnostics
            .iter()
            .filter(|d| d.object.as_ref().is_some_and(|o| replaced.contains_key(o)))
            .cloned(),
    );
    for (id, served) in &replaced {
        let now = current.get(id).map(|o| o.origin.clone());
        let errors = first
            .diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error && d.object.as_ref() == Some(id))
            .count();
        let mut d = Diagnostic::warning(
            SERVING_PREVIOUS,
            format!(
                "serving the previous valid version of this {} (read from {}) because the current one has {}",
                id.kind,
                served.origin,
                if errors == 1 {
                    "an error".to_string()
                } else {
                    format!("{errors} errors")
                },
            ),
        )
        .on(id.clone())
        .hint(format!(
            "the previous version stays until this {} is fixed or deleted; `serve --no-last-known-good` drops invalid objects at once instead",
            id.kind
        ));
        d.origin = now;
        out.diagnostics.push(d);
    }
    out.diagnostics.sort();
    out.diagnostics.dedup();
    out.kept = replaced
        .into_iter()
        .map(|(object, served)| Kept { object, served })
        .collect();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry() -> crate::rules::Registry {
        crate::rules::Registry::core().unwrap()
    }

    fn mapping(name: &str, prefix: &str, timeout: &str) -> String {
        format!(
            "apiVersion: getambassador.io/v3alpha1\nkind: Mapping\nmetadata:\n  name: {name}\nspec:\n  hostname: \"*\"\n  prefix: {prefix}\n  service: s\n  timeout_ms: {timeout}\n"
        )
    }

    fn run_with(memory: &mut LastGood, text: &str) -> Translation {
        let loaded = crate::source::parse_text("m.yaml", text);
        let registry = registry();
        let t = translate(&loaded, memory, |l| {
            crate::translate(l, &registry, &crate::Options::default())
        });
        memory.remember(&loaded, &t);
        t
    }

    fn prefixes(t: &Translation) -> Vec<String> {
        let mut out: Vec<String> =
            t.ir.route_configs
                .iter()
                .flat_map(|rc| &rc.virtual_hosts)
                .flat_map(|vh| &vh.routes)
                .map(|r| r.prefix.clone())
                .collect();
        out.sort();
        out.dedup();
        out
    }

    #[test]
    fn an_object_that_turns_invalid_is_served_as_it_was_until_fixed_or_deleted() {
        let mut memory = LastGood::default();
        let t = run_with(&mut memory, &mapping("a", "/v1/", "100"));
        assert_eq!(prefixes(&t), ["/v1/"]);
        let t = run_with(&mut memory, &mapping("a", "/v2/", "abc"));
        assert_eq!(prefixes(&t), ["/v1/"], "{:#?}", t.diagnostics);
        assert_eq!(t.kept.len(), 1);
        assert!(t.diagnostics.iter().any(|d| d.code == SERVING_PREVIOUS));
        assert!(t
            .diagnostics
            .iter()
            .any(|d| d.severity == Severity::Error && d.path.contains("timeout_ms")));
        // Still invalid in another way: still the first version.
        let t = run_with(&mut memory, &mapping("a", "/v3/", "xyz"));
        assert_eq!(prefixes(&t), ["/v1/"]);
        // Fixed: the new version.
        let t = run_with(&mut memory, &mapping("a", "/v4/", "5"));
        assert_eq!(prefixes(&t), ["/v4/"]);
        assert!(t.kept.is_empty());
        // Deleted, then back invalid: never valid since, left out.
        run_with(&mut memory, "");
        let t = run_with(&mut memory, &mapping("a", "/v5/", "abc"));
        assert!(prefixes(&t).is_empty());
    }

    #[test]
    fn a_new_object_that_is_invalid_is_left_out() {
        let mut memory = LastGood::default();
        let t = run_with(&mut memory, &mapping("a", "/v1/", "abc"));
        assert!(prefixes(&t).is_empty());
        assert!(t.kept.is_empty());
    }
}
