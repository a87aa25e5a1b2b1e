//! Filing: gathering the top-level resources that rendered nodes emit into one map per type.
//!
//! Owns two ways to build those maps, which give the same result:
//! - *in full*: every node's resources in rendering order; a name emitted twice keeps the first
//!   and the caller reports the second;
//! - *as a patch* of the last translation's maps, which are persistent (see
//!   [`crate::snapshot::ResourceMap`]): the resources of routes and clusters that did not change
//!   stay where they are, those of nodes that left are taken out, and everything else is put in.
//!   A name met twice while patching means the full filing would report a duplicate: the patch
//!   gives up ([`Filer::finish`] says so) and the caller files in full.
//!
//! Must not render or report anything itself: it only keeps maps.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::snapshot::{Name, Resource, ResourceMap, ResourceType};

/// What the last filing left for the next one to patch: its maps (filed without a duplicate),
/// and the resources of nodes that are filed anew in every translation (neither routes nor
/// clusters: listeners, route tables, secrets, endpoints).
#[derive(Debug, Default)]
pub(super) struct Base {
    maps: BTreeMap<ResourceType, ResourceMap>,
    transient: Vec<(ResourceType, Name)>,
}

/// Top-level resources of one type as they are filed in full: a run in increasing name order
/// (the usual case, as IR nodes come sorted by name: each is checked against the last), and the
/// others.
#[derive(Default)]
pub(super) struct Filing {
    sorted: Vec<(Name, Resource, Arc<str>)>,
    others: BTreeMap<Name, (Resource, Arc<str>)>,
}

impl Filing {
    /// The rule that filed `name`, if it is filed.
    fn rule_of(&self, name: &str) -> Option<&Arc<str>> {
        let in_run = match self.sorted.last() {
            Some((last, _, _)) if name <= &**last => self
                .sorted
                .binary_search_by(|(n, _, _)| (**n).cmp(name))
                .ok()
                .map(|i| &self.sorted[i].2),
            _ => None,
        };
        in_run.or_else(|| self.others.get(name).map(|(_, rule)| rule))
    }

    /// Files a resource whose name is not filed yet.
    fn insert(&mut self, name: Name, resource: Resource, rule: Arc<str>) {
        match self.sorted.last() {
            Some((last, _, _)) if name <= *last => {
                self.others.insert(name, (resource, rule));
            }
            _ => self.sorted.push((name, resource, rule)),
        }
    }

    fn finish(self) -> ResourceMap {
        let mut map: ResourceMap = self.sorted.into_iter().map(|(n, r, _)| (n, r)).collect();
        map.extend(self.others.into_iter().map(|(n, (r, _))| (n, r)));
        map
    }
}

/// The filing of one translation.
pub(super) enum Filer {
    Full {
        by_type: BTreeMap<ResourceType, Filing>,
        transient: Vec<(ResourceType, Name)>,
        duplicates: bool,
    },
    Patch {
        maps: BTreeMap<ResourceType, ResourceMap>,
        transient: Vec<(ResourceType, Name)>,
        collided: bool,
    },
}

impl Filer {
    /// A filing in full.
    pub(super) fn full() -> Self {
        Filer::Full {
            by_type: BTreeMap::new(),
            transient: Vec::new(),
            duplicates: false,
        }
    }

    /// A patch of `base`: its transient resources are taken out first.
    pub(super) fn patch(base: Base) -> Self {
        let Base { mut maps, transient } = base;
        for (ty, name) in &transient {
            if let Some(m) = maps.get_mut(ty) {
                m.remove(name);
            }
        }
        Filer::Patch {
            maps,
            transient: Vec::new(),
            collided: false,
        }
    }

    /// Whether this filing patches the last one (unchanged routes and clusters are not filed
    /// again, and those that left are [removed](Filer::remove)).
    pub(super) fn is_patch(&self) -> bool {
        matches!(self, Filer::Patch { .. })
    }

    /// Files a resource. `shared` says it comes from a route or a cluster. Filing in full, a
    /// name already filed is refused with the rule that filed it (the caller reports it).
    pub(super) fn add(
        &mut self,
        ty: ResourceType,
        name: &Name,
        resource: Resource,
        rule: &Arc<str>,
        shared: bool,
    ) -> Result<(), Arc<str>> {
        match self {
            Filer::Full {
                by_type,
                transient,
                duplicates,
            } => {
                let filing = by_type.entry(ty).or_default();
                if let Some(existing) = filing.rule_of(name) {
                    *duplicates = true;
                    return Err(Arc::clone(existing));
                }
                filing.insert(Arc::clone(name), resource, Arc::clone(rule));
                if !shared {
                    transient.push((ty, Arc::clone(name)));
                }
            }
            Filer::Patch {
                maps,
                transient,
                collided,
            } => {
                if maps.entry(ty).or_default().insert(Arc::clone(name), resource).is_some() {
                    *collided = true;
                }
                if !shared {
                    transient.push((ty, Arc::clone(name)));
                }
            }
        }
        Ok(())
    }

    /// Takes out a resource of a route or cluster that left (patching only).
    pub(super) fn remove(&mut self, ty: ResourceType, name: &str) {
        if let Filer::Patch { maps, .. } = self {
            if let Some(m) = maps.get_mut(&ty) {
                m.remove(name);
            }
        }
    }

    /// The maps (empty ones left out), and the base for the next filing (none when a name was
    /// filed twice: the next filing is then in full too). `None` when a patch met a name twice:
    /// file in full instead.
    #[allow(clippy::type_complexity)]
    pub(super) fn finish(self) -> Option<(BTreeMap<ResourceType, ResourceMap>, Option<Base>)> {
        let (maps, transient, clean) = match self {
            Filer::Full {
                by_type,
                transient,
                duplicates,
            } => (
                by_type.into_iter().map(|(ty, f)| (ty, f.finish())).collect(),
                transient,
                !duplicates,
            ),
            Filer::Patch {
                maps,
                transient,
                collided,
            } => {
                if collided {
                    return None;
                }
                (maps, transient, true)
            }
        };
        let base = clean.then(|| Base {
            maps: maps.clone(),
            transient,
        });
        Some((maps.into_iter().filter(|(_, m)| !m.is_empty()).collect(), base))
    }
}
