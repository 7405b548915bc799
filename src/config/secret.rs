//! `${ENV}` and `${file:PATH}` in secret-bearing values (database URLs, tokens), so secrets
//! stay out of the config file. `$${` writes a literal `${`.

use std::path::Path;

/// Expands `${NAME}` from the environment and `${file:PATH}` from a file (trailing newline
/// trimmed; relative paths are relative to `base`). Errors name the variable or file but never
/// include the value.
pub fn expand_secrets(input: &str, base: &Path) -> Result<String, String> {
    expand(input, base, None)
}

/// Like [`expand_secrets`] for a URL: a reference inside the userinfo (`user:${file:pw}@host`)
/// is percent-encoded there, so a password holding `@`, `/`, `:` or `#` stays a password
/// instead of becoming part of the host. A reference that is the whole URL is taken as it is.
pub fn expand_url_secrets(input: &str, base: &Path) -> Result<String, String> {
    expand(input, base, userinfo_range(input))
}

/// The byte range of the userinfo in a URL template (before expansion): after `://`, up to the
/// `@` that comes before the host, skipping over `${…}` references.
fn userinfo_range(template: &str) -> Option<std::ops::Range<usize>> {
    let start = template.find("://")? + 3;
    let bytes = template.as_bytes();
    let mut i = start;
    while i < bytes.len() {
        match bytes[i] {
            b'$' if template[i..].starts_with("${") => {
                i += template[i..].find('}')? + 1;
            }
            b'@' => return Some(start..i),
            b'/' | b'?' | b'#' => return None,
            _ => i += 1,
        }
    }
    None
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn encode_userinfo(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Replaces the password of every `scheme://user:password@` in `s` with `***`: for any URL
/// that reaches a log line, an error, an API answer or a page.
pub fn redact_urls(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find("://") {
        let (head, tail) = rest.split_at(pos + 3);
        out.push_str(head);
        // The URL ends at whitespace or a quote; its last '@' ends the userinfo (a raw
        // password may hold '/', '?' or '#', so they cannot end it).
        let end = tail
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '`'))
            .unwrap_or(tail.len());
        let url = &tail[..end];
        match url.rfind('@') {
            Some(at) if url[..at].contains(':') => {
                let user = url[..at].split(':').next().unwrap_or("");
                out.push_str(&format!("{user}:***"));
                out.push_str(&url[at..]);
            }
            _ => out.push_str(url),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// A config line fit to show in an error. A line naming anything secret-like, even mistyped
/// (`password`, `bot_tokn`, `api_key`, also inside `{ … }`), shows its key only; a line
/// holding a URL shows the URL's scheme and host only (webhook URLs carry their secret in the
/// path).
pub fn redact_line(line: &str) -> String {
    let Some((key, value)) = line.split_once(':') else {
        return redact_urls(line);
    };
    // Loose on purpose: the line shown is usually one whose key is mistyped.
    const SECRET_WORDS: &[&str] = &["pass", "pwd", "secret", "tok", "cred", "key", "auth"];
    let lower = line.to_ascii_lowercase();
    if SECRET_WORDS.iter().any(|w| lower.contains(w)) {
        return format!("{key}: ***");
    }
    match value.find("://") {
        Some(pos) => {
            let after = &value[pos + 3..];
            let authority = after
                .split(|c: char| matches!(c, '/' | '?' | '#') || c.is_whitespace())
                .next()
                .unwrap_or("");
            let host = authority.rsplit('@').next().unwrap_or("");
            format!("{key}:{}://{host}/***", &value[..pos])
        }
        None => line.to_string(),
    }
}

fn expand(
    input: &str,
    base: &Path,
    encode_in: Option<std::ops::Range<usize>>,
) -> Result<String, String> {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let offset = input.len() - rest.len() + pos;
        let encode = encode_in.as_ref().is_some_and(|r| r.contains(&offset));
        let push = |out: &mut String, value: &str| {
            if encode {
                out.push_str(&encode_userinfo(value));
            } else {
                out.push_str(value);
            }
        };
        let tail = &rest[pos..];
        if let Some(after) = tail.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
        } else if let Some(after) = tail.strip_prefix("${") {
            let end = after.find('}').ok_or_else(|| {
                "unterminated `${`: expected `${NAME}` or `${file:PATH}`".to_string()
            })?;
            let key = &after[..end];
            if let Some(path) = key.strip_prefix("file:") {
                let path = base.join(path.trim());
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| format!("cannot read secret file {}: {e}", path.display()))?;
                push(&mut out, text.trim_end_matches(['\r', '\n']));
            } else {
                let name = key.trim();
                let valid = !name.is_empty()
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    && !name.starts_with(|c: char| c.is_ascii_digit());
                if !valid {
                    return Err(format!(
                        "`${{{key}}}` is not a valid reference: expected `${{NAME}}` or `${{file:PATH}}`"
                    ));
                }
                let value = std::env::var(name)
                    .map_err(|_| format!("environment variable {name} is not set"))?;
                push(&mut out, &value);
            }
            rest = &after[end + 1..];
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_env_file_and_escape() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pw"), "s3cr$t\n").unwrap();
        // SAFETY: tests in this module do not read this variable concurrently.
        unsafe { std::env::set_var("OW_TEST_HOST", "db.local") };
        let got = expand_secrets(
            "postgres://u:${file:pw}@${OW_TEST_HOST}/x?a=$${b}&c=$5",
            dir.path(),
        )
        .unwrap();
        assert_eq!(got, "postgres://u:s3cr$t@db.local/x?a=${b}&c=$5");
    }

    #[test]
    fn a_password_in_the_userinfo_is_encoded_and_a_whole_url_is_not() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pw"), "p@ss/w#rd?:%x\n").unwrap();
        let got = expand_url_secrets(
            "postgres://orderwatch:${file:pw}@db.local:5432/shop",
            dir.path(),
        )
        .unwrap();
        assert_eq!(
            got,
            "postgres://orderwatch:p%40ss%2Fw%23rd%3F%3A%25x@db.local:5432/shop"
        );
        std::fs::write(dir.path().join("url"), "postgres://u:p@h/db\n").unwrap();
        assert_eq!(
            expand_url_secrets("${file:url}", dir.path()).unwrap(),
            "postgres://u:p@h/db"
        );
        // A reference in the path or query is not userinfo.
        assert_eq!(
            expand_url_secrets("postgres://u@h/${file:pw}", dir.path()).unwrap(),
            "postgres://u@h/p@ss/w#rd?:%x"
        );
    }

    #[test]
    fn lines_with_secrets_are_shown_without_them() {
        assert_eq!(
            redact_line("    urll: postgres://orderwatch:Secr3t@db/shop"),
            "    urll: postgres://db/***"
        );
        assert_eq!(
            redact_line("    webhok_url: https://hooks.slack.com/services/T0/B0/XyZ"),
            "    webhok_url: https://hooks.slack.com/***"
        );
        assert_eq!(
            redact_line("    smtp: { username: u, password: hunter2 }"),
            "    smtp: ***"
        );
        assert_eq!(
            redact_line("      bot_tokn: 123:ABC"),
            "      bot_tokn: ***"
        );
        assert_eq!(redact_line("    password: hunter2"), "    password: ***");
        assert_eq!(
            redact_line("    status: SUBMITTED"),
            "    status: SUBMITTED"
        );
    }

    #[test]
    fn urls_lose_their_passwords() {
        assert_eq!(
            redact_urls(
                "POST http://am:hunter2@127.0.0.1:9093/api/v2/alerts failed; see https://x.example/y"
            ),
            "POST http://am:***@127.0.0.1:9093/api/v2/alerts failed; see https://x.example/y"
        );
        assert_eq!(redact_urls("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(
            redact_urls("error for postgres://u:ab/cd#e@db/x: refused"),
            "error for postgres://u:***@db/x: refused"
        );
        assert_eq!(redact_urls("no url"), "no url");
    }

    #[test]
    fn missing_variable_and_file_are_named() {
        let e = expand_secrets("${OW_DEFINITELY_UNSET_VAR}", Path::new("/")).unwrap_err();
        assert!(e.contains("OW_DEFINITELY_UNSET_VAR"), "{e}");
        let e = expand_secrets("${file:/nonexistent/pw}", Path::new("/")).unwrap_err();
        assert!(e.contains("/nonexistent/pw"), "{e}");
        assert!(expand_secrets("${bad name}", Path::new("/")).is_err());
        assert!(expand_secrets("${OPEN", Path::new("/")).is_err());
    }
}
