//! Configuration: the main YAML file and the rule files it names.
//!
//! Config owns every config struct: `model` holds the serde types (what users write) and
//! `receivers` those of the direct channels, routes, inhibit rules and time intervals. `load`
//! reads files, expands secrets and turns every problem into a [`ConfigError`] that names file,
//! line and column (`problem`, which `validate` and `web` report through too), and `validate`
//! checks what serde cannot (references between files, identifiers, durations). What needs a
//! component's code (notify's templates, matchers, the route tree) that component checks;
//! `configure::load` runs both, so load through it: [`read`] alone is a config not yet
//! checked.

mod duration;
mod load;
mod model;
mod pgurl;
mod problem;
mod receivers;
mod secret;
mod sql;
mod validate;
mod web;

pub use duration::{Dur, MAX_DURATION};
pub use load::{Loaded, Read, default_config_path, read, read_str};
pub use model::*;
pub use pgurl::{PgTls, RootCert, SslMode, split_tls};
pub use problem::{ConfigError, Problem};
pub use receivers::*;
pub use secret::{expand_secrets, expand_url_secrets, redact_urls};
pub use sql::{check_read_only_select, without_trailing_semicolon};
pub use validate::parse_network;
pub use web::{ALLOWED_HEADERS, ClientAuth, TlsMaterial, Web, WebConfig, load_web};

/// Rule names orderwatch uses for its own alerts (`SourceDown`, `SourceStale`); a rule file
/// may not take them.
pub const RESERVED_RULE_NAMES: &[&str] = &["source_down", "source_stale", "rule_failing"];
