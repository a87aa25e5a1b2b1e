//! The one `Diagnostic` type that every stage returns alongside its output.
//!
//! A diagnostic names the object it is about (kind, namespace/name), where that object came from
//! (file:line:column), the field path inside it, a message and, where we can, a hint. The `code` is a
//! stable snake_case label (`mapping.missing_service`) for metrics and goldens; the message is for
//! humans and may change. This module knows nothing about YAML, Envoy or the network.

use std::fmt;

use serde::{Deserialize, Serialize};

/// How bad a diagnostic is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The object (or the part of it named by the path) was left out of the configuration.
    Error,
    /// The object was used, but something in it was ignored or looks wrong.
    Warning,
    /// Informational: something was skipped on purpose (for example an unknown kind).
    Notice,
}

impl Severity {
    /// The lowercase label used in output and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Notice => "notice",
        }
    }
}

/// Where a piece of input came from: a file and a 1-based line and column.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Origin {
    /// The file, as given to the source (relative to the config directory where possible).
    pub file: String,
    /// 1-based line; 0 when unknown.
    pub line: u32,
    /// 1-based column; 0 when unknown.
    pub column: u32,
}

impl Origin {
    /// An origin pointing at a position in a file.
    pub fn new(file: impl Into<String>, line: u32, column: u32) -> Self {
        Origin {
            file: file.into(),
            line,
            column,
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// The object a diagnostic is about, in the user's words.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ObjectRef {
    /// Kind as written by the user (`Mapping`, `Host`, ...).
    pub kind: String,
    /// Namespace (`default` when the object does not say).
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// One finding about the input.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Diagnostic {
    /// Where it is: sorting diagnostics sorts them by file and line.
    pub origin: Option<Origin>,
    /// Stable machine label, `<area>.<what>`.
    pub code: String,
    /// How bad it is.
    pub severity: Severity,
    /// The object concerned, when there is one.
    pub object: Option<ObjectRef>,
    /// Field path inside the object (`spec.timeout_ms`), empty for the whole object.
    pub path: String,
    /// What is wrong, for a human.
    pub message: String,
    /// What to do about it, when we can tell.
    pub hint: Option<String>,
}

impl Diagnostic {
    fn new(severity: Severity, code: &str, message: impl Into<String>) -> Self {
        Diagnostic {
            origin: None,
            code: code.to_string(),
            severity,
            object: None,
            path: String::new(),
            message: message.into(),
            hint: None,
        }
    }

    /// An error: the object or field it names was left out.
    pub fn error(code: &str, message: impl Into<String>) -> Self {
        Self::new(Severity::Error, code, message)
    }

    /// A warning: used, but something was ignored.
    pub fn warning(code: &str, message: impl Into<String>) -> Self {
        Self::new(Severity::Warning, code, message)
    }

    /// A notice: skipped on purpose.
    pub fn notice(code: &str, message: impl Into<String>) -> Self {
        Self::new(Severity::Notice, code, message)
    }

    /// Sets where the problem is.
    #[must_use]
    pub fn at(mut self, origin: Origin) -> Self {
        self.origin = Some(origin);
        self
    }

    /// Sets the object concerned.
    #[must_use]
    pub fn on(mut self, object: ObjectRef) -> Self {
        self.object = Some(object);
        self
    }

    /// Sets the field path.
    #[must_use]
    pub fn path(mut self, path: impl Into<String>) -> Self {
        self.path = path.into();
        self
    }

    /// Sets a hint.
    #[must_use]
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Whether this diagnostic means something was left out.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    /// `file:line:col: Kind ns/name: spec.field: severity[code]: message` and an indented hint line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(origin) = &self.origin {
            write!(f, "{origin}: ")?;
        }
        if let Some(object) = &self.object {
            write!(f, "{object}: ")?;
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        write!(f, "{}[{}]: {}", self.severity.as_str(), self.code, self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, "\n    hint: {hint}")?;
        }
        Ok(())
    }
}

/// Counts of diagnostics by severity.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Number of errors.
    pub errors: usize,
    /// Number of warnings.
    pub warnings: usize,
    /// Number of notices.
    pub notices: usize,
}

/// The candidate `name` was probably meant to be, for a "did you mean": the closest by
/// Damerau-Levenshtein distance, ignoring case, when it is a slip of the keyboard (at most a third
/// of the letters, at least one) or shares most of its spelling (Jaro-Winkler similarity 0.88 or
/// more, for names of 5 letters or more: `timeout` for `timeout_ms`). Ties go to the first in
/// alphabetical order, so the suggestion never depends on the candidates' order.
pub fn closest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let lower = name.to_lowercase();
    let letters = lower.chars().count();
    let candidates: Vec<&'a str> = candidates.into_iter().collect();
    if candidates.contains(&name) {
        return None;
    }
    candidates
        .into_iter()
        .filter_map(|c| {
            let other = c.to_lowercase();
            let edits = strsim::damerau_levenshtein(&lower, &other);
            let close = edits <= (letters / 3).max(1) || (letters >= 5 && strsim::jaro_winkler(&lower, &other) >= 0.88);
            close.then_some((edits, c))
        })
        .min()
        .map(|(_, c)| c)
}

/// Counts diagnostics by severity.
pub fn count(diagnostics: &[Diagnostic]) -> Counts {
    let mut counts = Counts::default();
    for d in diagnostics {
        match d.severity {
            Severity::Error => counts.errors += 1,
            Severity::Warning => counts.warnings += 1,
            Severity::Notice => counts.notices += 1,
        }
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::closest;

    #[test]
    fn suggestions_are_for_slips_not_for_anything() {
        let fields = ["prefix", "prefix_regex", "timeout_ms", "service", "host", "hostname"];
        assert_eq!(closest("prefx", fields), Some("prefix"));
        assert_eq!(closest("Prefix", fields), Some("prefix"));
        assert_eq!(closest("timeout", fields), Some("timeout_ms"));
        assert_eq!(closest("hots", fields), Some("host"));
        assert_eq!(closest("frobnicate", fields), None);
        assert_eq!(closest("prefix", fields), None, "an exact name needs no suggestion");
        // The same answer whatever the order.
        let mut reversed = fields;
        reversed.reverse();
        assert_eq!(closest("prefx", reversed), Some("prefix"));
    }
}
