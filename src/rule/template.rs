//! Annotation templates (minijinja) over a finding: `order_id`, `status`, `age`,
//! `age_seconds`, `entered_at`, `older_than`, `rule`, `source`, `severity`, `labels`.

use std::collections::BTreeMap;

use minijinja::Environment;
use serde_saphyr::Spanned;

/// The compiled annotation templates of one rule.
pub struct Annotations {
    env: Environment<'static>,
    keys: Vec<String>,
}

impl std::fmt::Debug for Annotations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Annotations")
            .field("keys", &self.keys)
            .finish()
    }
}

impl Annotations {
    /// Compiles the templates; errors name the annotation.
    pub fn compile(
        rule: &str,
        templates: &BTreeMap<String, Spanned<String>>,
    ) -> Result<Self, String> {
        let mut env = Environment::new();
        // Alert text is plain text, never HTML: no auto-escaping.
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Chainable);
        let mut keys = Vec::new();
        for (k, t) in templates {
            env.add_template_owned(k.clone(), t.value.clone())
                .map_err(|e| format!("rule {rule}: annotation {k}: {e}"))?;
            keys.push(k.clone());
        }
        Ok(Annotations { env, keys })
    }

    /// Renders every annotation for `ctx` with an undefined value as an error (the daemon
    /// renders it empty): `check` runs this against a sample order, so `{{ channel }}` written
    /// for `{{ labels.channel }}` is caught before every alert carries an empty field.
    /// Returns (annotation, error) for each that fails.
    pub fn strict_errors(&self, ctx: &minijinja::Value) -> Vec<(String, String)> {
        let mut env = self.env.clone();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        self.keys
            .iter()
            .filter_map(|k| {
                let t = env.get_template(k).ok()?;
                let e = t.render(ctx).err()?;
                // Name the variables the sample lacks (`channel`, `labels.chanel`).
                let missing: Vec<String> = {
                    let mut v: Vec<String> = t
                        .undeclared_variables(true)
                        .into_iter()
                        .filter(|name| {
                            let mut parts = name.split('.');
                            let top = parts.next().unwrap_or_default();
                            let mut value = ctx.get_attr(top).unwrap_or_default();
                            if value.is_undefined() {
                                return true;
                            }
                            for p in parts {
                                value = value.get_attr(p).unwrap_or_default();
                                if value.is_undefined() {
                                    return true;
                                }
                            }
                            false
                        })
                        .collect();
                    v.sort();
                    v
                };
                let why = if missing.is_empty() {
                    e.to_string()
                } else {
                    format!("undefined: {}", missing.join(", "))
                };
                Some((k.clone(), why))
            })
            .collect()
    }

    /// Renders every annotation for `ctx`; a template that fails at render time yields its
    /// error text instead of dropping the alert.
    pub fn render(&self, ctx: &minijinja::Value) -> BTreeMap<String, String> {
        self.keys
            .iter()
            .map(|k| {
                let text = self
                    .env
                    .get_template(k)
                    .and_then(|t| t.render(ctx))
                    .unwrap_or_else(|e| format!("(template error: {e})"));
                (k.clone(), text)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_finding_fields() {
        let loc = serde_saphyr::Location::UNKNOWN;
        let mut t = BTreeMap::new();
        t.insert(
            "summary".to_string(),
            Spanned::new(
                "Order {{ order_id }} ({{ labels.order_type }}) {{ status }} for {{ age }} <b>"
                    .into(),
                loc,
                loc,
            ),
        );
        let a = Annotations::compile("r", &t).unwrap();
        let ctx = minijinja::context! { order_id => "JW-1", status => "SUBMITTED", age => "1h 02m",
        labels => minijinja::context!{ order_type => "ring" } };
        assert_eq!(
            a.render(&ctx)["summary"],
            "Order JW-1 (ring) SUBMITTED for 1h 02m <b>"
        );
    }
}
