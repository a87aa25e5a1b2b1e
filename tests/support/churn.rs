//! Random changes to any field of any kind, with values from the repository's own example
//! objects (the golden inputs and the conformance fixtures): the generator of the all-fields
//! property test (tests/determinism.rs) and of the churn soak (benches/soak.rs).

use proptest::prelude::*;

/// Every field of every kind, with values seen in the repository's own example objects (the
/// golden inputs and the conformance fixtures): the catalog the all-fields property test mutates
/// from. By kind, then field path under `spec` (one and two levels deep), the distinct values.
pub struct Catalog {
    pub fields: std::collections::BTreeMap<String, std::collections::BTreeMap<String, Vec<serde_json::Value>>>,
    /// Whole objects of the kinds attache reads (and Secrets, Services), to add.
    pub objects: Vec<serde_json::Value>,
}

pub const KINDS: [&str; 7] = [
    "Mapping",
    "Host",
    "Listener",
    "TLSContext",
    "AuthService",
    "TCPMapping",
    "Module",
];

pub fn catalog() -> &'static Catalog {
    static CATALOG: std::sync::OnceLock<Catalog> = std::sync::OnceLock::new();
    CATALOG.get_or_init(|| {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
        let mut files = Vec::new();
        let mut stack = vec![root.join("golden"), root.join("conformance")];
        while let Some(dir) = stack.pop() {
            for e in std::fs::read_dir(&dir).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "yaml") && !p.to_string_lossy().contains("/rules/") {
                    files.push(p);
                }
            }
        }
        files.sort();
        let mut fields: std::collections::BTreeMap<String, std::collections::BTreeMap<String, Vec<serde_json::Value>>> =
            Default::default();
        let mut objects = Vec::new();
        for f in files {
            let loaded = attache::source::parse_text("x.yaml", &std::fs::read_to_string(&f).unwrap());
            for o in &loaded.objects {
                let v = o.root.to_json();
                let kind = v["kind"].as_str().unwrap_or_default().to_string();
                let read = KINDS.contains(&kind.as_str())
                    && v["apiVersion"]
                        .as_str()
                        .is_some_and(|a| a.starts_with("getambassador.io/"));
                if read || matches!(kind.as_str(), "Secret" | "Service") {
                    objects.push(v.clone());
                }
                let (true, Some(spec)) = (read, v["spec"].as_object()) else {
                    continue;
                };
                let by_path = fields.entry(kind).or_default();
                let mut note = |path: String, value: &serde_json::Value| {
                    let values = by_path.entry(path).or_default();
                    if !values.contains(value) {
                        values.push(value.clone());
                    }
                };
                for (k, value) in spec {
                    note(k.clone(), value);
                    if let Some(inner) = value.as_object() {
                        for (k2, v2) in inner {
                            note(format!("{k}.{k2}"), v2);
                        }
                    }
                }
            }
        }
        Catalog { fields, objects }
    })
}

/// Sets (or with `None` removes) the field at `path` (dot-separated, under `spec`).
pub fn set_field(object: &mut serde_json::Value, path: &str, value: Option<serde_json::Value>) {
    let Some(spec) = object.get_mut("spec").and_then(serde_json::Value::as_object_mut) else {
        return;
    };
    match path.split_once('.') {
        None => match value {
            Some(v) => {
                spec.insert(path.to_string(), v);
            }
            None => {
                spec.remove(path);
            }
        },
        Some((outer, inner)) => {
            let entry = spec.entry(outer.to_string()).or_insert_with(|| serde_json::json!({}));
            if let Some(map) = entry.as_object_mut() {
                match value {
                    Some(v) => {
                        map.insert(inner.to_string(), v);
                    }
                    None => {
                        map.remove(inner);
                    }
                }
            }
        }
    }
}

/// One change to a configuration.
#[derive(Clone, Debug)]
pub enum Change {
    /// Set a field of an object to a value of the catalog (`None`: remove it).
    Set(prop::sample::Index, prop::sample::Index, Option<prop::sample::Index>),
    /// The same, on a Mapping: steps that change only Mappings are the ones the fast path
    /// patches, so they come often.
    SetMapping(prop::sample::Index, prop::sample::Index, Option<prop::sample::Index>),
    /// Add an object of the catalog.
    Add(prop::sample::Index),
    /// Remove an object.
    Remove(prop::sample::Index),
}

pub fn change() -> impl Strategy<Value = Change> {
    let set = || {
        (
            any::<prop::sample::Index>(),
            any::<prop::sample::Index>(),
            prop::option::weighted(0.85, any::<prop::sample::Index>()),
        )
    };
    prop_oneof![
        3 => set().prop_map(|(o, f, v)| Change::Set(o, f, v)),
        6 => set().prop_map(|(o, f, v)| Change::SetMapping(o, f, v)),
        2 => any::<prop::sample::Index>().prop_map(Change::Add),
        1 => any::<prop::sample::Index>().prop_map(Change::Remove),
    ]
}

pub fn apply(objects: &mut Vec<serde_json::Value>, c: &Change) {
    let cat = catalog();
    match c {
        Change::Add(i) => objects.push(i.get(&cat.objects).clone()),
        Change::Remove(i) if !objects.is_empty() => {
            let at = i.index(objects.len());
            objects.remove(at);
        }
        Change::Remove(_) => {}
        Change::Set(o, f, v) | Change::SetMapping(o, f, v) => {
            let only_mappings = matches!(c, Change::SetMapping(..));
            let candidates: Vec<usize> = (0..objects.len())
                .filter(|&i| !only_mappings || objects[i]["kind"] == "Mapping")
                .collect();
            if candidates.is_empty() {
                return;
            }
            let at = candidates[o.index(candidates.len())];
            let kind = objects[at]["kind"].as_str().unwrap_or_default().to_string();
            let Some(paths) = cat.fields.get(&kind) else { return };
            let (path, values) = *f.get(&paths.iter().collect::<Vec<_>>());
            set_field(&mut objects[at], path, v.as_ref().map(|v| v.get(values).clone()));
        }
    }
}
