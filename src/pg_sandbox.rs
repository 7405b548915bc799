//! A throwaway PostgreSQL cluster built from the system's own server binaries.
//!
//! `orderwatch demo`, the integration tests and the benchmark need a real PostgreSQL without
//! touching any server the machine already runs. [`PgSandbox::start`] runs `initdb` into a
//! fresh temporary directory and starts `postgres` on a random free port of 127.0.0.1, with
//! its Unix socket inside that directory and durability switched off (the data is thrown
//! away, so `fsync` only costs time).
//!
//! Why our own code and not a crate: crates that download PostgreSQL builds do not work
//! offline, and pgtemp shells out to `sudo`, which the machines we run on may not have. The
//! whole thing is `initdb` + `pg_ctl`, so it is done here with `std::process` only.
//!
//! Root: PostgreSQL refuses to run as root, so when we are root every server-side command
//! (`initdb`, `pg_ctl`) runs as the `postgres` OS user through `runuser` (or `setpriv`), and
//! the temporary directory is handed to that user.
//!
//! Cleanup: [`Drop`] stops the server and removes the directory. Drop alone is not enough: a
//! cluster kept in a `static` (one per test binary) is never dropped, and a panic that aborts
//! or a SIGKILL skips destructors. So every sandbox also has a *guardian*: a detached `sh`
//! in its own process group that holds the read end of a pipe whose write end only this
//! process has. When this process ends, however it ends, the kernel closes the write end, the
//! guardian's `read` returns, and it stops the server and deletes the directory. A pipe
//! rather than polling `kill -0 PID`: it reacts at once, and a dead process left as a zombie
//! or a recycled PID cannot fool it.

use std::fs;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

/// The hint every "binaries missing" error carries, so the fix is one copy-paste away.
const INSTALL_HINT: &str = "install the PostgreSQL server: apt-get install -y postgresql";

/// How many random ports to try when another process takes ours between picking and binding.
const PORT_ATTEMPTS: usize = 5;

/// Lines of the server log quoted in a start failure: enough for the FATAL and its context.
const LOG_TAIL_LINES: usize = 30;

/// Errors starting, stopping or using the sandbox.
///
/// Messages name the command or file involved; missing binaries carry the install hint
/// ("install the PostgreSQL server: apt-get install -y postgresql") and a failed start
/// carries the tail of the server log, because that is where PostgreSQL says why.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// No directory holds all of `initdb`, `pg_ctl` and `postgres`.
    #[error(
        "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found in {searched}; {INSTALL_HINT}"
    )]
    BinariesNotFound {
        /// Where we looked, for the message.
        searched: String,
    },
    /// We are root, so the server must run as `postgres`, but that user or the tool to switch
    /// to it is missing.
    #[error(
        "running as root needs the `postgres` OS user and `runuser` or `setpriv`: {detail}; {INSTALL_HINT}"
    )]
    NoPostgresUser {
        /// What exactly was missing.
        detail: String,
    },
    /// A file-system or process-spawning operation failed.
    #[error("{what}: {source}")]
    Io {
        /// The operation, with the path or program it was about.
        what: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A helper command (`initdb`, `createdb`, `pg_ctl stop`) ran but failed.
    #[error("`{command}` failed ({status}): {output}")]
    Command {
        /// The command line, for the message.
        command: String,
        /// Its exit status.
        status: String,
        /// Its stdout and stderr, trimmed.
        output: String,
    },
    /// `pg_ctl start` failed; the server log says why.
    #[error(
        "PostgreSQL did not start on 127.0.0.1:{port} (data dir {data_dir}); server log tail:\n{log_tail}"
    )]
    Start {
        /// The port it was told to listen on.
        port: u16,
        /// The data directory, for looking around by hand.
        data_dir: String,
        /// The last lines of the server log.
        log_tail: String,
    },
}

/// Builds a `map_err` closure that wraps an `io::Error` with what we were doing.
fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> SandboxError {
    let what = what.into();
    move |source| SandboxError::Io { what, source }
}

/// Finds the directory holding `initdb`, `pg_ctl` and `postgres`.
///
/// Prefers the highest version under `/usr/lib/postgresql/*/bin` (Debian and Ubuntu keep the
/// server binaries there, off PATH), else the directory `pg_ctl` on PATH really lives in:
/// symlinks are resolved because a PATH entry is often a link into a versioned directory, and
/// `initdb` and `postgres` must come from that same version.
pub fn find_bin_dir() -> Result<PathBuf, SandboxError> {
    let has_all = |dir: &Path| {
        ["initdb", "pg_ctl", "postgres"]
            .iter()
            .all(|b| dir.join(b).is_file())
    };

    let mut versioned: Vec<(Vec<u32>, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let version: Option<Vec<u32>> = name.split('.').map(|p| p.parse().ok()).collect();
            let bin = entry.path().join("bin");
            version.filter(|_| has_all(&bin)).map(|v| (v, bin))
        })
        .collect();
    versioned.sort();
    if let Some((_, bin)) = versioned.pop() {
        return Ok(bin);
    }

    if let Some(pg_ctl) = which("pg_ctl")
        && let Ok(real) = fs::canonicalize(&pg_ctl)
        && let Some(dir) = real.parent()
        && has_all(dir)
    {
        return Ok(dir.to_path_buf());
    }

    Err(SandboxError::BinariesNotFound {
        searched: "/usr/lib/postgresql/*/bin and PATH".to_string(),
    })
}

/// The first executable file called `name` in a PATH directory (or the usual sbin
/// directories, which a non-login root shell may lack).
fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// How to run a server-side command as the `postgres` OS user when we are root.
#[derive(Debug, Clone)]
struct RunAs {
    /// The program and arguments put before the real command, e.g. `runuser -u postgres --`.
    prefix: Vec<String>,
    uid: u32,
    gid: u32,
}

/// `Some` when we are root (the server refuses to run as root), `None` otherwise.
fn run_as() -> Result<Option<RunAs>, SandboxError> {
    if id(&["-u"])? != 0 {
        return Ok(None);
    }
    let no_user = |detail: String| SandboxError::NoPostgresUser { detail };
    let uid = id(&["-u", "postgres"]).map_err(|e| no_user(format!("`id -u postgres`: {e}")))?;
    let gid = id(&["-g", "postgres"]).map_err(|e| no_user(format!("`id -g postgres`: {e}")))?;
    let prefix = if let Some(runuser) = which("runuser") {
        vec![
            runuser.display().to_string(),
            "-u".into(),
            "postgres".into(),
            "--".into(),
        ]
    } else if let Some(setpriv) = which("setpriv") {
        vec![
            setpriv.display().to_string(),
            format!("--reuid={uid}"),
            format!("--regid={gid}"),
            "--init-groups".into(),
            "--".into(),
        ]
    } else {
        return Err(no_user("neither runuser nor setpriv found".into()));
    };
    Ok(Some(RunAs { prefix, uid, gid }))
}

/// Runs `id ARGS` and parses the number it prints.
fn id(args: &[&str]) -> Result<u32, SandboxError> {
    let out = run(Command::new("id").args(args))?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .map_err(|_| SandboxError::Command {
            command: format!("id {}", args.join(" ")),
            status: "unparsable output".into(),
            output: String::from_utf8_lossy(&out.stdout).trim().to_string(),
        })
}

/// Runs a command to completion; a non-zero exit becomes [`SandboxError::Command`] with its
/// output, so the caller's message says what PostgreSQL said.
fn run(cmd: &mut Command) -> Result<Output, SandboxError> {
    let line = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ");
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(io_err(format!("running `{line}`")))?;
    if out.status.success() {
        return Ok(out);
    }
    let mut text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !stderr.trim().is_empty() {
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str(stderr.trim());
    }
    Err(SandboxError::Command {
        command: line,
        status: out.status.to_string(),
        output: text,
    })
}

/// A fresh free port on 127.0.0.1: bind port 0, read what the kernel chose, let it go. Another
/// process may take it before PostgreSQL binds it; [`PgSandbox::start`] retries in that case.
fn free_port() -> Result<u16, SandboxError> {
    let listener =
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(io_err("binding 127.0.0.1:0"))?;
    Ok(listener
        .local_addr()
        .map_err(io_err("reading a bound port"))?
        .port())
}

/// A running throwaway PostgreSQL cluster: superuser `postgres`, trust authentication, on
/// 127.0.0.1 at [`port`](Self::port). Stopped and deleted on drop, or by its guardian when
/// this process ends without dropping it (see the module docs).
#[derive(Debug)]
pub struct PgSandbox {
    bin_dir: PathBuf,
    /// The temporary root: holds `data/`, the server log and the Unix socket. `None` after drop.
    root: Option<tempfile::TempDir>,
    /// `root`'s path, kept apart so it outlives the handle during drop.
    root_path: PathBuf,
    data_dir: PathBuf,
    log_file: PathBuf,
    port: u16,
    run_as: Option<RunAs>,
    running: bool,
    /// The guardian process; its stdin is the pipe whose closing tells it we are gone.
    guardian: Option<Child>,
}

impl PgSandbox {
    /// Creates a cluster in a new temporary directory and starts it on a random free port.
    ///
    /// Takes a second or two (`initdb` dominates). Blocking: from async code, call it before
    /// the runtime's work matters or inside `spawn_blocking`.
    pub fn start() -> Result<PgSandbox, SandboxError> {
        let bin_dir = find_bin_dir()?;
        let run_as = run_as()?;
        let root = tempfile::Builder::new()
            .prefix("orderwatch-pg-")
            .tempdir()
            .map_err(io_err("creating a temporary directory"))?;
        let data_dir = root.path().join("data");
        let log_file = root.path().join("postgres.log");
        if let Some(ra) = &run_as {
            std::os::unix::fs::chown(root.path(), Some(ra.uid), Some(ra.gid)).map_err(io_err(
                format!("chown {} to postgres", root.path().display()),
            ))?;
        }
        let mut sandbox = PgSandbox {
            bin_dir,
            root_path: root.path().to_path_buf(),
            root: Some(root),
            data_dir,
            log_file,
            port: 0,
            run_as,
            running: false,
            guardian: None,
        };
        // The guardian comes first, so even a kill during initdb leaves nothing behind.
        sandbox.guardian = Some(sandbox.spawn_guardian()?);
        sandbox.init()?;

        sandbox.start_on_free_port()
    }

    /// A hot standby of `primary`: `pg_basebackup -R` (streaming replication, trust auth over
    /// 127.0.0.1, which `initdb --auth=trust` allows) into a new temporary directory, started
    /// on its own free port. Blocking, like [`PgSandbox::start`].
    pub fn start_standby(primary: &PgSandbox) -> Result<PgSandbox, SandboxError> {
        let root = tempfile::Builder::new()
            .prefix("orderwatch-pg-standby-")
            .tempdir()
            .map_err(io_err("creating a temporary directory"))?;
        if let Some(ra) = &primary.run_as {
            std::os::unix::fs::chown(root.path(), Some(ra.uid), Some(ra.gid)).map_err(io_err(
                format!("chown {} to postgres", root.path().display()),
            ))?;
        }
        let mut sandbox = PgSandbox {
            bin_dir: primary.bin_dir.clone(),
            root_path: root.path().to_path_buf(),
            data_dir: root.path().join("data"),
            log_file: root.path().join("postgres.log"),
            root: Some(root),
            port: 0,
            run_as: primary.run_as.clone(),
            running: false,
            guardian: None,
        };
        sandbox.guardian = Some(sandbox.spawn_guardian()?);
        let port = primary.port.to_string();
        let mut cmd = sandbox.server_command("pg_basebackup");
        cmd.args(["-h", "127.0.0.1", "-p", &port, "-U", "postgres", "-D"])
            .arg(&sandbox.data_dir)
            .args(["-R", "-X", "stream", "--no-sync", "--checkpoint=fast"]);
        run(&mut cmd).map(drop)?;
        sandbox.start_on_free_port()
    }

    /// Starts the server on a random free port, trying another when a process takes the port
    /// between picking and binding it.
    fn start_on_free_port(mut self) -> Result<PgSandbox, SandboxError> {
        for attempt in 1..=PORT_ATTEMPTS {
            self.port = free_port()?;
            self.write_settings()?;
            match self.start_server() {
                Ok(()) => return Ok(self),
                Err(SandboxError::Start { log_tail, .. })
                    if attempt < PORT_ATTEMPTS && log_tail.contains("already in use") =>
                {
                    continue;
                }
                Err(e) => return Err(e),
            }
        }
        unreachable!("the last attempt returns its error")
    }

    /// The TCP port the server listens on (127.0.0.1 only).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A connection URL for database `dbname` as the superuser `postgres` (no password: trust).
    pub fn url(&self, dbname: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{dbname}", self.port)
    }

    /// A connection URL for database `dbname` as `user` (no password: trust).
    pub fn url_as(&self, user: &str, dbname: &str) -> String {
        format!("postgres://{user}@127.0.0.1:{}/{dbname}", self.port)
    }

    /// Runs `sql` in database `dbname` as the superuser, with the server's own `psql`
    /// (stopping at the first error). Blocking, like [`create_database`](Self::create_database).
    pub fn execute(&self, dbname: &str, sql: &str) -> Result<(), SandboxError> {
        let port = self.port.to_string();
        let mut cmd = self.client_command("psql");
        cmd.args([
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-U",
            "postgres",
            "-d",
            dbname,
        ])
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", sql]);
        run(&mut cmd).map(drop)
    }

    /// Turns TLS on with the server certificate and key (PEM), trusting `client_ca` for client
    /// certificates, puts `hba` lines first in `pg_hba.conf` (e.g. `hostssl all all
    /// 127.0.0.1/32 cert`), and restarts the server.
    pub fn enable_tls(
        &mut self,
        cert: &str,
        key: &str,
        client_ca: &str,
        hba: &str,
    ) -> Result<(), SandboxError> {
        let write = |name: &str, text: &str, mode: u32| -> Result<(), SandboxError> {
            use std::os::unix::fs::PermissionsExt;
            let path = self.data_dir.join(name);
            fs::write(&path, text).map_err(io_err(format!("writing {}", path.display())))?;
            fs::set_permissions(&path, fs::Permissions::from_mode(mode))
                .map_err(io_err(format!("chmod {}", path.display())))?;
            if let Some(ra) = &self.run_as {
                std::os::unix::fs::chown(&path, Some(ra.uid), Some(ra.gid))
                    .map_err(io_err(format!("chown {}", path.display())))?;
            }
            Ok(())
        };
        write("server.crt", cert, 0o644)?;
        write("server.key", key, 0o600)?;
        write("client-ca.crt", client_ca, 0o644)?;
        let conf = self.data_dir.join("orderwatch.conf");
        fs::OpenOptions::new()
            .append(true)
            .open(&conf)
            .and_then(|mut f| {
                f.write_all(
                    b"ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\nssl_ca_file = 'client-ca.crt'\n",
                )
            })
            .map_err(io_err(format!("appending to {}", conf.display())))?;
        let hba_path = self.data_dir.join("pg_hba.conf");
        let old = fs::read_to_string(&hba_path)
            .map_err(io_err(format!("reading {}", hba_path.display())))?;
        write("pg_hba.conf", &format!("{hba}\n{old}"), 0o600)?;
        self.restart()
    }

    /// The data directory (`PGDATA`) of the cluster.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The directory the server binaries come from; its `psql` matches the server's version.
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// Creates database `name` with the server's own `createdb` over TCP.
    ///
    /// A subprocess rather than a client library, so it works the same from plain code and
    /// from inside a tokio runtime (no nested runtime); it blocks for a few milliseconds.
    pub fn create_database(&self, name: &str) -> Result<(), SandboxError> {
        let port = self.port.to_string();
        let mut cmd = self.client_command("createdb");
        cmd.args(["-h", "127.0.0.1", "-p", &port, "-U", "postgres", "--", name]);
        run(&mut cmd).map(drop)
    }

    /// Stops the server (`pg_ctl stop -m fast`), keeping the data directory, so that
    /// [`restart`](Self::restart) brings back the same databases. Stopping a stopped sandbox
    /// is a no-op.
    pub fn stop(&mut self) -> Result<(), SandboxError> {
        if !self.running {
            return Ok(());
        }
        let mut cmd = self.server_command("pg_ctl");
        cmd.arg("stop")
            .arg("-D")
            .arg(&self.data_dir)
            .args(["-m", "fast", "-w", "-t", "60"]);
        match run(&mut cmd) {
            Ok(_) => {}
            // It died on its own (or someone else stopped it): stopped is what we wanted.
            Err(_) if !self.server_alive() => {}
            Err(e) => return Err(e),
        }
        self.running = false;
        Ok(())
    }

    /// Starts the server again on the same port and data directory (stopping it first if it
    /// runs), so tests can simulate an outage and a recovery with the same URLs.
    pub fn restart(&mut self) -> Result<(), SandboxError> {
        self.stop()?;
        self.start_server()
    }

    /// `pg_ctl status`: exit code 0 means a server runs on our data directory.
    fn server_alive(&self) -> bool {
        let mut cmd = self.server_command("pg_ctl");
        cmd.arg("status").arg("-D").arg(&self.data_dir);
        run(&mut cmd).is_ok()
    }

    /// The temporary root directory.
    fn root(&self) -> &Path {
        &self.root_path
    }

    /// A command for a server-side binary from the bin dir, run as `postgres` when we are
    /// root, in the sandbox root (a cwd the `postgres` user can enter) and without the
    /// caller's `PG*` variables (a stray `PGDATA`, `PGPORT` or `PGSSLMODE` must not redirect it).
    fn server_command(&self, binary: &str) -> Command {
        let program = self.bin_dir.join(binary);
        let mut cmd = match &self.run_as {
            Some(ra) => {
                let mut cmd = Command::new(&ra.prefix[0]);
                cmd.args(&ra.prefix[1..]).arg(program);
                cmd
            }
            None => Command::new(program),
        };
        self.sanitize(&mut cmd);
        cmd
    }

    /// A command for a client binary from the bin dir; clients may run as anyone.
    fn client_command(&self, binary: &str) -> Command {
        let mut cmd = Command::new(self.bin_dir.join(binary));
        self.sanitize(&mut cmd);
        cmd.env("PGCONNECT_TIMEOUT", "10");
        cmd
    }

    fn sanitize(&self, cmd: &mut Command) {
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("PG") {
                cmd.env_remove(key);
            }
        }
        cmd.current_dir(self.root());
    }

    /// `initdb`: superuser `postgres`, trust auth (the server only listens on 127.0.0.1 and a
    /// private socket directory), UTF8 and the C locale so sorting does not depend on the host.
    fn init(&self) -> Result<(), SandboxError> {
        let mut cmd = self.server_command("initdb");
        cmd.arg("-D").arg(&self.data_dir).args([
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
            "--locale=C",
        ]);
        run(&mut cmd).map(drop)?;
        // Our settings live in their own file, rewritten on every port attempt, so the
        // generated postgresql.conf is appended to once and never accumulates duplicates.
        let conf = self.data_dir.join("postgresql.conf");
        fs::OpenOptions::new()
            .append(true)
            .open(&conf)
            .and_then(|mut f| f.write_all(b"\ninclude 'orderwatch.conf'\n"))
            .map_err(io_err(format!("appending to {}", conf.display())))
    }

    /// Writes `orderwatch.conf`: our port and socket, and durability off because the data is
    /// thrown away. max_connections is high because tests and the benchmark open many pools.
    /// pg_stat_statements is preloaded, as on most production servers, so the slow-query
    /// rules can read it in a database that runs `CREATE EXTENSION pg_stat_statements`.
    fn write_settings(&self) -> Result<(), SandboxError> {
        let socket_dir = self.root().display().to_string().replace('\'', "''");
        let text = format!(
            "listen_addresses = '127.0.0.1'\n\
             port = {port}\n\
             unix_socket_directories = '{socket_dir}'\n\
             fsync = off\n\
             synchronous_commit = off\n\
             full_page_writes = off\n\
             max_connections = 200\n\
             shared_buffers = 128MB\n\
             shared_preload_libraries = 'pg_stat_statements'\n",
            port = self.port,
        );
        let path = self.data_dir.join("orderwatch.conf");
        fs::write(&path, text).map_err(io_err(format!("writing {}", path.display())))?;
        if let Some(ra) = &self.run_as {
            std::os::unix::fs::chown(&path, Some(ra.uid), Some(ra.gid))
                .map_err(io_err(format!("chown {}", path.display())))?;
        }
        Ok(())
    }

    /// `pg_ctl start -w`: returns once the server accepts connections; a failure quotes the log.
    fn start_server(&mut self) -> Result<(), SandboxError> {
        // Remember where this attempt's log output starts, so the error quotes only it.
        let log_start = fs::metadata(&self.log_file).map_or(0, |m| m.len());
        let mut cmd = self.server_command("pg_ctl");
        cmd.arg("start")
            .arg("-D")
            .arg(&self.data_dir)
            .arg("-l")
            .arg(&self.log_file)
            .args(["-w", "-t", "60"]);
        match run(&mut cmd) {
            Ok(_) => {
                self.running = true;
                Ok(())
            }
            Err(e) => {
                let mut log_tail = self.log_tail(log_start);
                if log_tail.is_empty() {
                    log_tail = e.to_string();
                }
                Err(SandboxError::Start {
                    port: self.port,
                    data_dir: self.data_dir.display().to_string(),
                    log_tail,
                })
            }
        }
    }

    /// The last lines of the server log written after byte `from`.
    fn log_tail(&self, from: u64) -> String {
        let mut text = String::new();
        if let Ok(mut f) = fs::File::open(&self.log_file) {
            let _ = f.seek(SeekFrom::Start(from));
            let _ = f.read_to_string(&mut text);
        }
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
    }

    /// Spawns the guardian (see the module docs). Its stdin is a pipe we never write to; EOF
    /// means this process is gone. Its own process group keeps a Ctrl-C aimed at the test
    /// runner from killing it before it has cleaned up.
    fn spawn_guardian(&self) -> Result<Child, SandboxError> {
        const SCRIPT: &str = r#"dir=$1; data=$2; shift 2
read -r _ || true
"$@" stop -D "$data" -m fast -w -t 30 || "$@" stop -D "$data" -m immediate -w -t 30
rm -rf "$dir""#;
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(SCRIPT)
            .arg("orderwatch-pg-guardian")
            .arg(self.root())
            .arg(&self.data_dir);
        if let Some(ra) = &self.run_as {
            cmd.args(&ra.prefix);
        }
        cmd.arg(self.bin_dir.join("pg_ctl"))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .current_dir("/")
            .process_group(0);
        cmd.spawn()
            .map_err(io_err("spawning the cleanup guardian (sh)"))
    }
}

impl Drop for PgSandbox {
    /// Stops the server and removes the directory. If stopping fails, the job is left to the
    /// guardian rather than deleting files under a live server.
    fn drop(&mut self) {
        let stopped = self.stop().is_ok();
        let root = self.root.take();
        let guardian = self.guardian.take();
        if stopped {
            if let Some(root) = root {
                let _ = root.close();
            }
            if let Some(mut g) = guardian {
                let _ = g.kill();
                let _ = g.wait();
            }
        } else {
            if let Some(root) = root {
                let _ = root.keep();
            }
            // Dropping the child closes its stdin: the guardian retries the stop and cleans up.
            drop(guardian);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpStream;
    use std::time::Duration;

    fn psql(pg: &PgSandbox, db: &str, sql: &str) -> Result<String, SandboxError> {
        let port = pg.port().to_string();
        let mut cmd = pg.client_command("psql");
        cmd.args([
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-U",
            "postgres",
            "-d",
            db,
            "-XAtc",
            sql,
        ]);
        run(&mut cmd).map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    }

    fn accepts_tcp(port: u16) -> bool {
        TcpStream::connect_timeout(&(Ipv4Addr::LOCALHOST, port).into(), Duration::from_secs(1))
            .is_ok()
    }

    #[test]
    fn start_create_stop_restart_drop() {
        let mut pg = PgSandbox::start().expect("sandbox starts");
        let port = pg.port();
        let root = pg.root().to_path_buf();
        assert!(pg.data_dir().join("PG_VERSION").is_file());
        assert_eq!(
            pg.url("x"),
            format!("postgres://postgres@127.0.0.1:{port}/x")
        );

        pg.create_database("sandbox_test").expect("createdb");
        psql(
            &pg,
            "sandbox_test",
            "CREATE TABLE t (v int); INSERT INTO t VALUES (42)",
        )
        .unwrap();
        assert_eq!(psql(&pg, "sandbox_test", "SHOW fsync").unwrap(), "off");
        assert!(
            pg.create_database("sandbox_test").is_err(),
            "duplicate name must fail"
        );

        pg.stop().expect("stop");
        pg.stop().expect("second stop is a no-op");
        assert!(!accepts_tcp(port), "port {port} still open after stop");
        assert!(psql(&pg, "sandbox_test", "SELECT 1").is_err());

        pg.restart().expect("restart");
        assert_eq!(pg.port(), port);
        assert_eq!(psql(&pg, "sandbox_test", "SELECT v FROM t").unwrap(), "42");
        pg.restart().expect("restart while running");
        assert!(accepts_tcp(port));

        drop(pg);
        assert!(!root.exists(), "{} left behind", root.display());
        assert!(!accepts_tcp(port), "server still listening after drop");
    }

    #[test]
    fn failed_start_quotes_the_server_log_and_restart_recovers() {
        let mut pg = PgSandbox::start().expect("sandbox starts");
        pg.stop().expect("stop");
        let squatter = TcpListener::bind((Ipv4Addr::LOCALHOST, pg.port())).unwrap();
        let err = pg.restart().expect_err("port is taken").to_string();
        assert!(
            err.contains("did not start") && err.contains("already in use"),
            "{err}"
        );
        drop(squatter);
        pg.restart().expect("restart once the port is free");
        assert!(accepts_tcp(pg.port()));
    }

    #[test]
    fn bin_dir_has_the_server() {
        let dir = find_bin_dir().expect("PostgreSQL installed");
        assert!(dir.join("initdb").is_file() && dir.join("postgres").is_file());
    }

    #[test]
    fn missing_binaries_error_carries_the_hint() {
        let e = SandboxError::BinariesNotFound {
            searched: "nowhere".into(),
        };
        assert!(e.to_string().contains("apt-get install -y postgresql"));
    }
}
