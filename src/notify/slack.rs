//! The `slack` channel (being written).
