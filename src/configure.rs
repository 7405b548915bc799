//! Loading a configuration the daemon may run: config reads the files and runs its own
//! checks, then each component checks what only it can (today notify: channel templates in
//! their escaping, matchers, the route tree, mute windows). Every command, the reload and the
//! demo load through here, so all of them refuse the same configs and report every problem
//! of both at once, each with file, line and column.
//!
//! It sits above config and the components it asks, and below everything that loads.

use std::path::Path;

use crate::config::{self, ConfigError, Loaded, Read};

/// Loads the main file at `path` and every rule file it names, and checks all of it.
pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
    checked(config::read(path)?)
}

/// Like [`load`], with the main file's text given (rule files are still read from disk).
pub fn load_str(path: &Path, text: &str) -> Result<Loaded, ConfigError> {
    checked(config::read_str(path, text)?)
}

fn checked(read: Read) -> Result<Loaded, ConfigError> {
    let Read {
        mut loaded,
        base,
        mut problems,
        whole,
    } = read;
    // On files with an entry blanked out to read on, a component would judge a config the
    // user did not write: its checks wait for the parse problems to be fixed.
    if whole {
        problems.extend(crate::notify::check(
            &loaded.path,
            &base,
            &mut loaded.config,
        ));
    }
    if problems.is_empty() {
        Ok(loaded)
    } else {
        Err(ConfigError { problems })
    }
}
