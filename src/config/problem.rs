//! What is wrong with a configuration: problems that name file, line and column, and the YAML
//! parse that makes them. Below `load`, `validate` and `web`, which all report through it.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde_saphyr::Location;

/// One problem in one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file.
    pub file: PathBuf,
    /// 1-based line, 0 when unknown.
    pub line: u64,
    /// 1-based column, 0 when unknown.
    pub column: u64,
    /// What is wrong and what was expected.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file.display(),
                self.line,
                self.column,
                self.message
            )
        } else {
            write!(f, "{}: {}", self.file.display(), self.message)
        }
    }
}

/// Everything wrong with a configuration (at least one problem).
#[derive(Debug, Clone)]
pub struct ConfigError {
    /// The problems, in file order.
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    pub(crate) fn at(file: &Path, loc: &Location, message: impl Into<String>) -> Problem {
        Problem {
            file: file.to_path_buf(),
            line: loc.line(),
            column: loc.column(),
            message: message.into(),
        }
    }
}

/// Parses YAML into `T`; a failure names the file, line and column and shows the offending line.
pub(crate) fn parse<T: DeserializeOwned>(file: &Path, text: &str) -> Result<T, Problem> {
    serde_saphyr::from_str::<T>(text).map_err(|e| {
        let loc = e.location();
        let plain = e.without_snippet().to_string();
        // serde-saphyr appends " at line L, column C"; we print the location up front instead.
        let message = match plain.rfind(" at line ") {
            Some(i) if loc.is_some() => plain[..i].to_string(),
            _ => plain,
        };
        // Neither the message nor the line shown may carry a password.
        let message = super::secret::redact_urls(&message);
        let line_text = loc
            .and_then(|l| text.lines().nth(l.line().saturating_sub(1) as usize))
            .map(|l| format!("\n    | {}", super::secret::redact_line(l)))
            .unwrap_or_default();
        Problem {
            file: file.to_path_buf(),
            line: loc.map_or(0, |l| l.line()),
            column: loc.map_or(0, |l| l.column()),
            message: format!("{message}{line_text}"),
        }
    })
}
