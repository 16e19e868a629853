//! Diagnostics: every problem found, each with file:line:column, what is wrong and a hint.

use std::fmt;

use serde::Serialize;

use crate::span::Located;

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Diagnostic {
    pub file: String,
    pub line: u32,
    pub column: u32,
    pub message: String,
    pub hint: Option<String>,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: error: {}",
            self.file, self.line, self.column, self.message
        )?;
        if let Some(h) = &self.hint {
            write!(f, "\n  hint: {h}")?;
        }
        Ok(())
    }
}

/// A list of problems; empty means valid.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn push(
        &mut self,
        file: &str,
        line: u32,
        column: u32,
        message: impl Into<String>,
        hint: Option<String>,
    ) {
        self.0.push(Diagnostic {
            file: file.to_string(),
            line,
            column,
            message: message.into(),
            hint,
        });
    }

    /// A problem at the position of a located value.
    pub fn at<T>(
        &mut self,
        file: &str,
        at: &Located<T>,
        message: impl Into<String>,
        hint: impl Into<Option<String>>,
    ) {
        self.push(file, at.line, at.column, message, hint.into());
    }

    pub fn extend(&mut self, other: Diagnostics) {
        self.0.extend(other.0);
    }

    pub fn into_result<T>(mut self, ok: T) -> Result<T, Diagnostics> {
        if self.0.is_empty() {
            Ok(ok)
        } else {
            self.0.sort();
            Err(self)
        }
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

/// Turns a YAML parse error into a diagnostic at its position, with a hint for typos.
pub fn from_yaml_error(file: &str, err: &serde_saphyr::Error, known_keys: &[&str]) -> Diagnostic {
    let (line, column) = err.location().map_or((1, 1), |l| {
        (
            u32::try_from(l.line()).unwrap_or(0),
            u32::try_from(l.column()).unwrap_or(0),
        )
    });
    let full = err.to_string();
    // serde-saphyr renders a snippet after the first line; the message is the first line.
    let message = full
        .lines()
        .next()
        .unwrap_or("invalid YAML")
        .trim()
        .to_string();
    let hint = unknown_field(&message)
        .and_then(|f| closest(f, known_keys))
        .map(|k| format!("did you mean `{k}`?"));
    Diagnostic {
        file: file.to_string(),
        line,
        column,
        message,
        hint,
    }
}

fn unknown_field(message: &str) -> Option<&str> {
    let rest = message.split("unknown field `").nth(1)?;
    rest.split('`').next()
}

/// The closest known key, for "did you mean" hints: edits and swaps of neighbours (`pcas` is
/// one from `pacs`), at most a third of the word.
pub fn closest<'a>(word: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (strsim::osa_distance(word, k), *k))
        // Two edits turn `ris` into `dns`: a suggestion must keep most of the word (at most a
        // third of it changed, one edit for short words, never more than two).
        .filter(|(d, k)| *d <= (word.chars().count().max(k.chars().count()) / 3).clamp(1, 2))
        .min()
        .map(|(_, k)| k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closest_keys() {
        assert_eq!(closest("protocl", &["protocol", "ports"]), Some("protocol"));
        assert_eq!(closest("zzz", &["protocol", "ports"]), None);
        // Short words: one edit, not two (`ris` is no typo of `dns`).
        assert_eq!(closest("ris", &["dns", "ntp", "pacs"]), None);
        assert_eq!(closest("dnss", &["dns", "ntp"]), Some("dns"));
        assert_eq!(
            closest("infusion-pmp", &["infusion-pump"]),
            Some("infusion-pump")
        );
    }
}
