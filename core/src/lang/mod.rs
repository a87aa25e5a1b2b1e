//! Small languages inside fields, one module per grammar in `grammar/`.
//!
//! Each parser returns a typed value or a [`LangError`] that points at a character in the input, so
//! a diagnostic can show the user exactly where their string went wrong. Pure functions only.

pub mod header_format;
pub mod patch_path;
pub mod service;
pub mod when;

use std::fmt;

/// A parse error inside a field's string value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LangError {
    /// The input that failed.
    pub input: String,
    /// 0-based character offset of the problem.
    pub offset: usize,
    /// What was expected or what is wrong.
    pub message: String,
}

impl LangError {
    /// The input with a caret under the offending character, for messages.
    pub fn pointer(&self) -> String {
        format!("{}\n{}^", self.input, " ".repeat(self.offset))
    }

    fn from_pest<R: pest::RuleType>(
        input: &str,
        e: &pest::error::Error<R>,
        describe: impl Fn(&R) -> &'static str,
    ) -> Self {
        let pos = match e.location {
            pest::error::InputLocation::Pos(p) | pest::error::InputLocation::Span((p, _)) => p,
        };
        let message = match &e.variant {
            pest::error::ErrorVariant::ParsingError { positives, .. } => {
                let mut wanted: Vec<&str> = positives.iter().map(&describe).collect();
                wanted.sort_unstable();
                wanted.dedup();
                let found = input[pos..]
                    .chars()
                    .next()
                    .map_or_else(|| "end of input".to_string(), |c| format!("`{c}`"));
                if wanted.is_empty() {
                    format!("unexpected {found}")
                } else {
                    format!("expected {}, found {found}", wanted.join(" or "))
                }
            }
            pest::error::ErrorVariant::CustomError { message } => message.clone(),
        };
        LangError {
            input: input.to_string(),
            offset: input[..pos].chars().count(),
            message,
        }
    }
}

impl fmt::Display for LangError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at column {} of `{}`", self.message, self.offset + 1, self.input)
    }
}
