//! The `mattermost` channel (being written).
