//! TLS to PostgreSQL as libpq does it, against a throwaway cluster with its own CA: a private
//! CA in `sslrootcert` (the file, or `system` through the OS trust store), `verify-ca` without
//! and `verify-full` with the host-name check, `require` with a root file verifying the chain,
//! and client certificates (`sslcert`/`sslkey`) for `cert` authentication.

mod common;

use std::path::Path;

use orderwatch::config::Loaded;
use orderwatch::engine::evaluate_once;
use orderwatch::pg_sandbox::PgSandbox;

/// The name in the server certificate; the cluster is reached at 127.0.0.1 (`hostaddr`).
const HOST: &str = "db.example.internal";
/// The role that logs in with a client certificate only.
const CERT_USER: &str = "ow_cert";

struct Env {
    _pg: PgSandbox,
    dir: tempfile::TempDir,
    port: u16,
    pki: common::Pki,
}

async fn cluster() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let pki = common::Pki::for_names(dir.path(), &[HOST], CERT_USER);
    let mut pg = tokio::task::spawn_blocking(PgSandbox::start)
        .await
        .unwrap()
        .unwrap();
    pg.create_database("shop").unwrap();
    common::add_reader(&pg);
    pg.execute(
        "shop",
        &format!(
            "CREATE ROLE {CERT_USER} LOGIN; GRANT pg_read_all_data TO {CERT_USER};
             CREATE TABLE orders (id text PRIMARY KEY, status text NOT NULL, status_changed_at timestamptz NOT NULL);
             INSERT INTO orders VALUES ('JW-1', 'SUBMITTED', now() - interval '3 hours');"
        ),
    )
    .unwrap();
    let read = |p: &Path| std::fs::read_to_string(p).unwrap();
    pg.enable_tls(
        &read(&pki.cert),
        &read(&pki.key),
        &read(&pki.ca),
        &format!(
            "hostssl all {CERT_USER} 127.0.0.1/32 cert\nhost all {CERT_USER} 127.0.0.1/32 reject"
        ),
    )
    .unwrap();
    let port = pg.port();
    Env {
        _pg: pg,
        dir,
        port,
        pki,
    }
}

impl Env {
    /// Loads a config whose source URL is `postgres://USER@db.example.internal:PORT/shop?hostaddr=127.0.0.1&PARAMS`.
    fn load(&self, user: &str, params: &str) -> Result<Loaded, String> {
        let d = self.dir.path();
        std::fs::write(
            d.join("orderwatch.yaml"),
            format!(
                "state_dir: state\nrule_files: [rules.yaml]\nsources:\n  shop:\n    url: \"postgres://{user}@{HOST}:{}/shop?hostaddr=127.0.0.1&connect_timeout=5&{params}\"\n    orders: {{ table: orders, id: id, status: status, entered_at: status_changed_at }}\n",
                self.port
            ),
        )
        .unwrap();
        std::fs::write(
            d.join("rules.yaml"),
            "rules:\n  - name: submitted_over_1h\n    source: shop\n    status: SUBMITTED\n    older_than: 1h\n",
        )
        .unwrap();
        orderwatch::configure::load(&d.join("orderwatch.yaml")).map_err(|e| e.to_string())
    }

    /// The rule's outcome over a connection with `params`: the count, or the error.
    async fn count(&self, user: &str, params: &str) -> Result<u64, String> {
        let loaded = self.load(user, params)?;
        let results = evaluate_once(&loaded, &[])
            .await
            .map_err(|e| e.to_string())?;
        results[0]
            .1
            .as_ref()
            .map(|o| o.count)
            .map_err(|e| e.to_string())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_certificates_are_verified_as_libpq_does() {
    let env = cluster().await;
    let r = common::READER;
    // Relative paths are relative to the config file.
    assert_eq!(
        env.count(r, "sslmode=verify-full&sslrootcert=ca.pem").await,
        Ok(1)
    );
    assert_eq!(
        env.count(r, "sslmode=verify-ca&sslrootcert=ca.pem").await,
        Ok(1)
    );
    // Encryption without authentication, as documented for require without a root file.
    assert_eq!(env.count(r, "sslmode=require").await, Ok(1));

    // Another CA: refused in every mode that verifies.
    for params in [
        "sslmode=verify-full&sslrootcert=other-ca.pem",
        "sslmode=verify-ca&sslrootcert=other-ca.pem",
        // libpq: require with a root certificate file verifies the chain.
        "sslmode=require&sslrootcert=other-ca.pem",
        // Without sslrootcert, verify-full trusts the Mozilla roots only.
        "sslmode=verify-full",
    ] {
        let err = env.count(r, params).await.unwrap_err();
        assert!(
            err.contains("cannot connect") && err.to_lowercase().contains("certificate"),
            "{params}: {err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_checks_the_host_name_and_verify_ca_does_not() {
    let env = cluster().await;
    let r = common::READER;
    let wrong_name = |params: &str| {
        let loaded = env.load(r, params).unwrap();
        // The same server under a name its certificate does not carry.
        let mut cfg = loaded.config.sources["shop"].value.clone();
        cfg.url.value = cfg
            .url
            .value
            .replace(HOST, "127.0.0.1")
            .replace("hostaddr=127.0.0.1&", "");
        cfg
    };
    let full = orderwatch::source::Source::build(
        "shop",
        &wrong_name("sslmode=verify-full&sslrootcert=ca.pem"),
        false,
    )
    .unwrap();
    let err = full.query("SELECT 1", &[]).await.unwrap_err().to_string();
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    let ca = orderwatch::source::Source::build(
        "shop",
        &wrong_name("sslmode=verify-ca&sslrootcert=ca.pem"),
        false,
    )
    .unwrap();
    ca.query("SELECT 1", &[]).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_log_in() {
    let env = cluster().await;
    let with_cert =
        "sslmode=verify-full&sslrootcert=ca.pem&sslcert=client.pem&sslkey=client-key.pem";
    assert_eq!(env.count(CERT_USER, with_cert).await, Ok(1));
    let err = env
        .count(CERT_USER, "sslmode=verify-full&sslrootcert=ca.pem")
        .await
        .unwrap_err();
    assert!(err.contains("certificate"), "{err}");
    let err = env.count(CERT_USER, "sslmode=disable").await.unwrap_err();
    assert!(err.contains("cannot connect"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslrootcert_system_uses_the_os_trust_store() {
    let env = cluster().await;
    env.load(common::READER, "sslrootcert=system").unwrap();
    let run = |ssl_cert_file: &Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_orderwatch"))
            .arg("-c")
            .arg(env.dir.path().join("orderwatch.yaml"))
            .args(["once", "--format", "json"])
            // rustls-native-certs reads the trust store from here first, as OpenSSL does.
            .env("SSL_CERT_FILE", ssl_cert_file)
            .output()
            .unwrap()
    };
    let out = run(&env.pki.ca);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("\"count\": 1"), "{text}");
    let out = run(&env.pki.other_ca);
    assert_eq!(out.status.code(), Some(2));
    // Weaker modes with the system store are refused, as libpq refuses them.
    let err = env
        .load(common::READER, "sslrootcert=system&sslmode=require")
        .unwrap_err();
    assert!(
        err.contains("sslrootcert=system needs sslmode=verify-full"),
        "{err}"
    );
}

#[test]
fn a_missing_or_broken_certificate_file_fails_check_offline() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.pem"), "not a certificate").unwrap();
    for (params, says) in [
        ("sslmode=verify-full&sslrootcert=missing.pem", "missing.pem"),
        ("sslmode=verify-full&sslrootcert=bad.pem", "no certificate"),
        (
            "sslmode=verify-full&sslcert=bad.pem&sslkey=bad.pem",
            "client certificate",
        ),
    ] {
        std::fs::write(
            dir.path().join("orderwatch.yaml"),
            format!("sources:\n  shop:\n    url: \"postgres://u@db/shop?{params}\"\n    orders: {{ table: orders }}\n"),
        )
        .unwrap();
        let err = orderwatch::configure::load(&dir.path().join("orderwatch.yaml"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("orderwatch.yaml:3:10: source shop: url:"),
            "{err}"
        );
        assert!(err.contains(says), "{params}: {err}");
    }
}
