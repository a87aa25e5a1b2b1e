//! Rule `when` conditions (grammar/when.pest), evaluated against a template context.
//!
//! `a.b == "x"`, `!=`, `&&`, `||`, `!`, parentheses, and bare paths tested for truthiness
//! (null, false, 0, "" and empty lists/maps are false). A path that does not exist in the
//! context is an error at evaluation time, like a misspelled field in a strict-mode template.

use pest::iterators::Pair;
use pest::Parser as _;
use serde_json::Value;

use super::LangError;

#[allow(missing_docs, reason = "pest generates an undocumented `Rule` enum")]
mod grammar {
    use pest_derive::Parser;

    #[derive(Parser)]
    #[grammar = "../grammar/when.pest"]
    pub(super) struct WhenParser;
}

use grammar::{Rule, WhenParser};

/// A parsed condition.
#[derive(Clone, Debug, PartialEq)]
pub enum Condition {
    /// All must hold.
    And(Vec<Condition>),
    /// Any must hold.
    Or(Vec<Condition>),
    /// Negation.
    Not(Box<Condition>),
    /// `left == right` (or `!=` when `negated`).
    Compare(Operand, Operand, bool),
    /// Truthiness of one operand.
    Truthy(Operand),
}

/// A literal or a path into the context.
#[derive(Clone, Debug, PartialEq)]
pub enum Operand {
    /// `a.b.c`.
    Path(Vec<String>),
    /// A literal value.
    Literal(Value),
}

fn describe(rule: &Rule) -> &'static str {
    match rule {
        Rule::cmp_op => "`==` or `!=`",
        Rule::EOI => "end of condition (or `&&`, `||`)",
        Rule::string | Rule::inner => "a string",
        Rule::number => "a number",
        Rule::path | Rule::ident => "a field name",
        _ => "a condition",
    }
}

/// Parses a condition.
///
/// # Errors
/// A [`LangError`] pointing at the first character that does not fit.
pub fn parse(input: &str) -> Result<Condition, LangError> {
    let mut pairs = WhenParser::parse(Rule::condition, input).map_err(|e| LangError::from_pest(input, &e, describe))?;
    let condition = pairs.next().and_then(|c| c.into_inner().next());
    Ok(condition.map_or(Condition::And(Vec::new()), build))
}

fn build(pair: Pair<'_, Rule>) -> Condition {
    match pair.as_rule() {
        Rule::or => {
            let mut items: Vec<Condition> = pair.into_inner().map(build).collect();
            if items.len() == 1 {
                items.remove(0)
            } else {
                Condition::Or(items)
            }
        }
        Rule::and => {
            let mut items: Vec<Condition> = pair.into_inner().map(build).collect();
            if items.len() == 1 {
                items.remove(0)
            } else {
                Condition::And(items)
            }
        }
        Rule::unary => {
            let mut nots = 0;
            let mut inner = Condition::And(Vec::new());
            for p in pair.into_inner() {
                if p.as_rule() == Rule::not {
                    nots += 1;
                } else {
                    inner = build(p);
                }
            }
            for _ in 0..nots {
                inner = Condition::Not(Box::new(inner));
            }
            inner
        }
        Rule::primary => pair.into_inner().next().map_or(Condition::And(Vec::new()), build),
        Rule::comparison => {
            let mut it = pair.into_inner();
            let left = it.next().map_or(Operand::Literal(Value::Null), operand);
            match (it.next(), it.next()) {
                (Some(op), Some(right)) => Condition::Compare(left, operand(right), op.as_str() == "!="),
                _ => Condition::Truthy(left),
            }
        }
        _ => Condition::Truthy(operand(pair)),
    }
}

fn operand(pair: Pair<'_, Rule>) -> Operand {
    match pair.as_rule() {
        Rule::string => {
            let raw = pair.into_inner().next().map_or("", |p| p.as_str());
            let mut s = String::new();
            let mut escaped = false;
            for c in raw.chars() {
                if escaped || c != '\\' {
                    s.push(c);
                    escaped = false;
                } else {
                    escaped = true;
                }
            }
            Operand::Literal(Value::String(s))
        }
        Rule::number => Operand::Literal(
            pair.as_str()
                .parse::<i64>()
                .map(Value::from)
                .or_else(|_| pair.as_str().parse::<f64>().map(Value::from))
                .unwrap_or(Value::Null),
        ),
        Rule::boolean => Operand::Literal(Value::Bool(pair.as_str() == "true")),
        Rule::path => Operand::Path(pair.as_str().split('.').map(str::to_string).collect()),
        _ => Operand::Literal(Value::Null),
    }
}

impl Condition {
    /// Evaluates against a context.
    ///
    /// # Errors
    /// The dotted path of a field that the context does not have.
    pub fn eval(&self, ctx: &Value) -> Result<bool, String> {
        Ok(match self {
            Condition::And(items) => {
                for c in items {
                    if !c.eval(ctx)? {
                        return Ok(false);
                    }
                }
                true
            }
            Condition::Or(items) => {
                for c in items {
                    if c.eval(ctx)? {
                        return Ok(true);
                    }
                }
                false
            }
            Condition::Not(c) => !c.eval(ctx)?,
            Condition::Compare(a, b, negated) => (a.value(ctx)? == b.value(ctx)?) != *negated,
            Condition::Truthy(a) => truthy(&a.value(ctx)?),
        })
    }

    /// Every path the condition reads, for checking a rule against a context schema.
    pub fn paths(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.collect_paths(&mut out);
        out
    }

    fn collect_paths(&self, out: &mut Vec<String>) {
        match self {
            Condition::And(items) | Condition::Or(items) => {
                items.iter().for_each(|c| c.collect_paths(out));
            }
            Condition::Not(c) => c.collect_paths(out),
            Condition::Compare(a, b, _) => {
                a.collect_path(out);
                b.collect_path(out);
            }
            Condition::Truthy(a) => a.collect_path(out),
        }
    }
}

impl Operand {
    fn value(&self, ctx: &Value) -> Result<Value, String> {
        match self {
            Operand::Literal(v) => Ok(v.clone()),
            Operand::Path(segs) => {
                let mut cur = ctx;
                for s in segs {
                    cur = cur.as_object().and_then(|m| m.get(s)).ok_or_else(|| segs.join("."))?;
                }
                Ok(cur.clone())
            }
        }
    }

    fn collect_path(&self, out: &mut Vec<String>) {
        if let Operand::Path(segs) = self {
            out.push(segs.join("."));
        }
    }
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn evaluates() {
        let ctx = json!({"a": "x", "n": 3, "t": null, "o": {"b": true}});
        let yes = |s: &str| parse(s).unwrap().eval(&ctx).unwrap();
        assert!(yes("a == \"x\""));
        assert!(!yes("a != \"x\""));
        assert!(yes("n == 3 && o.b"));
        assert!(yes("t == null || false"));
        assert!(yes("!t"));
        assert!(yes("!(a == \"y\") && (n != 4)"));
        assert!(!yes("!!t"));
    }

    #[test]
    fn missing_paths_and_syntax_errors() {
        let ctx = json!({"a": 1});
        assert_eq!(parse("b.c == 1").unwrap().eval(&ctx), Err("b.c".to_string()));
        let e = parse("a ==").unwrap_err();
        assert_eq!(e.offset, 4, "{e}");
        let e = parse("a = 1").unwrap_err();
        assert_eq!(e.offset, 2, "{e}");
    }
}
