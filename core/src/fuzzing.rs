//! Fuzz entry points, shared by the cargo-fuzz targets in `fuzz/` and by the corpus replay test
//! (`tests/fuzz_corpus.rs`), so stable-toolchain CI runs every saved input. Each function must
//! never panic, whatever the bytes.

use std::sync::OnceLock;

fn core_registry() -> &'static std::sync::Arc<crate::rules::Registry> {
    static REGISTRY: OnceLock<std::sync::Arc<crate::rules::Registry>> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        std::sync::Arc::new(crate::rules::Registry::core().expect("the built-in rule pack loads; this is a bug"))
    })
}

/// The `service` grammar.
pub fn lang_service(data: &[u8]) {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Err(e) = crate::lang::service::parse(s) {
            assert!(e.offset <= s.chars().count(), "error offset past the end of the input");
            let _ = e.pointer();
        }
    }
}

/// The header value format grammar, as header values and as response body formats.
pub fn lang_header_format(data: &[u8]) {
    if let Ok(s) = std::str::from_utf8(data) {
        for checked in [
            crate::lang::header_format::check(s),
            crate::lang::header_format::check_body(s),
            crate::lang::header_format::check_access_log(s),
        ] {
            if let Err(e) = checked {
                assert!(e.offset <= s.chars().count(), "error offset past the end of the input");
            }
        }
    }
}

/// The `when` grammar, parsed and evaluated against a small context.
pub fn lang_when(data: &[u8]) {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(c) = crate::lang::when::parse(s) {
            let ctx = serde_json::json!({"a": 1, "b": "x", "c": {"d": true}, "e": null, "f": []});
            let _ = c.eval(&ctx);
            let _ = c.paths();
        }
    }
}

/// Rule-pack edit paths: parsed, checked against a message's schema, and applied with every
/// operation to a small listener-like value (nothing panics, errors point inside the input).
pub fn lang_patch_path(data: &[u8]) {
    use crate::rules::edit::{apply, check_path, Edit, EditValue, Op};
    let Ok(s) = std::str::from_utf8(data) else { return };
    match crate::lang::patch_path::parse(s) {
        Err(e) => assert!(e.offset <= s.chars().count(), "error offset past the end of the input"),
        Ok(path) => {
            if let Some(listener) = crate::envoy::message("envoy.config.listener.v3.Listener") {
                let _ = check_path(&listener, &path, None);
            }
            let base = serde_json::json!({"name": "l", "filter_chains": [
                {"name": "a", "filters": [{"name": "hcm", "typed_config": {"http_filters": [{"name": "router"}]}}]},
                {"name": "b", "filters": []}], "m": {"k": {"x": 1}}, "s": "text"});
            for op in [Op::Add, Op::Replace, Op::Remove, Op::InsertBefore, Op::InsertAfter] {
                let mut v = base.clone();
                let edit = Edit {
                    op,
                    path: path.clone(),
                    value: EditValue::None,
                };
                let _ = apply(&mut v, &edit, Some(&serde_json::json!([{"name": "new"}])));
                let _ = apply(&mut v, &edit, None);
            }
        }
    }
}

/// The YAML reader and the YAML writer: what is read and written back reads the same.
pub fn yaml(data: &[u8]) {
    if let Ok(s) = std::str::from_utf8(data) {
        let (docs, _) = crate::source::yaml::parse_stream(s);
        for d in docs {
            let json = d.root.to_json();
            let text = crate::output::to_yaml(&json);
            let back = crate::source::yaml::parse_one(&text);
            assert!(
                matches!(back, Ok(Some(_)) | Ok(None)),
                "writer output does not read back: {text:?}"
            );
        }
    }
}

/// The whole translation on arbitrary input (as one YAML file).
pub fn translate(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let loaded = crate::source::parse_text("fuzz.yaml", &text);
    // What the Kubernetes source asks of the same objects.
    let objects: Vec<&crate::source::RawObject> = loaded.objects.iter().collect();
    let _ = crate::resource::references(&objects, &crate::Options::default().parse);
    let t = crate::translate(&loaded, core_registry(), &crate::Options::default());
    for ty in crate::snapshot::ResourceType::ALL {
        let _ = crate::envoy::resources_json(&t.snapshot, ty);
    }
    let _ = crate::envoy::bootstrap::static_resources(&t.snapshot, "127.0.0.1", 9901);
    for d in &t.diagnostics {
        let _ = d.to_string();
    }
    // The fast path gives what the reference gives: a fresh translator (whose shortcuts, held by
    // the shared registry, were learnt from every input of the run), then the input without its
    // last object (an edit), then the input again (every cache hit).
    let mut translator = crate::Translator::new(std::sync::Arc::clone(core_registry()), crate::Options::default());
    let mut fewer = loaded.clone();
    fewer.objects.pop();
    let reference_fewer = crate::translate(&fewer, core_registry(), &crate::Options::default());
    for (input, reference) in [(&loaded, &t), (&fewer, &reference_fewer), (&loaded, &t)] {
        let fast = translator.translate(input);
        assert!(
            fast.snapshot == reference.snapshot && fast.diagnostics == reference.diagnostics,
            "the fast path differs from the reference translation"
        );
    }
}

/// A rule template's context paths, checked against every kind's context schema as a pack's
/// load does (partials followed, one of them including itself): nothing panics, the walk ends.
pub fn template_paths(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let mut hbs = handlebars::Handlebars::new();
    let partials = [
        ("names", "{{json server_names}}{{#each x}}{{> names}}{{/each}}"),
        ("again", "{{> again}}{{> again}}{{json ../name}}"),
    ];
    for (name, text) in partials {
        if hbs.register_partial(name, text).is_err() {
            return;
        }
    }
    if hbs.register_template_string("t", s).is_err() {
        return;
    }
    let Some(template) = hbs.get_template("t") else { return };
    for kind in crate::ir::NodeKind::ALL {
        let _ = crate::rules::template_paths::check(kind, "t.yaml.hbs", template, &hbs);
    }
}

/// The wire reader (`envoy::json`): the first byte picks a message type, the rest is read as
/// one; whatever it reads must be what prost-reflect reads.
pub fn wire_json(data: &[u8]) {
    const TYPES: [&str; 8] = [
        "envoy.config.cluster.v3.Cluster",
        "envoy.config.listener.v3.Listener",
        "envoy.config.route.v3.RouteConfiguration",
        "envoy.config.endpoint.v3.ClusterLoadAssignment",
        "envoy.extensions.transport_sockets.tls.v3.Secret",
        "google.protobuf.Any",
        "google.protobuf.Struct",
        "envoy.config.route.v3.Route",
    ];
    let Some((pick, bytes)) = data.split_first() else {
        return;
    };
    let desc = crate::envoy::message(TYPES[usize::from(*pick) % TYPES.len()])
        .expect("the fuzzed types are in the descriptor pool; this is a bug");
    for names in [crate::envoy::json::Names::Json, crate::envoy::json::Names::Proto] {
        if let Ok(v) = crate::envoy::json::to_json(&desc, bytes, names) {
            assert_eq!(v, crate::envoy::reflect_to_json(desc.clone(), bytes, names));
        }
    }
}
