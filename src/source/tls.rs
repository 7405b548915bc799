//! TLS for PostgreSQL: libpq's parameters are read in `config::pgurl` and applied by the
//! crate's one TLS module ([`crate::tls`]).

pub use crate::tls::ensure_crypto_provider;
