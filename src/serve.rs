//! The daemon put together: the engine started, the HTTP server in front of it, reloads on
//! request, and one shutdown order (evaluations finish, notifications flush, HTTP stops, the
//! log notifier writes what is left). `orderwatch run`, the demo and the tests start here.

use std::future::Future;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::config::Loaded;
use crate::engine::{Daemon, StartError};
use crate::http::server::{self, HttpState};

/// Builds the daemon from `loaded` and runs it on the config's `listen` address until
/// `shutdown` completes.
pub async fn run(
    loaded: Loaded,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    listen(Daemon::build(loaded)?, shutdown, None).await
}

/// Binds `listen` from the config and runs `daemon` until `shutdown` completes, re-reading
/// the config on every message from `reload` (SIGHUP in `orderwatch run`).
pub async fn listen(
    daemon: Daemon,
    shutdown: impl Future<Output = ()> + Send + 'static,
    reload: Option<mpsc::Receiver<()>>,
) -> Result<(), StartError> {
    let addr = daemon.shared().config.config.listen;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Listen {
            addr: addr.to_string(),
            source,
        })?;
    serve(daemon, listener, shutdown, reload).await
}

/// Runs `daemon` on an already bound listener until `shutdown` completes, re-reading the
/// config on every message from `reload` (see `engine::Running::reload`); users, proxies,
/// headers and TLS (a renewed certificate) of a reloaded config apply to new requests.
pub async fn serve(
    daemon: Daemon,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    mut reload: Option<mpsc::Receiver<()>>,
) -> Result<(), StartError> {
    let local = listener.local_addr().map_err(|source| StartError::Listen {
        addr: "?".into(),
        source,
    })?;
    let access = HttpState::prepare(&daemon.shared().config, local).map_err(|detail| {
        StartError::Notifier {
            name: "http".into(),
            detail,
        }
    })?;
    let (rules, sources) = (daemon.shared().rules.len(), daemon.shared().sources.len());
    let mut running = daemon.start(local)?;
    let http_state = HttpState::new(access);
    if let Some(why) = http_state.access().write_refusal() {
        tracing::warn!(listen = %local, "{why}");
    }
    let app = server::app(crate::http::router(running.current()), http_state.clone());
    let (http_stop_tx, http_stop) = watch::channel(false);
    let served = http_state.clone();
    let http = tokio::spawn(async move {
        if let Err(e) = server::serve(listener, app, served, http_stop).await {
            tracing::error!(error = %e, "HTTP server failed");
        }
    });
    tracing::info!(listen = %local, rules, sources, "orderwatch running");
    crate::systemd::notify("READY=1");

    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(()) = next_reload(&mut reload) => {
                crate::systemd::notify("RELOADING=1");
                if let Ok(access) = running.reload(|loaded| HttpState::prepare(loaded, local)).await {
                    http_state.install(access);
                }
                crate::systemd::notify("READY=1");
            }
        }
    }
    crate::systemd::notify("STOPPING=1");
    running
        .stop(async move {
            let _ = http_stop_tx.send(true);
            let _ = http.await;
        })
        .await;
    Ok(())
}

/// The next reload request; never completes without a reload channel.
async fn next_reload(reload: &mut Option<mpsc::Receiver<()>>) -> Option<()> {
    match reload {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}
