//! `/runbooks`: `docs/runbooks.md`, embedded, as one HTML page with an anchor per alert name
//! (`#stuckorder`), so every alert's `runbook_url` leads somewhere that works offline. A small
//! Markdown subset is enough: headings, paragraphs, lists, `code`, **bold**.

use std::fmt::Write;

use axum::http::header;
use axum::response::{IntoResponse, Response};

use crate::notify::template::escape_html as esc;

use crate::runbooks::RUNBOOKS_MD;

/// Inline spans of one escaped line: `code` and **bold**.
fn inline(text: &str) -> String {
    let mut out = String::new();
    for (i, part) in esc(text).split('`').enumerate() {
        if i % 2 == 1 {
            let _ = write!(out, "<code>{part}</code>");
        } else {
            for (j, p) in part.split("**").enumerate() {
                if j % 2 == 1 {
                    let _ = write!(out, "<strong>{p}</strong>");
                } else {
                    out.push_str(p);
                }
            }
        }
    }
    out
}

/// The page's HTML.
pub fn render(md: &str) -> String {
    let mut h = String::from(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>orderwatch runbooks</title><style>body{font:16px/1.5 system-ui,sans-serif;\
         max-width:48rem;margin:0 auto;padding:1rem}code{font-size:15px;overflow-wrap:anywhere}\
         h2{margin-top:2rem;border-top:1px solid #ccc;padding-top:1rem}</style></head><body>",
    );
    // Blocks are separated by blank lines; a block is a heading, a list or a paragraph.
    for block in md.split("\n\n") {
        let block = block.trim();
        if block.is_empty() {
            continue;
        }
        if let Some(t) = block.strip_prefix("## ") {
            let id = t.trim().to_ascii_lowercase();
            let _ = write!(h, "<h2 id=\"{}\">{}</h2>", esc(&id), inline(t.trim()));
        } else if let Some(t) = block.strip_prefix("# ") {
            let _ = write!(h, "<h1>{}</h1>", inline(t.trim()));
        } else if block.starts_with("- ") || block.starts_with("1. ") {
            let ordered = block.starts_with("1. ");
            h.push_str(if ordered { "<ol>" } else { "<ul>" });
            let mut item = String::new();
            let flush = |h: &mut String, item: &mut String| {
                if !item.is_empty() {
                    let _ = write!(h, "<li>{}</li>", inline(item.trim()));
                    item.clear();
                }
            };
            for line in block.lines() {
                let l = line.trim_start();
                let marker = l.strip_prefix("- ").or_else(|| {
                    l.split_once(". ")
                        .filter(|(n, _)| n.parse::<u32>().is_ok())
                        .map(|(_, r)| r)
                });
                match marker {
                    Some(rest) if !line.starts_with(' ') => {
                        flush(&mut h, &mut item);
                        item.push_str(rest);
                    }
                    _ => {
                        item.push(' ');
                        item.push_str(l);
                    }
                }
            }
            flush(&mut h, &mut item);
            h.push_str(if ordered { "</ol>" } else { "</ul>" });
        } else {
            let text: Vec<&str> = block.lines().map(str::trim).collect();
            let _ = write!(h, "<p>{}</p>", inline(&text.join(" ")));
        }
    }
    h.push_str("</body></html>");
    h
}

/// `GET /runbooks`.
pub async fn page() -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        render(RUNBOOKS_MD),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_alert_name_has_an_anchor_and_text_is_escaped() {
        let html = render(RUNBOOKS_MD);
        for name in [
            "stuckorder",
            "lostorder",
            "statusmismatch",
            "sourcedown",
            "sourcestale",
            "http5xxratiohigh",
            "slowdbquery",
            "sqlcheck",
            "ordersstuck",
            "orderwatchdown",
        ] {
            assert!(html.contains(&format!("<h2 id=\"{name}\">")), "{name}");
        }
        let h = render("## A\n\n- `<b>` **x**\n  more\n- y\n\n1. one\n2. two");
        assert!(
            h.contains("<li><code>&lt;b&gt;</code> <strong>x</strong> more</li><li>y</li>"),
            "{h}"
        );
        assert!(h.contains("<ol><li>one</li><li>two</li></ol>"), "{h}");
    }
}
