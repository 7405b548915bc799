//! Proves the layering of `src/` holds: no module uses one of a higher layer (`LAYERS`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use orderwatch::LAYERS;

/// Uses that cross the layers on purpose, each with its reason. Keep this list short.
const ALLOWED: &[(&str, &str, &str)] = &[];

/// The layer of a top-level module.
fn layer(module: &str) -> Option<usize> {
    LAYERS.iter().position(|(_, mods)| mods.contains(&module))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The module path of a file under `src/` (`src/notify/email.rs` → `[notify, email]`).
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap();
    let mut parts: Vec<String> = rel
        .iter()
        .map(|c| c.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().unwrap();
    let stem = last.trim_end_matches(".rs");
    if stem != "mod" && stem != "lib" {
        parts.push(stem.to_string());
    }
    parts
}

/// The line without a `//` comment (doc links are not uses) and without string literals'
/// contents (a `"crate::x"` in a message is not a use either).
fn code_of(line: &str) -> String {
    let mut out = String::new();
    let mut in_str = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if in_str {
            if c == '\\' {
                chars.next();
            } else if c == '"' {
                in_str = false;
                out.push('"');
            }
            continue;
        }
        if c == '"' {
            in_str = true;
            out.push('"');
        } else if c == '/' && chars.peek() == Some(&'/') {
            break;
        } else {
            out.push(c);
        }
    }
    out
}

/// The top-level module each `crate::` or `super::` path of `code` names, read from a file
/// at `path` inside `depth` inline modules.
fn targets(code: &str, path: &[String], depth: usize) -> Vec<String> {
    let mut found = Vec::new();
    let bytes = code.as_bytes();
    for start in (0..code.len()).filter(|&i| code.is_char_boundary(i)) {
        if start > 0
            && (bytes[start - 1].is_ascii_alphanumeric() || matches!(bytes[start - 1], b'_' | b':'))
        {
            continue;
        }
        let rest = &code[start..];
        let (mut here, mut tail) = if let Some(t) = rest.strip_prefix("crate::") {
            (Vec::new(), t)
        } else if rest.starts_with("super::") {
            // `super::` counts from the module the path is written in: the file's module
            // and the inline modules (`mod tests { … }`) it sits in.
            let mut here: Vec<String> = path.to_vec();
            here.extend(std::iter::repeat_n(String::from("<inline>"), depth));
            let mut t = rest;
            while let Some(r) = t.strip_prefix("super::") {
                here.pop();
                t = r;
            }
            here.retain(|m| m != "<inline>");
            (here, t)
        } else {
            continue;
        };
        if here.is_empty() {
            let name: String = tail
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if name.is_empty() {
                // `crate::{a, b}`: every name in the braces.
                if let Some(inner) = tail.strip_prefix('{') {
                    let inner = &inner[..inner.find('}').unwrap_or(inner.len())];
                    for n in inner.split(',') {
                        let n: String = n
                            .trim()
                            .chars()
                            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                            .collect();
                        if !n.is_empty() {
                            found.push(n);
                        }
                    }
                }
                continue;
            }
            tail = "";
            here.push(name);
        }
        let _ = tail;
        found.push(here[0].clone());
    }
    found
}

#[test]
fn no_module_uses_one_of_a_higher_layer() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut unknown = BTreeSet::new();
    let mut wrong = Vec::new();
    let mut allowed_seen = BTreeSet::new();
    let mut uses = 0;
    for file in &files {
        let path = module_path(&src, file);
        let Some(top) = path.first() else { continue };
        if top == "main" {
            continue; // the binary: above every layer
        }
        let Some(own) = layer(top) else {
            unknown.insert(top.clone());
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let code: Vec<String> = lines.iter().map(|l| code_of(l)).collect();
        // Inline modules opened (`mod name {`) and the brace depth each opened at, per line.
        let (mut opened, mut braces): (Vec<i64>, i64) = (Vec::new(), 0);
        let mut depth = Vec::new();
        for c in &code {
            depth.push(opened.len());
            let t = c.trim_start();
            let t = t.strip_prefix("pub ").unwrap_or(t);
            if t.starts_with("mod ") && t.trim_end().ends_with('{') {
                opened.push(braces);
            }
            braces += c.matches('{').count() as i64 - c.matches('}').count() as i64;
            while opened.last().is_some_and(|&at| braces <= at) {
                opened.pop();
            }
        }
        for n in 0..code.len() {
            // A `use crate::{` list may go on over the next lines: read them with it.
            let mut stmt = code[n].clone();
            if stmt.contains("::{") && !stmt.contains('}') {
                for more in &code[n + 1..] {
                    stmt.push(' ');
                    stmt.push_str(more);
                    if more.contains('}') {
                        break;
                    }
                }
            }
            let mut seen = BTreeSet::new();
            for target in targets(&stmt, &path, depth[n]) {
                if !seen.insert(target.clone()) {
                    continue;
                }
                uses += 1;
                if target == *top {
                    continue;
                }
                let Some(theirs) = layer(&target) else {
                    unknown.insert(target);
                    continue;
                };
                if theirs > own {
                    let rel = file.strip_prefix(&src).unwrap().display().to_string();
                    if ALLOWED
                        .iter()
                        .any(|(from, to, _)| rel.starts_with(from) && target == *to)
                    {
                        allowed_seen.insert((rel, target));
                        continue;
                    }
                    wrong.push(format!(
                        "src/{rel}:{}: {top} ({}) uses {target} ({}): {}",
                        n + 1,
                        LAYERS[own].0,
                        LAYERS[theirs].0,
                        lines[n].trim()
                    ));
                }
            }
        }
    }
    for (_, mods) in LAYERS {
        for m in *mods {
            assert!(
                src.join(format!("{m}.rs")).exists() || src.join(m).join("mod.rs").exists(),
                "LAYERS in src/lib.rs names {m}, which is not a module of src/"
            );
        }
    }
    assert!(
        unknown.is_empty(),
        "modules missing from LAYERS in src/lib.rs: {unknown:?}"
    );
    assert!(
        uses > 300,
        "only {uses} crate:: and super:: paths read: is the reader broken?"
    );
    assert!(
        wrong.is_empty(),
        "{} uses reach a higher layer:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    for (from, to, why) in ALLOWED {
        assert!(
            allowed_seen
                .iter()
                .any(|(f, t)| f.starts_with(from) && t == to),
            "the exception {from} → {to} ({why}) is no longer needed: remove it"
        );
    }
}

#[test]
fn the_reader_sees_inline_and_nested_paths() {
    let path = vec!["notify".to_string(), "email".to_string()];
    assert_eq!(
        targets("let r = crate::http::router(x);", &path, 0),
        ["http"]
    );
    assert_eq!(
        targets("use crate::{engine, labels::X};", &path, 0),
        ["engine", "labels"]
    );
    assert_eq!(
        targets("use super::channel::Deliver;", &path, 0),
        ["notify"]
    );
    assert_eq!(
        targets("use super::super::engine::X;", &path, 0),
        ["engine"]
    );
    // Inside `mod tests { … }`, one `super::` is the file's own module.
    assert_eq!(targets("use super::*;", &path, 1), ["notify"]);
    assert_eq!(
        targets("my_crate::engine::x", &path, 0),
        Vec::<String>::new()
    );
    assert_eq!(
        code_of(r#"let s = "crate::engine"; // crate::http"#),
        r#"let s = ""; "#
    );
}
