//! The `telegram` channel (being written).
