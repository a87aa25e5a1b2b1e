//! Last known good, as a property: over any sequence of edits (objects added, changed, broken,
//! fixed, deleted), a translation never serves a version of an object that was not valid, always
//! serves a valid object as it is, serves a broken object as its last valid version since it
//! last appeared, and drops a deleted object at once. The fast translator gives the reference's
//! bytes, and a replica that starts late and reads only the stored versions (what the status
//! writer keeps in `status.lastValid`) serves exactly the same.

use attache::lastgood::{self, LastGood};
use attache::source::{parse_text, Loaded, RawObject};
use attache::{rules, Options, Translation, Translator};
use proptest::prelude::*;

/// One object in one step: absent, or a version that is valid or broken in one of two ways.
#[derive(Clone, Copy, Debug)]
enum State {
    Absent,
    Valid(u8),
    /// A field of the wrong type (caught reading the object).
    BadType(u8),
    /// A service that cannot be parsed (caught reading its grammar).
    BadService(u8),
}

fn state() -> impl Strategy<Value = State> {
    prop_oneof![
        2 => Just(State::Absent),
        4 => (0u8..4).prop_map(State::Valid),
        2 => (0u8..4).prop_map(State::BadType),
        1 => (0u8..4).prop_map(State::BadService),
    ]
}

const OBJECTS: usize = 3;

fn document(i: usize, s: State) -> Option<String> {
    let (v, timeout, service) = match s {
        State::Absent => return None,
        State::Valid(v) => (v, "3000", "svc:80"),
        State::BadType(v) => (v, "abc", "svc:80"),
        State::BadService(v) => (v, "3000", "svc:port"),
    };
    Some(format!(
        "apiVersion: getambassador.io/v3alpha1\nkind: Mapping\nmetadata:\n  name: m{i}\nspec:\n  hostname: \"*\"\n  prefix: /m{i}-v{v}/\n  service: {service}\n  timeout_ms: {timeout}\n"
    ))
}

fn load(step: &[State; OBJECTS]) -> Loaded {
    let text: Vec<String> = (0..OBJECTS).filter_map(|i| document(i, step[i])).collect();
    parse_text("mappings.yaml", &text.join("---\n"))
}

/// The route prefixes served.
fn prefixes(t: &Translation) -> Vec<String> {
    let mut out: Vec<String> =
        t.ir.route_configs
            .iter()
            .flat_map(|rc| &rc.virtual_hosts)
            .flat_map(|vh| &vh.routes)
            .map(|r| r.prefix.clone())
            .filter(|p| p.starts_with("/m"))
            .collect();
    out.sort();
    out.dedup();
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn only_versions_that_were_valid_are_served_and_deleting_removes(
        steps in prop::collection::vec(prop::array::uniform3(state()), 1..7)
    ) {
        let registry = std::sync::Arc::new(rules::Registry::core().unwrap());
        let options = Options::default();
        let mut reference_memory = LastGood::default();
        let mut memory = LastGood::default();
        let mut translator = Translator::new(std::sync::Arc::clone(&registry), options.clone());
        // The model: each object's last valid version since it last appeared.
        let mut last_valid: [Option<u8>; OBJECTS] = [None; OBJECTS];
        for step in &steps {
            let loaded = load(step);
            let reference = lastgood::translate(&loaded, &reference_memory, |l| attache::translate(l, &registry, &options));
            reference_memory.remember(&loaded, &reference);
            let fast = lastgood::translate(&loaded, &memory, |l| translator.translate(l));
            memory.remember(&loaded, &fast);
            prop_assert_eq!(fast.snapshot.version(), reference.snapshot.version(), "the fast path gives the reference's bytes");

            let mut expected = Vec::new();
            for (i, s) in step.iter().enumerate() {
                match *s {
                    State::Absent => last_valid[i] = None,
                    State::Valid(v) => {
                        last_valid[i] = Some(v);
                        expected.push(format!("/m{i}-v{v}/"));
                    }
                    State::BadType(_) | State::BadService(_) => {
                        if let Some(v) = last_valid[i] {
                            expected.push(format!("/m{i}-v{v}/"));
                        }
                    }
                }
            }
            expected.sort();
            prop_assert_eq!(prefixes(&reference), expected, "step {:?}", step);
            // Every broken object served from an older version says so.
            let kept: Vec<String> = reference.kept.iter().map(|k| k.object.name.clone()).collect();
            let warned: Vec<String> = reference
                .diagnostics
                .iter()
                .filter(|d| d.code == lastgood::SERVING_PREVIOUS)
                .filter_map(|d| Some(d.object.as_ref()?.name.clone()))
                .collect();
            prop_assert_eq!(&kept, &warned);

            // A replica that starts now, with only what the status writer stores.
            let stored: Vec<RawObject> = reference
                .kept
                .iter()
                .map(|k| {
                    let current = loaded
                        .objects
                        .iter()
                        .find(|o| lastgood::identity(o).as_ref() == Some(&k.object))
                        .unwrap();
                    let value = attache::status::from_last_valid(
                        &current.root.to_json(),
                        &attache::status::last_valid(&k.served),
                    )
                    .unwrap();
                    RawObject::new(
                        attache::diagnostic::Origin::new("kubernetes status.lastValid", 0, 0),
                        attache::source::yaml::Node::from_json(&value, 0, 0),
                    )
                })
                .collect();
            let late_loaded = Loaded { previous: stored, ..loaded.clone() };
            let late = lastgood::translate(&late_loaded, &LastGood::default(), |l| attache::translate(l, &registry, &options));
            prop_assert_eq!(late.snapshot.version(), reference.snapshot.version(), "a late replica serves the same bytes");
        }
    }
}

/// A source's stored version wins over what a process remembers: replicas that remember
/// different versions (one saw an intermediate edit the other missed) converge on the stored one.
#[test]
fn the_sources_version_wins_over_memory() {
    let registry = rules::Registry::core().unwrap();
    let options = Options::default();
    let run = |memory: &mut LastGood, loaded: &Loaded| {
        let t = lastgood::translate(loaded, memory, |l| attache::translate(l, &registry, &options));
        memory.remember(loaded, &t);
        t
    };
    let step = |states: [State; OBJECTS]| load(&states);
    use State::*;
    // Replica A saw v1 then v2; replica B saw only v1 (a coalesced burst).
    let mut a = LastGood::default();
    let mut b = LastGood::default();
    run(&mut a, &step([Valid(1), Absent, Absent]));
    run(&mut a, &step([Valid(2), Absent, Absent]));
    run(&mut b, &step([Valid(1), Absent, Absent]));
    let broken = step([BadType(3), Absent, Absent]);
    let ta = run(&mut a, &broken);
    let tb = run(&mut b, &broken);
    assert_eq!(prefixes(&ta), ["/m0-v2/"]);
    assert_eq!(prefixes(&tb), ["/m0-v1/"]);
    // The leader (A) stores what it serves; both read it back and agree.
    let stored = parse_text("kubernetes status.lastValid", &document(0, Valid(2)).unwrap()).objects;
    let with_stored = Loaded {
        previous: stored,
        ..broken.clone()
    };
    let ta = run(&mut a, &with_stored);
    let tb = run(&mut b, &with_stored);
    assert_eq!(prefixes(&tb), ["/m0-v2/"]);
    assert_eq!(ta.snapshot.version(), tb.snapshot.version());
}
