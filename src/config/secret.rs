//! `${ENV}` and `${file:PATH}` in secret-bearing values (database URLs, tokens), so secrets
//! stay out of the config file. `$${` writes a literal `${`.

use std::path::Path;

/// Expands `${NAME}` from the environment and `${file:PATH}` from a file (trailing newline
/// trimmed; relative paths are relative to `base`). Errors name the variable or file but never
/// include the value.
pub fn expand_secrets(input: &str, base: &Path) -> Result<String, String> {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
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
                out.push_str(text.trim_end_matches(['\r', '\n']));
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
                out.push_str(&value);
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
    fn missing_variable_and_file_are_named() {
        let e = expand_secrets("${OW_DEFINITELY_UNSET_VAR}", Path::new("/")).unwrap_err();
        assert!(e.contains("OW_DEFINITELY_UNSET_VAR"), "{e}");
        let e = expand_secrets("${file:/nonexistent/pw}", Path::new("/")).unwrap_err();
        assert!(e.contains("/nonexistent/pw"), "{e}");
        assert!(expand_secrets("${bad name}", Path::new("/")).is_err());
        assert!(expand_secrets("${OPEN", Path::new("/")).is_err());
    }
}
