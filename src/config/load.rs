//! Reading the main file and the rule files; every problem becomes a [`ConfigError`] entry
//! with file, line and column.

use std::path::{Path, PathBuf};

use super::model::{Config, RuleConfig, RuleFile, RuleKind};
use super::problem::{ConfigError, Problem, parse_all};
use super::validate;

/// A loaded, validated configuration: the main file and every rule with the file it came from.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// Path of the main file.
    pub path: PathBuf,
    /// The main file (source URLs already have their secrets expanded).
    pub config: Config,
    /// Every rule, in file order.
    pub rules: Vec<(PathBuf, RuleConfig)>,
    /// Things worth telling the user that are not errors (a glob matching no file).
    pub warnings: Vec<String>,
    /// The web config (`web_config_file`, or `--web.config.file` through [`Loaded::with_web`]):
    /// TLS, basic-auth users, headers. Empty when none is given.
    pub web: super::web::Web,
    /// The `--web.config.file` given on the command line, re-applied on every reload.
    pub web_override: Option<PathBuf>,
}

impl Loaded {
    /// Replaces the web config with the file at `path` (`--web.config.file`).
    pub fn with_web(mut self, path: &Path) -> Result<Loaded, ConfigError> {
        self.web = super::web::load_web(path)?;
        self.web_override = Some(path.to_path_buf());
        Ok(self)
    }
}

/// `-c`, else `$ORDERWATCH_CONFIG`, else `/etc/orderwatch/orderwatch.yaml`.
pub fn default_config_path(cli: Option<PathBuf>) -> PathBuf {
    cli.or_else(|| std::env::var_os("ORDERWATCH_CONFIG").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/etc/orderwatch/orderwatch.yaml"))
}

/// A configuration as config itself reads and checks it: the main file and every rule file it
/// names parsed, config's own checks run. `problems` lists what those checks found;
/// `configure::load` adds what the components check (notify's templates, matchers and route
/// tree) and refuses the whole if either found anything. Only a main file that cannot be read
/// or parsed stops here, with [`ConfigError`].
#[derive(Debug)]
pub struct Read {
    /// The configuration (not yet valid while `problems` is not empty).
    pub loaded: Loaded,
    /// The folder relative paths in the main file are resolved against.
    pub base: PathBuf,
    /// Every problem config's own checks found, each with file, line and column.
    pub problems: Vec<Problem>,
    /// Whether every file parsed whole (only unknown keys refused): the components' checks
    /// then judge what the files say, not files with an entry missing.
    pub whole: bool,
}

/// Reads the main file at `path` and every rule file it names, and runs config's own checks.
pub fn read(path: &Path) -> Result<Read, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        problems: vec![Problem {
            file: path.to_path_buf(),
            line: 0,
            column: 0,
            message: format!("cannot read the config file: {e}"),
        }],
    })?;
    read_str(path, &text)
}

/// Like [`read`], with the main file's text given (rule files are still read from disk).
pub fn read_str(path: &Path, text: &str) -> Result<Read, ConfigError> {
    // Past a refused entry the parse goes on (`parse_all`), so one run lists every misspelt
    // key; the checks that follow run only on files that parsed whole, where they judge what
    // the file says and not a file with an entry missing.
    let main = parse_all::<Config>(path, text);
    let mut problems = main.problems;
    let Some(mut config) = main.value else {
        return Err(ConfigError { problems });
    };
    let mut whole = main.whole;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    if whole {
        problems.extend(validate::config(path, &base, &mut config));
    }

    let mut rules = Vec::new();
    let mut warnings = Vec::new();
    for pattern in &config.rule_files {
        let full = base.join(pattern);
        let matches = glob::glob(&full.to_string_lossy())
            .map(|g| g.count())
            .unwrap_or(0);
        if matches == 0 && pattern.contains(['*', '?', '[']) {
            warnings.push(format!(
                "{}: rule_files pattern {pattern:?} matches no file ({})",
                path.display(),
                full.display()
            ));
        }
    }
    if config.rule_files.is_empty() {
        warnings.push(format!(
            "{}: rule_files is empty: no rules will run",
            path.display()
        ));
    }
    for (file, result) in rule_files(path, &base, &config) {
        match result {
            Ok(text) => {
                let parsed = parse_all::<RuleFile>(&file, &text);
                problems.extend(parsed.problems);
                whole &= parsed.whole;
                if let Some(rf) = parsed.value {
                    rules.extend(rf.rules.into_iter().map(|r| (file.clone(), r)));
                }
            }
            Err(p) => problems.push(p),
        }
    }
    if whole {
        problems.extend(validate::rules(&config, &rules));
    }
    // Link templates go to every order rule that does not set the same annotation itself
    // (validated once, in the main file, where they are written).
    for (_, r) in rules.iter_mut() {
        if matches!(r.kind, RuleKind::Stuck | RuleKind::Missing) {
            for (k, t) in &config.links {
                r.annotations.entry(k.clone()).or_insert_with(|| t.clone());
            }
        }
    }
    let mut web = super::web::Web::default();
    if let Some(w) = &config.web_config_file {
        match super::web::load_web(&base.join(&w.value)) {
            Ok(loaded) => web = loaded,
            Err(e) => problems.extend(e.problems),
        }
    }
    Ok(Read {
        loaded: Loaded {
            path: path.to_path_buf(),
            config,
            rules,
            warnings,
            web,
            web_override: None,
        },
        base,
        problems,
        whole,
    })
}

/// Expands `rule_files` globs relative to the main file; a pattern without wildcards must exist.
fn rule_files(
    main: &Path,
    base: &Path,
    config: &Config,
) -> Vec<(PathBuf, Result<String, Problem>)> {
    let mut out = Vec::new();
    for pattern in &config.rule_files {
        let full = base.join(pattern);
        let full_str = full.to_string_lossy().to_string();
        let problem = |message: String| Problem {
            file: main.to_path_buf(),
            line: 0,
            column: 0,
            message,
        };
        let paths = match glob::glob(&full_str) {
            Ok(paths) => paths,
            Err(e) => {
                out.push((
                    full,
                    Err(problem(format!("rule_files: bad glob {pattern:?}: {e}"))),
                ));
                continue;
            }
        };
        let mut matched: Vec<PathBuf> = paths.filter_map(Result::ok).collect();
        matched.sort();
        if matched.is_empty() && !pattern.contains(['*', '?', '[']) {
            out.push((
                full.clone(),
                Err(problem(format!(
                    "rule_files: {} does not exist",
                    full.display()
                ))),
            ));
        }
        for p in matched {
            let text = std::fs::read_to_string(&p).map_err(|e| Problem {
                file: p.clone(),
                line: 0,
                column: 0,
                message: format!("cannot read rule file: {e}"),
            });
            out.push((p, text));
        }
    }
    out
}
