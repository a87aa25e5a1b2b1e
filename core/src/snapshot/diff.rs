//! What changed between two snapshots, and in which order to tell Envoy.
//!
//! A [`Diff`] holds the resources added or changed (with their new content) and the names removed,
//! per type. [`Diff::apply`] turns the old snapshot into the new one. [`Diff::steps`] orders the
//! work make-before-break: additions and changes in [`ResourceType::ALL`] order (clusters before the
//! routes that use them), then removals in reverse order (routes stop using a cluster before it
//! goes away).

use std::collections::{BTreeMap, BTreeSet};

use imbl::ordmap::DiffItem;

use super::{Name, Resource, ResourceType, Snapshot};

/// The changes of one type.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TypeDiff {
    /// Added or changed resources, with their new content.
    pub upserts: BTreeMap<Name, Resource>,
    /// Names that are gone.
    pub removals: BTreeSet<Name>,
}

impl TypeDiff {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.upserts.is_empty() && self.removals.is_empty()
    }
}

/// Everything that changed between two snapshots.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Diff {
    /// Per type; types without changes are absent.
    pub types: BTreeMap<ResourceType, TypeDiff>,
}

/// One step of delivering a diff.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Send the added and changed resources of a type.
    Upsert(ResourceType),
    /// Tell about the removed resources of a type.
    Remove(ResourceType),
}

/// Computes what changed from `old` to `new`.
pub fn diff(old: &Snapshot, new: &Snapshot) -> Diff {
    let mut out = Diff::default();
    let empty = super::ResourceMap::new();
    for ty in ResourceType::ALL {
        let mut d = TypeDiff::default();
        // Both maps are persistent: the parts a translation did not touch are the same nodes in
        // both, and the walk skips them without looking inside.
        let (o, n) = (old.map(ty).unwrap_or(&empty), new.map(ty).unwrap_or(&empty));
        for item in o.diff(n) {
            match item {
                DiffItem::Add(name, r) | DiffItem::Update { new: (name, r), .. } => {
                    d.upserts.insert(name.clone(), r.clone());
                }
                DiffItem::Remove(name, _) => {
                    d.removals.insert(name.clone());
                }
            }
        }
        if !d.is_empty() {
            out.types.insert(ty, d);
        }
    }
    out
}

impl Diff {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.types.is_empty()
    }

    /// The changes of one type, if any.
    pub fn of_type(&self, ty: ResourceType) -> Option<&TypeDiff> {
        self.types.get(&ty)
    }

    /// Applies the diff to the snapshot it was computed from, giving the newer one.
    pub fn apply(&self, old: &Snapshot) -> Snapshot {
        let mut out = old.clone();
        for (ty, d) in &self.types {
            for name in &d.removals {
                out.remove(*ty, name);
            }
            for (name, r) in &d.upserts {
                out.insert(*ty, name.clone(), r.clone());
            }
        }
        out
    }

    /// The order to deliver the diff in: upserts in make-before-break type order, then removals in
    /// reverse. Only steps with something to do are listed.
    pub fn steps(&self) -> Vec<Step> {
        let mut steps: Vec<Step> = ResourceType::ALL
            .into_iter()
            .filter(|ty| self.of_type(*ty).is_some_and(|d| !d.upserts.is_empty()))
            .map(Step::Upsert)
            .collect();
        steps.extend(
            ResourceType::ALL
                .into_iter()
                .rev()
                .filter(|ty| self.of_type(*ty).is_some_and(|d| !d.removals.is_empty()))
                .map(Step::Remove),
        );
        steps
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(items: &[(ResourceType, &str, u8)]) -> Snapshot {
        let mut s = Snapshot::default();
        for (ty, name, v) in items {
            s.insert(*ty, (*name).to_string(), Resource::new(vec![*v]));
        }
        s
    }

    #[test]
    fn diff_lists_added_changed_removed_in_make_before_break_order() {
        use ResourceType::{Cluster, Listener, Route};
        let a = snap(&[
            (Cluster, "old", 1),
            (Cluster, "same", 2),
            (Route, "r", 1),
            (Listener, "l", 1),
        ]);
        let b = snap(&[
            (Cluster, "new", 1),
            (Cluster, "same", 2),
            (Route, "r", 2),
            (Listener, "l", 1),
        ]);
        let d = diff(&a, &b);
        let c = d.of_type(Cluster).unwrap();
        assert_eq!(c.upserts.keys().map(|k| &**k).collect::<Vec<_>>(), vec!["new"]);
        assert_eq!(c.removals.iter().map(|k| &**k).collect::<Vec<_>>(), vec!["old"]);
        assert!(d.of_type(Listener).is_none());
        assert_eq!(
            d.steps(),
            vec![Step::Upsert(Cluster), Step::Upsert(Route), Step::Remove(Cluster)]
        );
        assert_eq!(d.apply(&a), b);
        assert!(diff(&b, &b).is_empty());
    }
}
