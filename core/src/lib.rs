//! attache-core: the pure translation pipeline of attache, from raw YAML objects to versioned
//! Envoy resources. No async runtime, no network, no Kubernetes client: the server crate
//! (`attache`) adds those around it.
//!
//! The pipeline, in reading order (see ARCHITECTURE.md):
//! `source` → `resource` (with `lang`) → `ir` → `rules` → `envoy` → `snapshot`.
//! Everything from `resource` to `snapshot` is a pure function of its input: [`translate`].

// Diagnostics travel alongside every stage.
pub mod diagnostic;
// What every stage's cache shares: maps by content hash or address, incremental sorting.
pub mod keyed;
// 1. Raw objects: YAML documents with positions, from text, files or a directory.
pub mod source;
// 2b. Small languages inside fields (service references, rule conditions), one per grammar/.
pub mod lang;
// 2. Typed Ambassador resources.
pub mod resource;
// 3. The semantic model and lowering into it.
pub mod ir;
// 4. Rule packs: IR nodes → Envoy messages through handlebars templates.
pub mod rules;
// 5. Envoy protobuf: decoding rendered output, bootstraps.
pub mod envoy;
// 6. Versioned snapshots.
pub mod snapshot;
// What `serve --write-status` writes back.
pub mod status;
// Last known good: previous versions of objects that turned invalid.
pub mod lastgood;
// YAML output for humans and golden files.
pub mod output;
// The worker threads the parallel stages share.
mod workers;
// Fuzz entry points (shared by `fuzz/` and the corpus replay tests).
pub mod fuzzing;

use diagnostic::Diagnostic;

/// Options of a translation.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Which objects are read.
    pub parse: resource::ParseOptions,
    /// How resources are lowered.
    pub lower: ir::lower::LowerOptions,
}

/// The result of translating a set of objects.
#[derive(Clone, Debug, Default)]
pub struct Translation {
    /// The semantic model.
    pub ir: ir::Ir,
    /// The Envoy resources, versioned.
    pub snapshot: snapshot::Snapshot,
    /// Everything worth telling the user, sorted by file and line.
    pub diagnostics: Vec<Diagnostic>,
    /// Objects served from their previous version ([`lastgood::translate`]; empty otherwise).
    pub kept: Vec<lastgood::Kept>,
}

/// Translates raw objects into Envoy resources: the reference pipeline, plain stage after plain
/// stage (read, lower, render through the rules, file into a snapshot), with nothing remembered
/// and no shortcut. The golden tests and the fuzzers call it; [`Translator`] is the fast path
/// (`serve`, `attache translate` and `validate` run it), and tests check that it gives exactly
/// what this gives.
/// Deterministic: the same objects in any order give the same bytes.
pub fn translate(loaded: &source::Loaded, registry: &rules::Registry, options: &Options) -> Translation {
    let mut diagnostics = loaded.diagnostics.clone();
    let (resources, d) = resource::parse(&loaded.objects, &options.parse);
    diagnostics.extend(d);
    let (ir, d) = ir::lower(&resources, &options.lower);
    diagnostics.extend(d);
    let (rendered, d) = rules::render(&ir, registry);
    diagnostics.extend(d);
    finish(ir, rendered.into_snapshot(), diagnostics)
}

/// A translation from its parts, diagnostics sorted and without repeats.
fn finish(ir: ir::Ir, snapshot: snapshot::Snapshot, mut diagnostics: Vec<Diagnostic>) -> Translation {
    diagnostics.sort();
    diagnostics.dedup();
    Translation {
        ir,
        snapshot,
        diagnostics,
        kept: Vec::new(),
    }
}

/// The fast path: a translator that remembers its previous output, so that a changed input is
/// translated incrementally (only objects that changed are read again, only Mappings that
/// changed are lowered again on each Host, only IR nodes whose content changed are rendered),
/// with shortcuts that make a first translation of thousands of similar nodes cheap (see
/// ARCHITECTURE.md). Its output is byte-identical to [`translate`] on the same input: property,
/// golden and fuzz tests check it.
#[derive(Debug)]
pub struct Translator {
    registry: std::sync::Arc<rules::Registry>,
    options: Options,
    render_cache: rules::RenderCache,
    parse_cache: resource::ParseCache,
    lower_cache: ir::lower::LowerCache,
}

impl Translator {
    /// A translator with empty caches.
    pub fn new(registry: std::sync::Arc<rules::Registry>, options: Options) -> Self {
        Translator {
            registry,
            options,
            render_cache: rules::RenderCache::default(),
            parse_cache: resource::ParseCache::default(),
            lower_cache: ir::lower::LowerCache::default(),
        }
    }

    /// Translates, reusing what did not change since the last call.
    pub fn translate(&mut self, loaded: &source::Loaded) -> Translation {
        let registry = std::sync::Arc::clone(&self.registry);
        translate_with(
            loaded,
            &registry,
            &self.options,
            &mut self.render_cache,
            &mut self.parse_cache,
            &mut self.lower_cache,
        )
    }

    /// One translation, with nothing kept for a next one (the command line's path): each
    /// stage's input is freed as soon as the next stage has what it needs, so the peak memory is
    /// the largest stage's rather than all of them at once (at 100,000 Mappings the YAML trees
    /// and typed resources are a third of it). The same output as [`Translator::translate`] on
    /// a new translator.
    pub fn translate_once(self, loaded: source::Loaded) -> Translation {
        let Translator {
            registry,
            options,
            mut lower_cache,
            ..
        } = self;
        let source::Loaded {
            objects,
            mut diagnostics,
            ..
        } = loaded;
        let (resources, d) = resource::parse_cached(&objects, &options.parse, None);
        drop(objects);
        diagnostics.extend(d);
        let (ir, d) = ir::lower::lower_cached(&resources, &options.lower, &mut lower_cache);
        drop((resources, lower_cache));
        diagnostics.extend(d);
        let (rendered, d) = rules::render_cached(&ir, &registry, None);
        diagnostics.extend(d);
        finish(ir, rendered.into_snapshot(), diagnostics)
    }

    /// (IR nodes reused, IR nodes rendered) in the last translation.
    pub fn last_render_stats(&self) -> (usize, usize) {
        self.render_cache.last_stats()
    }

    /// (Mapping lowerings reused, Mapping lowerings computed) in the last translation: one per
    /// Mapping and Host.
    pub fn last_lower_stats(&self) -> (usize, usize) {
        self.lower_cache.last_stats()
    }

    /// Whether the last translation patched the resource set of the one before (a few Mapping
    /// objects changed) rather than sorting and checking every object again.
    pub fn last_resources_patched(&self) -> bool {
        self.parse_cache.last_patched()
    }

    /// Whether the last translation patched the IR of the one before (a few plain Mappings
    /// changed) rather than lowering every Mapping again.
    pub fn last_lower_patched(&self) -> bool {
        self.lower_cache.last_patched()
    }

    /// How many route lists (one per Host and security model) the last translation edited from
    /// the one before's (a patch that kept the Hosts' grouping simple) instead of emitting them.
    pub fn last_routes_edited(&self) -> usize {
        self.lower_cache.last_edited()
    }

    /// Whether the last translation filed its top-level resources as a patch of the one
    /// before's (the resources of unchanged routes and clusters were not filed again).
    pub fn last_render_patched(&self) -> bool {
        self.render_cache.last_patched()
    }
}

/// The fast path's stages, each with its cache.
fn translate_with(
    loaded: &source::Loaded,
    registry: &rules::Registry,
    options: &Options,
    render_cache: &mut rules::RenderCache,
    parse_cache: &mut resource::ParseCache,
    lower_cache: &mut ir::lower::LowerCache,
) -> Translation {
    let mut diagnostics = loaded.diagnostics.clone();
    let (resources, d) = resource::parse_cached(&loaded.objects, &options.parse, Some(parse_cache));
    diagnostics.extend(d);
    let (ir, d) = ir::lower::lower_cached(&resources, &options.lower, lower_cache);
    diagnostics.extend(d);
    let (rendered, d) = rules::render_cached(&ir, registry, Some(render_cache));
    diagnostics.extend(d);
    finish(ir, rendered.into_snapshot(), diagnostics)
}
