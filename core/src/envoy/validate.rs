//! The protoc-gen-validate rules of Envoy's API, checked before a resource reaches Envoy.
//!
//! Envoy's protos carry `(validate.rules)` options (required fields, string lengths, number and
//! duration bounds, defined enum values, list sizes, required oneofs) that Envoy enforces by
//! rejecting the whole update (a NACK). The descriptor pool has them, so we check them here and
//! turn a violation into a diagnostic on the object that caused it. `Any` fields are checked
//! through the message they contain. Covered: message `required`, oneof `required`, numbers
//! (`const`, `lt`, `lte`, `gt`, `gte`, `in`, `not_in`), strings and bytes (lengths, `prefix`,
//! `suffix`, `contains`, `in`, `not_in`), enums (`defined_only`, `in`, `not_in`), durations
//! (`required`, bounds), repeated (`min_items`, `max_items`, `items`), maps (`min_pairs`,
//! `max_pairs`), and rules on wrapper types. Not covered: regex and well-known string formats.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use prost_reflect::{
    DynamicMessage, ExtensionDescriptor, FieldDescriptor, Kind, MessageDescriptor, ReflectMessage as _, Value,
};

use super::pool;

/// One broken rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Field path (`filter_chains[0].filters[0].typed_config.stat_prefix`).
    pub path: String,
    /// What the rule demands.
    pub message: String,
}

fn ext(name: &str) -> Option<ExtensionDescriptor> {
    pool().get_extension_by_name(name)
}

// Derived from descriptors once per thread: a thread-local map needs no lock, and its descriptor
// reference counts are touched by one thread only.
thread_local! {
    static FIELD_RULES: Option<ExtensionDescriptor> = ext("validate.rules");
    static ONEOF_REQUIRED: Option<ExtensionDescriptor> = ext("validate.required");
    static PLANS: RefCell<HashMap<String, Arc<Plan>>> = RefCell::default();
}

fn field_rules_ext() -> Option<ExtensionDescriptor> {
    FIELD_RULES.with(Clone::clone)
}

fn oneof_required_ext() -> Option<ExtensionDescriptor> {
    ONEOF_REQUIRED.with(Clone::clone)
}

/// The list-size rules (`min_items`, `max_items`) of one repeated field, for a list of `n` items
/// that is not in the message (the renderer appends already checked children as bytes).
pub fn check_list_len(desc: &MessageDescriptor, field: &FieldDescriptor, n: usize) -> Vec<Violation> {
    let plan = plan(desc);
    let mut out = Vec::new();
    if let Some(Some((min, max, _))) = plan
        .fields
        .iter()
        .find(|f| f.field == *field)
        .map(|f| f.rules.as_ref().and_then(|r| r.items.as_ref()))
    {
        let n = n as f64;
        if min.is_some_and(|m| n < m) {
            out.push(Violation {
                path: field.name().to_string(),
                message: format!("needs at least {} item(s), has {n}", min.unwrap_or(0.0)),
            });
        }
        if max.is_some_and(|m| n > m) {
            out.push(Violation {
                path: field.name().to_string(),
                message: format!("allows at most {} item(s), has {n}", max.unwrap_or(0.0)),
            });
        }
    }
    out
}

/// Checks a message and everything inside it.
pub fn check(msg: &DynamicMessage) -> Vec<Violation> {
    let mut out = Vec::new();
    check_message(msg, "", &mut out, 0);
    if msg.descriptor().full_name() == "envoy.config.listener.v3.Listener" {
        check_filter_chain_matches(msg, &mut out);
    }
    out
}

/// Envoy refuses a listener two of whose filter chains have the same `filter_chain_match`
/// (compared as messages, as Envoy does): no protoc-gen-validate rule says so.
fn check_filter_chain_matches(listener: &DynamicMessage, out: &mut Vec<Violation>) {
    use prost::Message as _;
    let Some(Value::List(chains)) = listener.get_field_by_name("filter_chains").map(|v| v.into_owned()) else {
        return;
    };
    let mut seen: HashMap<Vec<u8>, (usize, String)> = HashMap::new();
    for (i, chain) in chains.iter().enumerate() {
        let Value::Message(chain) = chain else { continue };
        let matching = chain
            .get_field_by_name("filter_chain_match")
            .and_then(|m| m.as_message().map(|m| m.encode_to_vec()))
            .unwrap_or_default();
        let name = chain
            .get_field_by_name("name")
            .and_then(|n| n.as_str().map(str::to_string))
            .unwrap_or_default();
        match seen.get(&matching) {
            Some((j, other)) => out.push(Violation {
                path: format!("filter_chains[{i}].filter_chain_match"),
                message: format!(
                    "is the same as filter chain {j}'s (`{other}`): Envoy refuses a listener whose filter chains match the same connections"
                ),
            }),
            None => {
                seen.insert(matching, (i, name));
            }
        }
    }
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

fn rules_of(field: &FieldDescriptor) -> Option<DynamicMessage> {
    let ext = field_rules_ext()?;
    let options = field.options();
    if !options.has_extension(&ext) {
        return None;
    }
    match options.get_extension(&ext).into_owned() {
        Value::Message(m) => Some(m),
        _ => None,
    }
}

/// The sub-message of `rules` named `name` if it is set.
fn sub(rules: &DynamicMessage, name: &str) -> Option<DynamicMessage> {
    if !rules.has_field_by_name(name) {
        return None;
    }
    match rules.get_field_by_name(name)?.into_owned() {
        Value::Message(m) => Some(m),
        _ => None,
    }
}

fn flag(rules: &DynamicMessage, name: &str) -> bool {
    rules.has_field_by_name(name) && rules.get_field_by_name(name).is_some_and(|v| v.as_bool() == Some(true))
}

/// What checking one message type involves, worked out once per type: its required oneofs, and
/// the fields that have rules or may contain messages. Reading field options decodes them, so
/// doing it per message checked would dominate translation time.
struct Plan {
    required_oneofs: Vec<(String, Vec<FieldDescriptor>)>,
    fields: Vec<FieldPlan>,
}

struct FieldPlan {
    field: FieldDescriptor,
    rules: Option<Compiled>,
    in_oneof: bool,
    holds_messages: bool,
}

fn plan(desc: &MessageDescriptor) -> Arc<Plan> {
    if let Some(p) = PLANS.with(|m| m.borrow().get(desc.full_name()).cloned()) {
        return p;
    }
    let mut required_oneofs = Vec::new();
    if let Some(ext) = oneof_required_ext() {
        for oneof in desc.oneofs() {
            let options = oneof.options();
            if options.has_extension(&ext) && options.get_extension(&ext).as_bool() == Some(true) {
                required_oneofs.push((oneof.name().to_string(), oneof.fields().collect()));
            }
        }
    }
    let fields = desc
        .fields()
        .filter_map(|field| {
            let mut rules = rules_of(&field).map(|r| compile(&r));
            if is_duration(&field) && !field.is_list() && !field.is_map() {
                rules.get_or_insert_with(Compiled::default).proto_duration = true;
            }
            let holds_messages = match field.kind() {
                Kind::Message(m) if field.is_map() => m
                    .map_entry_value_field()
                    .kind()
                    .as_message()
                    .is_some_and(has_rules_below),
                Kind::Message(m) => has_rules_below(&m),
                _ => false,
            };
            (rules.is_some() || holds_messages).then(|| FieldPlan {
                in_oneof: field.containing_oneof().is_some(),
                field,
                rules,
                holds_messages,
            })
        })
        .collect();
    let p = Arc::new(Plan {
        required_oneofs,
        fields,
    });
    PLANS.with(|m| m.borrow_mut().insert(desc.full_name().to_string(), Arc::clone(&p)));
    p
}

/// Whether checking a message of this type can find anything: some field below it (through any
/// depth, and always through `Any`) has rules. Types that cannot are not walked at all.
fn has_rules_below(desc: &MessageDescriptor) -> bool {
    static MEMO: OnceLock<std::sync::Mutex<std::collections::HashMap<String, bool>>> = OnceLock::new();
    fn walk(desc: &MessageDescriptor, seen: &mut std::collections::HashSet<String>) -> bool {
        if desc.full_name() == "google.protobuf.Any" {
            return true;
        }
        if !seen.insert(desc.full_name().to_string()) {
            // A cycle: whatever it holds is found where the cycle started.
            return false;
        }
        let oneof_required = oneof_required_ext().is_some_and(|ext| {
            desc.oneofs().any(|o| {
                let options = o.options();
                options.has_extension(&ext) && options.get_extension(&ext).as_bool() == Some(true)
            })
        });
        oneof_required
            || desc.fields().any(|f| {
                rules_of(&f).is_some()
                    || is_duration(&f)
                    || match f.kind() {
                        Kind::Message(m) => walk(&m, seen),
                        _ => false,
                    }
            })
    }
    let memo = MEMO.get_or_init(Default::default);
    if let Some(v) = memo.lock().ok().and_then(|m| m.get(desc.full_name()).copied()) {
        return v;
    }
    let v = walk(desc, &mut std::collections::HashSet::new());
    if let Ok(mut m) = memo.lock() {
        m.insert(desc.full_name().to_string(), v);
    }
    v
}

fn is_duration(field: &FieldDescriptor) -> bool {
    matches!(field.kind(), Kind::Message(m) if m.full_name() == "google.protobuf.Duration")
}

/// Longest duration protobuf allows (10,000 years), as Envoy checks it.
const MAX_DURATION_SECONDS: i64 = 315_576_000_000;

/// What Envoy says of a duration it refuses whatever the field: negative, or out of range.
fn duration_range(seconds: i64, nanos: i32) -> Option<&'static str> {
    if seconds < 0 || nanos < 0 {
        Some("must not be negative (Envoy refuses negative durations)")
    } else if seconds > MAX_DURATION_SECONDS || nanos > 999_999_999 {
        Some("is out of range (at most 315576000000s)")
    } else {
        None
    }
}

fn check_message(msg: &DynamicMessage, path: &str, out: &mut Vec<Violation>, depth: usize) {
    if depth > 64 {
        return;
    }
    let desc = msg.descriptor();
    if desc.full_name() == "google.protobuf.Any" {
        check_any(msg, path, out, depth);
        return;
    }
    let plan = plan(&desc);
    for (name, members) in &plan.required_oneofs {
        if !members.iter().any(|f| msg.has_field(f)) {
            let names: Vec<&str> = members.iter().map(FieldDescriptor::name).collect();
            out.push(Violation {
                path: join(path, name),
                message: format!("one of {} is required", names.join(", ")),
            });
        }
    }
    for fp in &plan.fields {
        let field = &fp.field;
        let present = msg.has_field(field);
        // A field of a oneof is checked only when it is the member that is set.
        if !present && (fp.in_oneof || fp.rules.is_none()) {
            continue;
        }
        let fpath = join(path, field.name());
        let value = msg.get_field(field);
        if let Some(rules) = &fp.rules {
            check_field_rules(field, rules, present, value.as_ref(), &fpath, out);
        }
        if !present || !fp.holds_messages {
            continue;
        }
        check_inside(value.as_ref(), &fpath, out, depth);
    }
}

/// Recurses into the messages a field's value holds (lists and maps of messages too).
fn check_inside(value: &Value, fpath: &str, out: &mut Vec<Violation>, depth: usize) {
    match value {
        Value::Message(m) => check_message(m, fpath, out, depth + 1),
        Value::List(items) => {
            for (i, v) in items.iter().enumerate() {
                if let Value::Message(m) = v {
                    check_message(m, &format!("{fpath}[{i}]"), out, depth + 1);
                }
            }
        }
        Value::Map(entries) => {
            for (k, v) in entries {
                if let Value::Message(m) = v {
                    check_message(m, &format!("{fpath}[{k:?}]"), out, depth + 1);
                }
            }
        }
        _ => {}
    }
}

/// The rules of one field of a message type, for checking values put into that field one at a
/// time (see `envoy::plan`): what [`check`] would find in the field, and in everything inside it.
pub(crate) struct FieldCheck {
    plan: Arc<Plan>,
    index: usize,
}

impl FieldCheck {
    /// The checks of `field` of `desc`; `None` when nothing in it can break a rule.
    pub(crate) fn of(desc: &MessageDescriptor, field: &FieldDescriptor) -> Option<FieldCheck> {
        let plan = plan(desc);
        let index = plan.fields.iter().position(|f| f.field == *field)?;
        Some(FieldCheck { plan, index })
    }

    /// Whether a duration of `seconds` and `nanos`, set in this `google.protobuf.Duration` field,
    /// keeps its rules (what [`FieldCheck::passes`] checks of a `Duration` message).
    pub(crate) fn passes_duration(&self, seconds: i64, nanos: i32) -> bool {
        let fp = &self.plan.fields[self.index];
        let Some(rules) = fp.rules.as_ref().filter(|r| !r.skip) else {
            return true;
        };
        if rules.proto_duration && duration_range(seconds, nanos).is_some() {
            return false;
        }
        let mut ok = true;
        if let Some(bounds) = &rules.duration {
            check_bounds(seconds as f64 + f64::from(nanos) / 1e9, bounds, "s", &mut |_| {
                ok = false
            });
        }
        ok
    }

    /// Whether `value`, set in the field, keeps every rule of the field and of what it holds.
    pub(crate) fn passes(&self, value: &Value) -> bool {
        let fp = &self.plan.fields[self.index];
        let mut out = Vec::new();
        if let Some(rules) = &fp.rules {
            check_field_rules(&fp.field, rules, true, value, "", &mut out);
        }
        if fp.holds_messages {
            check_inside(value, "", &mut out, 0);
        }
        out.is_empty()
    }
}

fn check_any(msg: &DynamicMessage, path: &str, out: &mut Vec<Violation>, depth: usize) {
    let type_url = msg
        .get_field_by_name("type_url")
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    let bytes = msg
        .get_field_by_name("value")
        .and_then(|v| v.as_bytes().cloned())
        .unwrap_or_default();
    let name = type_url.rsplit('/').next().unwrap_or("");
    if let Some(desc) = pool().get_message_by_name(name) {
        if let Ok(inner) = DynamicMessage::decode(desc, bytes) {
            check_message(&inner, path, out, depth + 1);
        }
    }
}

/// Bounds of a number or a duration (in seconds).
#[derive(Debug, Default)]
struct Bounds {
    konst: Option<f64>,
    gt: Option<f64>,
    gte: Option<f64>,
    lt: Option<f64>,
    lte: Option<f64>,
}

#[derive(Debug, Default)]
struct StringRules {
    min_chars: Option<f64>,
    max_chars: Option<f64>,
    min_bytes: Option<f64>,
    max_bytes: Option<f64>,
    prefix: Option<String>,
    suffix: Option<String>,
    contains: Option<String>,
    allowed: Vec<String>,
    forbidden: Vec<String>,
    ignore_empty: bool,
}

#[derive(Debug, Default)]
struct NumberRules {
    bounds: Bounds,
    allowed: Vec<f64>,
    forbidden: Vec<f64>,
    ignore_empty: bool,
    defined_only: bool,
}

/// Repeated-field rules: (min items, max items, rules for each item).
type ItemRules = (Option<f64>, Option<f64>, Option<Box<Compiled>>);

/// A field's `(validate.rules)`, read once into plain data.
#[derive(Debug, Default)]
struct Compiled {
    skip: bool,
    required: bool,
    /// A `google.protobuf.Duration` field: Envoy refuses any negative or out-of-range duration,
    /// whatever the field's own rules (`Invalid duration: Expected positive duration`).
    proto_duration: bool,
    duration: Option<Bounds>,
    items: Option<ItemRules>,
    pairs: Option<(Option<f64>, Option<f64>)>,
    string: Option<StringRules>,
    bytes: Option<(Option<f64>, Option<f64>)>,
    enumeration: Option<NumberRules>,
    number: Option<NumberRules>,
}

fn strings(rules: &DynamicMessage, name: &str) -> Vec<String> {
    list_of(rules, name)
        .iter()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect()
}

fn numbers(rules: &DynamicMessage, name: &str) -> Vec<f64> {
    list_of(rules, name).iter().filter_map(as_f64).collect()
}

fn text(rules: &DynamicMessage, name: &str) -> Option<String> {
    if !rules.has_field_by_name(name) {
        return None;
    }
    rules
        .get_field_by_name(name)
        .and_then(|v| v.as_str().map(str::to_string))
}

fn compile(rules: &DynamicMessage) -> Compiled {
    let mut c = Compiled::default();
    if let Some(m) = sub(rules, "message") {
        c.skip = flag(&m, "skip");
        c.required = flag(&m, "required");
    }
    if let Some(r) = sub(rules, "repeated") {
        c.items = Some((
            num(&r, "min_items"),
            num(&r, "max_items"),
            sub(&r, "items").map(|i| Box::new(compile(&i))),
        ));
    }
    if let Some(r) = sub(rules, "map") {
        c.pairs = Some((num(&r, "min_pairs"), num(&r, "max_pairs")));
    }
    if let Some(r) = sub(rules, "duration") {
        c.required |= flag(&r, "required");
        let b = |n: &str| duration_bound(&r, n);
        c.duration = Some(Bounds {
            konst: b("const"),
            gt: b("gt"),
            gte: b("gte"),
            lt: b("lt"),
            lte: b("lte"),
        });
    }
    if let Some(r) = sub(rules, "string") {
        c.string = Some(StringRules {
            min_chars: num(&r, "min_len"),
            max_chars: num(&r, "max_len"),
            min_bytes: num(&r, "min_bytes"),
            max_bytes: num(&r, "max_bytes"),
            prefix: text(&r, "prefix"),
            suffix: text(&r, "suffix"),
            contains: text(&r, "contains"),
            allowed: strings(&r, "in"),
            forbidden: strings(&r, "not_in"),
            ignore_empty: flag(&r, "ignore_empty"),
        });
    }
    if let Some(r) = sub(rules, "bytes") {
        c.bytes = Some((num(&r, "min_len"), num(&r, "max_len")));
    }
    if let Some(r) = sub(rules, "enum") {
        c.enumeration = Some(NumberRules {
            defined_only: flag(&r, "defined_only"),
            allowed: numbers(&r, "in"),
            forbidden: numbers(&r, "not_in"),
            ..NumberRules::default()
        });
    }
    let number_types = [
        "float", "double", "int32", "int64", "uint32", "uint64", "sint32", "sint64", "fixed32", "fixed64", "sfixed32",
        "sfixed64",
    ];
    if let Some(r) = number_types.iter().find_map(|t| sub(rules, t)) {
        let b = |n: &str| num(&r, n);
        c.number = Some(NumberRules {
            bounds: Bounds {
                konst: b("const"),
                gt: b("gt"),
                gte: b("gte"),
                lt: b("lt"),
                lte: b("lte"),
            },
            allowed: numbers(&r, "in"),
            forbidden: numbers(&r, "not_in"),
            ignore_empty: flag(&r, "ignore_empty"),
            defined_only: false,
        });
    }
    c
}

fn check_field_rules(
    field: &FieldDescriptor,
    rules: &Compiled,
    present: bool,
    value: &Value,
    path: &str,
    out: &mut Vec<Violation>,
) {
    let mut fail = |message: String| {
        out.push(Violation {
            path: path.to_string(),
            message,
        })
    };
    if rules.skip {
        return;
    }
    if rules.required && !present {
        fail("is required".to_string());
        return;
    }
    if field.is_list() {
        if let Some((min, max, item_rules)) = &rules.items {
            let list = value.as_list().unwrap_or(&[]);
            let n = list.len() as f64;
            if min.is_some_and(|m| n < m) {
                fail(format!("needs at least {} item(s), has {n}", min.unwrap_or(0.0)));
            }
            if max.is_some_and(|m| n > m) {
                fail(format!("allows at most {} item(s), has {n}", max.unwrap_or(0.0)));
            }
            if let Some(item_rules) = item_rules {
                if !matches!(field.kind(), Kind::Message(_)) {
                    for (i, v) in list.iter().enumerate() {
                        check_scalar(field, item_rules, v, &format!("{path}[{i}]"), out);
                    }
                }
            }
        }
        return;
    }
    if field.is_map() {
        if let Some((min, max)) = rules.pairs {
            let n = value.as_map().map(|m| m.len()).unwrap_or(0) as f64;
            if min.is_some_and(|m| n < m) {
                fail("has too few entries".to_string());
            }
            if max.is_some_and(|m| n > m) {
                fail("has too many entries".to_string());
            }
        }
        return;
    }
    if let Kind::Message(m) = field.kind() {
        let name = m.full_name();
        if name == "google.protobuf.Duration" {
            if let (true, true, Value::Message(d)) = (rules.proto_duration, present, value) {
                let int = |n: &str| d.get_field_by_name(n).and_then(|v| as_f64(&v)).unwrap_or(0.0);
                if let Some(problem) = duration_range(int("seconds") as i64, int("nanos") as i32) {
                    fail(problem.to_string());
                    return;
                }
            }
            if let (Some(bounds), true, Value::Message(d)) = (&rules.duration, present, value) {
                check_bounds(duration_secs(d), bounds, "s", &mut fail);
            }
        } else if name.starts_with("google.protobuf.") && name.ends_with("Value") && present {
            // Wrapper types: the scalar rules apply to the wrapped value, when set.
            if let Value::Message(w) = value {
                if let (Some(inner), Some(inner_field)) =
                    (w.get_field_by_name("value"), w.descriptor().get_field_by_name("value"))
                {
                    check_scalar(&inner_field, rules, inner.as_ref(), path, out);
                }
            }
        }
        return;
    }
    check_scalar(field, rules, value, path, out);
}

fn num(rules: &DynamicMessage, name: &str) -> Option<f64> {
    if !rules.has_field_by_name(name) {
        return None;
    }
    as_f64(rules.get_field_by_name(name)?.as_ref())
}

fn as_f64(v: &Value) -> Option<f64> {
    Some(match v {
        Value::I32(x) | Value::EnumNumber(x) => f64::from(*x),
        Value::I64(x) => *x as f64,
        Value::U32(x) => f64::from(*x),
        Value::U64(x) => *x as f64,
        Value::F32(x) => f64::from(*x),
        Value::F64(x) => *x,
        _ => return None,
    })
}

fn duration_secs(d: &DynamicMessage) -> f64 {
    let s = d.get_field_by_name("seconds").and_then(|v| as_f64(&v)).unwrap_or(0.0);
    let n = d.get_field_by_name("nanos").and_then(|v| as_f64(&v)).unwrap_or(0.0);
    s + n / 1e9
}

fn duration_bound(rules: &DynamicMessage, name: &str) -> Option<f64> {
    sub(rules, name).map(|d| duration_secs(&d))
}

fn check_bounds(v: f64, b: &Bounds, unit: &str, fail: &mut dyn FnMut(String)) {
    if let Some(c) = b.konst {
        if v != c {
            fail(format!("must be {c}{unit}"));
        }
    }
    if let Some(x) = b.gt {
        if v <= x {
            fail(format!("must be greater than {x}{unit}, is {v}{unit}"));
        }
    }
    if let Some(x) = b.gte {
        if v < x {
            fail(format!("must be at least {x}{unit}, is {v}{unit}"));
        }
    }
    if let Some(x) = b.lt {
        if v >= x {
            fail(format!("must be less than {x}{unit}, is {v}{unit}"));
        }
    }
    if let Some(x) = b.lte {
        if v > x {
            fail(format!("must be at most {x}{unit}, is {v}{unit}"));
        }
    }
}

fn list_of(rules: &DynamicMessage, name: &str) -> Vec<Value> {
    rules
        .get_field_by_name(name)
        .and_then(|v| v.as_list().map(<[Value]>::to_vec))
        .unwrap_or_default()
}

fn check_scalar(field: &FieldDescriptor, rules: &Compiled, value: &Value, path: &str, out: &mut Vec<Violation>) {
    let mut fail = |message: String| {
        out.push(Violation {
            path: path.to_string(),
            message,
        })
    };
    match value {
        Value::String(s) => {
            let Some(r) = &rules.string else { return };
            if r.ignore_empty && s.is_empty() {
                return;
            }
            let chars = s.chars().count() as f64;
            let bytes = s.len() as f64;
            if r.min_chars.is_some_and(|m| chars < m) || r.min_bytes.is_some_and(|m| bytes < m) {
                fail(if s.is_empty() {
                    "must not be empty".to_string()
                } else {
                    format!("`{s}` is too short")
                });
            }
            if r.max_chars.is_some_and(|m| chars > m) || r.max_bytes.is_some_and(|m| bytes > m) {
                fail("is too long".to_string());
            }
            if let Some(p) = r.prefix.as_ref().filter(|p| !s.starts_with(p.as_str())) {
                fail(format!("must start with `{p}`"));
            }
            if let Some(p) = r.suffix.as_ref().filter(|p| !s.ends_with(p.as_str())) {
                fail(format!("must end with `{p}`"));
            }
            if let Some(p) = r.contains.as_ref().filter(|p| !s.contains(p.as_str())) {
                fail(format!("must contain `{p}`"));
            }
            if !r.allowed.is_empty() && !r.allowed.contains(s) {
                fail(format!("`{s}` is not an allowed value"));
            }
            if r.forbidden.contains(s) {
                fail(format!("`{s}` is not allowed"));
            }
        }
        Value::Bytes(b) => {
            let Some((min, max)) = rules.bytes else { return };
            let n = b.len() as f64;
            if min.is_some_and(|m| n < m) {
                fail("is too short".to_string());
            }
            if max.is_some_and(|m| n > m) {
                fail("is too long".to_string());
            }
        }
        Value::EnumNumber(n) => {
            let Some(r) = &rules.enumeration else { return };
            if r.defined_only {
                if let Kind::Enum(e) = field.kind() {
                    if e.get_value(*n).is_none() {
                        fail(format!("{n} is not a defined {} value", e.name()));
                    }
                }
            }
            let v = f64::from(*n);
            if !r.allowed.is_empty() && !r.allowed.contains(&v) {
                fail(format!("{n} is not an allowed value"));
            }
            if r.forbidden.contains(&v) {
                fail(format!("{n} is not allowed"));
            }
        }
        other => {
            let (Some(v), Some(r)) = (as_f64(other), &rules.number) else {
                return;
            };
            if r.ignore_empty && v == 0.0 {
                return;
            }
            check_bounds(v, &r.bounds, "", &mut fail);
            if !r.allowed.is_empty() && !r.allowed.contains(&v) {
                fail(format!("{v} is not an allowed value"));
            }
            if r.forbidden.contains(&v) {
                fail(format!("{v} is not allowed"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::check;
    use crate::envoy::decode;

    fn violations(name: &str, v: serde_json::Value) -> Vec<String> {
        check(&decode(name, &v).unwrap())
            .into_iter()
            .map(|v| format!("{}: {}", v.path, v.message))
            .collect()
    }

    #[test]
    fn catches_what_envoy_would_reject() {
        // Empty cluster name in a route (string min_len); members of a oneof that are not set
        // are not checked.
        let v = violations(
            "envoy.config.route.v3.Route",
            json!({"match": {"prefix": "/"}, "route": {"cluster": ""}}),
        );
        assert_eq!(v, vec!["route.cluster: must not be empty"]);
        // A zero connect timeout (duration gt 0).
        let v = violations(
            "envoy.config.cluster.v3.Cluster",
            json!({"name": "c", "connect_timeout": "0s"}),
        );
        assert!(
            v.iter()
                .any(|m| m.starts_with("connect_timeout: must be greater than 0s")),
            "{v:?}"
        );
        // A negative duration where the field has no rule of its own: Envoy refuses any.
        let v = violations(
            "envoy.config.route.v3.Route",
            json!({"match": {"prefix": "/"}, "route": {"cluster": "c", "timeout": "-1s", "idle_timeout": "0.5s"}}),
        );
        assert_eq!(
            v,
            vec!["route.timeout: must not be negative (Envoy refuses negative durations)"]
        );
        // Two filter chains that match the same connections.
        let hcm = json!({"name": "hcm", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": "s", "rds": {"route_config_name": "r", "config_source": {"ads": {}}}}});
        let v = violations(
            "envoy.config.listener.v3.Listener",
            json!({"name": "l", "address": {"socket_address": {"address": "0.0.0.0", "port_value": 80}},
                   "filter_chains": [{"name": "a", "filters": [hcm]},
                                     {"name": "b", "filter_chain_match": {"server_names": ["x"]}, "filters": [hcm]},
                                     {"filters": [hcm]}]}),
        );
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(
            v[0].starts_with("filter_chains[2].filter_chain_match: is the same as filter chain 0's (`a`)"),
            "{v:?}"
        );
        // A required oneof left unset (route action) and a required message (match).
        let v = violations("envoy.config.route.v3.Route", json!({"name": "x"}));
        assert!(v.iter().any(|m| m.starts_with("match:")), "{v:?}");
        assert!(v.iter().any(|m| m.starts_with("action:")), "{v:?}");
        // Port out of range, inside an Any (HCM in a listener) an empty stat_prefix.
        let v = violations(
            "envoy.config.listener.v3.Listener",
            json!({"name": "l", "address": {"socket_address": {"address": "0.0.0.0", "port_value": 70000}},
                   "filter_chains": [{"filters": [{"name": "hcm", "typed_config": {
                       "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                       "stat_prefix": "", "rds": {"route_config_name": "r", "config_source": {"ads": {}}}}}]}]}),
        );
        assert!(
            v.iter().any(|m| m.starts_with("address.socket_address.port_value:")),
            "{v:?}"
        );
        assert!(
            v.iter()
                .any(|m| m.starts_with("filter_chains[0].filters[0].typed_config.stat_prefix:")),
            "{v:?}"
        );
    }

    #[test]
    fn the_core_pack_output_is_clean() {
        let loaded = crate::source::parse_text("t.yaml", include_str!("../../../examples/quickstart/quickstart.yaml"));
        let registry = crate::rules::Registry::core().unwrap();
        let t = crate::translate(&loaded, &registry, &crate::Options::default());
        assert!(t.diagnostics.iter().all(|d| !d.is_error()), "{:?}", t.diagnostics);
        assert_eq!(t.snapshot.count(crate::snapshot::ResourceType::Cluster), 2);
    }
}
