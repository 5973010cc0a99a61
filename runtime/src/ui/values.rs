//! JSON values as HTML a person reads: records as definition lists, lists
//! as numbered lists, scalars as text, every string escaped. What a reviewer
//! decides on (an evaluation's metrics) is shown this way, not as raw JSON.

use serde_json::Value;

/// How deep a value is drawn as nested lists before the rest is shown as JSON.
const MAX_DEPTH: usize = 6;
/// How many elements of a list, or fields of a record, are drawn.
const MAX_ITEMS: usize = 50;

/// `s` with `&`, `<`, `>`, `"` and `'` escaped for HTML text and attributes.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `v` as escaped HTML.
pub fn to_html(v: &Value) -> String {
    let mut out = String::new();
    write(&mut out, v, 0);
    out
}

fn write(out: &mut String, v: &Value, depth: usize) {
    match v {
        Value::Null => out.push_str("<span class=\"none\">none</span>"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            out.push_str("<span class=\"num\">");
            out.push_str(&escape(&n.to_string()));
            out.push_str("</span>");
        }
        Value::String(s) => out.push_str(&escape(s)),
        _ if depth >= MAX_DEPTH => {
            out.push_str("<code>");
            out.push_str(&escape(&v.to_string()));
            out.push_str("</code>");
        }
        Value::Array(items) if items.is_empty() => out.push_str("<span class=\"none\">[]</span>"),
        Value::Array(items) => {
            out.push_str("<ol class=\"value\" start=\"0\">");
            for item in items.iter().take(MAX_ITEMS) {
                out.push_str("<li>");
                write(out, item, depth + 1);
                out.push_str("</li>");
            }
            if items.len() > MAX_ITEMS {
                out.push_str(&format!(
                    "<li class=\"none\">… {} more</li>",
                    items.len() - MAX_ITEMS
                ));
            }
            out.push_str("</ol>");
        }
        Value::Object(fields) if fields.is_empty() => {
            out.push_str("<span class=\"none\">{}</span>")
        }
        Value::Object(fields) => {
            out.push_str("<dl class=\"value\">");
            for (k, v) in fields.iter().take(MAX_ITEMS) {
                out.push_str("<dt>");
                out.push_str(&escape(k));
                out.push_str("</dt><dd>");
                write(out, v, depth + 1);
                out.push_str("</dd>");
            }
            if fields.len() > MAX_ITEMS {
                out.push_str(&format!(
                    "<dt class=\"none\">…</dt><dd class=\"none\">{} more fields</dd>",
                    fields.len() - MAX_ITEMS
                ));
            }
            out.push_str("</dl>");
        }
    }
}

/// A flow version (`sha256:…`) shortened for a table.
pub fn short_version(v: &str) -> String {
    let hex = v.strip_prefix("sha256:").unwrap_or(v);
    hex.chars().take(10).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strings_are_escaped_everywhere() {
        let html = to_html(&json!({"<k>": ["<script>\"x\"</script>", 'a'.to_string()]}));
        assert!(!html.contains("<script>"), "{html}");
        assert!(!html.contains("<k>"), "{html}");
        assert!(html.contains("&lt;script&gt;&quot;x&quot;"), "{html}");
    }

    #[test]
    fn records_and_lists_nest() {
        let html = to_html(&json!({"metrics": {"auc": 0.91}, "tags": []}));
        assert_eq!(
            html,
            "<dl class=\"value\"><dt>metrics</dt><dd><dl class=\"value\"><dt>auc</dt><dd><span class=\"num\">0.91</span></dd></dl></dd><dt>tags</dt><dd><span class=\"none\">[]</span></dd></dl>"
        );
    }

    #[test]
    fn deep_and_long_values_are_cut() {
        let mut v = json!(1);
        for _ in 0..20 {
            v = json!([v]);
        }
        assert!(to_html(&v).contains("<code>"));
        let long = Value::Array((0..200).map(|i| json!(i)).collect());
        assert!(to_html(&long).contains("150 more"));
    }
}
