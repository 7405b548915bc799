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
    parse_shown(file, text, text)
}

/// At most this many problems from one file's parse: past them, a file is more wrong than
/// right and the list would only scroll.
const MAX_PARSE_PROBLEMS: usize = 20;

/// What [`parse_all`] made of a file.
pub(crate) struct Parsed<T> {
    /// The value, parsed from what was left once the refused entries were blanked out; `None`
    /// when the parse could not go on.
    pub value: Option<T>,
    /// Every problem met, in the order met.
    pub problems: Vec<Problem>,
    /// Whether only unknown keys were blanked out: the value then means what the file says,
    /// and checking it further reports real problems, not consequences of a missing entry.
    pub whole: bool,
}

/// Parses YAML into `T`, going on past a refused entry where it can: the entry (an unknown
/// key, a value of the wrong form) is blanked out, lines kept so that every later location
/// stays right, and the text parsed again. One run so reports every misspelt key, not the
/// first. It stops at a list item's first key, at a line that is not `key: value`, and at a
/// required key that it blanked out itself (that one is a consequence, not news).
pub(crate) fn parse_all<T: DeserializeOwned>(file: &Path, text: &str) -> Parsed<T> {
    let mut problems: Vec<Problem> = Vec::new();
    let mut current = text.to_string();
    let mut blanked: Vec<String> = Vec::new();
    let mut whole = true;
    loop {
        let p = match parse_shown::<T>(file, &current, text) {
            Ok(v) => {
                return Parsed {
                    value: Some(v),
                    problems,
                    whole,
                };
            }
            Err(p) => p,
        };
        if blanked
            .iter()
            .any(|k| p.message.starts_with(&format!("missing field `{k}`")))
        {
            break;
        }
        let next = blank_entry(&current, p.line, p.column);
        // Whole only while exactly the unknown entries go: an unknown key inside a flow
        // mapping takes its parent entry with it, and what is left no longer says the same.
        whole &= next
            .as_ref()
            .is_some_and(|(_, key)| p.message.starts_with(&format!("unknown field `{key}`")));
        problems.push(p);
        match next {
            Some((text, key)) if problems.len() < MAX_PARSE_PROBLEMS => {
                current = text;
                blanked.push(key);
            }
            _ => break,
        }
    }
    Parsed {
        value: None,
        problems,
        whole: false,
    }
}

/// The text with the block-mapping entry on `line` (1-based) blanked out: that line and the
/// more-indented lines under it become empty. Returns the entry's key too; `None` when the
/// line is not `key: …` (a list item's first key, a flow collection's inside, a scalar).
fn blank_entry(text: &str, line: u64, column: u64) -> Option<(String, String)> {
    let mut lines: Vec<&str> = text.split('\n').collect();
    let at = usize::try_from(line).ok()?.checked_sub(1)?;
    let l = *lines.get(at)?;
    let indent = l.len() - l.trim_start_matches(' ').len();
    let rest = &l[indent..];
    let key_len = rest.find(':')?;
    let key = rest[..key_len].trim().trim_matches(['"', '\'']);
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
    if key.is_empty() || !key.chars().all(plain) || (column as usize) <= indent {
        return None;
    }
    let key = key.to_string();
    // `key:` with its value on the lines below: a block sequence may sit at the key's own
    // indent (`bogus:\n- a`), and belongs to it.
    let value = rest[key_len + 1..].trim();
    let block_below = value.is_empty() || value.starts_with('#');
    let mut end = at + 1;
    while let Some(next) = lines.get(end) {
        let t = next.trim_start_matches(' ');
        let width = next.len() - t.len();
        let deeper = width > indent;
        let item = block_below && width == indent && (t == "-" || t.starts_with("- "));
        if t.is_empty() || t.starts_with('#') || deeper || item {
            end += 1;
        } else {
            break;
        }
    }
    for l in &mut lines[at..end] {
        *l = "";
    }
    Some((lines.join("\n"), key))
}

/// Parses `text`; a problem shows the line from `shown` (the file as written, when `text` has
/// entries blanked out: the lines are the same).
fn parse_shown<T: DeserializeOwned>(file: &Path, text: &str, shown: &str) -> Result<T, Problem> {
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
            .and_then(|l| shown.lines().nth(l.line().saturating_sub(1) as usize))
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
