//! What keeps an alert from being sent: silences made through the API ([`silence`]) and the
//! config's inhibit rules ([`inhibit`]).

pub mod inhibit;
pub mod silence;
