//! Paths of rule-pack edits (grammar/patch_path.pest): where an edit applies inside a rendered
//! Envoy message. Field names joined by dots; a list element is chosen by the value of one of its
//! fields (`filters[name="envoy.filters.http.router"]`), or every element (`[*]`), a map entry by its key
//! (`typed_per_filter_config["envoy.filters.http.cors"]`); there are no indexes, so a path keeps
//! meaning the same thing when the configuration around it changes. Parsing only: what a path
//! finds is `rules::edit`'s.

use pest::iterators::Pair;
use pest::Parser as _;

use super::LangError;

#[allow(missing_docs, reason = "pest generates an undocumented `Rule` enum")]
mod grammar {
    use pest_derive::Parser;

    #[derive(Parser)]
    #[grammar = "../grammar/patch_path.pest"]
    pub(super) struct PathParser;
}

use grammar::{PathParser, Rule};

/// How a step narrows what its field holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selector {
    /// Every element of a list (`[*]`).
    All,
    /// The elements of a list whose field `.0` is the string `.1`.
    Element(String, String),
    /// The entry of a map with this key.
    Key(String),
}

/// One step: a field, then selectors applied in turn.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// Field name as written (snake_case or camelCase).
    pub field: String,
    /// Selectors, in order.
    pub selectors: Vec<Selector>,
}

/// A parsed path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Path {
    /// The steps, outermost first.
    pub steps: Vec<Step>,
    /// The path as written.
    pub text: String,
}

impl std::fmt::Display for Path {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

fn describe(rule: &Rule) -> &'static str {
    match rule {
        Rule::field => "a field name",
        Rule::selector | Rule::element | Rule::key | Rule::all => "`[field=\"value\"]`, `[*]` or `[\"key\"]`",
        Rule::string | Rule::inner | Rule::bare => "a value",
        Rule::EOI => "end of path (or `.`, `[`)",
        _ => "a path",
    }
}

fn unquote(pair: Pair<'_, Rule>) -> String {
    match pair.as_rule() {
        Rule::string => {
            let inner = pair.into_inner().next().map(|p| p.as_str()).unwrap_or_default();
            let mut out = String::with_capacity(inner.len());
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                if c == '\\' {
                    if let Some(n) = chars.next() {
                        out.push(n);
                    }
                } else {
                    out.push(c);
                }
            }
            out
        }
        _ => pair.as_str().to_string(),
    }
}

/// Parses a path.
///
/// # Errors
/// A [`LangError`] pointing at the first character that does not fit, with a hint for the
/// mistake everyone makes first (an index).
pub fn parse(input: &str) -> Result<Path, LangError> {
    let pairs = PathParser::parse(Rule::path, input).map_err(|e| {
        let mut err = LangError::from_pest(input, &e, describe);
        if input[..]
            .char_indices()
            .any(|(i, c)| c == '[' && input[i + 1..].starts_with(|d: char| d.is_ascii_digit()))
        {
            err.message
                .push_str(" (list elements are chosen by content, e.g. `filters[name=\"envoy.filters.http.router\"]`, never by index)");
        }
        err
    })?;
    let mut steps = Vec::new();
    for step in pairs.flatten().filter(|p| p.as_rule() == Rule::step) {
        let mut inner = step.into_inner();
        let field = inner.next().map(|p| p.as_str().to_string()).unwrap_or_default();
        let selectors = inner
            .filter_map(|sel| sel.into_inner().next())
            .map(|s| match s.as_rule() {
                Rule::element => {
                    let mut parts = s.into_inner();
                    let name = parts.next().map(|p| p.as_str().to_string()).unwrap_or_default();
                    let value = parts.next().map(unquote).unwrap_or_default();
                    Selector::Element(name, value)
                }
                Rule::all => Selector::All,
                _ => Selector::Key(s.into_inner().next().map(unquote).unwrap_or_default()),
            })
            .collect();
        steps.push(Step { field, selectors });
    }
    Ok(Path {
        steps,
        text: input.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_elements_by_content_and_map_keys() {
        let p = parse(r#"filter_chains[name="cleartext"].filters[name=envoy.filters.network.http_connection_manager].typed_config.http_filters[name="a \"b\""]"#).unwrap();
        assert_eq!(p.steps.len(), 4);
        assert_eq!(
            p.steps[0].selectors,
            [Selector::Element("name".into(), "cleartext".into())]
        );
        assert_eq!(
            p.steps[1].selectors,
            [Selector::Element(
                "name".into(),
                "envoy.filters.network.http_connection_manager".into()
            )]
        );
        assert_eq!(p.steps[2].field, "typed_config");
        assert_eq!(
            p.steps[3].selectors,
            [Selector::Element("name".into(), "a \"b\"".into())]
        );
        let p = parse(r#"typed_per_filter_config["envoy.filters.http.cors"]"#).unwrap();
        assert_eq!(p.steps[0].selectors, [Selector::Key("envoy.filters.http.cors".into())]);
        assert_eq!(parse("route.timeout").unwrap().steps.len(), 2);
        assert_eq!(
            parse("filter_chains[*].name").unwrap().steps[0].selectors,
            [Selector::All]
        );
    }

    #[test]
    fn an_index_is_refused_with_a_hint() {
        let e = parse("filter_chains[0].filters").unwrap_err();
        assert!(e.message.contains("never by index"), "{e}");
        assert!(parse("").is_err());
        assert!(parse("a..b").is_err());
    }
}
