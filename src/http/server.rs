//! The HTTP server around the routes: TLS and basic auth from the web config (exporter-
//! toolkit's format), identities from trusted reverse proxies, and the bounds that keep a
//! careless or hostile client from starving the daemon: a connection cap, header-read, idle
//! and request timeouts, a body limit, and write endpoints that need JSON and, beyond
//! loopback, a user.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;

use crate::config::{Loaded, Web};

/// Connections served at once; beyond it new connections are closed at once, so descriptors
/// stay free for the databases and the notifiers (the unit raises LimitNOFILE well above).
pub const MAX_CONNECTIONS: usize = 512;
/// Time a client has to send its first byte, a request's headers, or finish a TLS handshake.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection on which nothing is read or written for this long is closed (a scraper that
/// keeps its connection alive between scrapes simply reconnects).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Time a request may take from headers to answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest request body (silences are small).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Who may do what over HTTP: built once from the config.
#[derive(Debug)]
pub struct Access {
    users: HashMap<String, String>,
    trusted: Vec<ipnet::IpNet>,
    user_header: Option<HeaderName>,
    headers: Vec<(HeaderName, HeaderValue)>,
    /// Listening beyond loopback (writes need authentication there).
    exposed: bool,
    /// Successful basic-auth checks (bcrypt is slow by design): sha256(user, password).
    verified: Mutex<HashMap<[u8; 32], ()>>,
}

/// The user a request was authenticated as (basic auth or a trusted proxy), if any.
#[derive(Debug, Clone)]
pub struct User(pub Option<String>);

impl Access {
    /// From the loaded config and the address the server listens on.
    pub fn new(loaded: &Loaded, listen: SocketAddr) -> Access {
        let c = &loaded.config;
        Access {
            users: loaded.web.users.clone().into_iter().collect(),
            trusted: c
                .trusted_proxies
                .iter()
                .filter_map(|a| crate::config::parse_network(&a.value))
                .collect(),
            user_header: c
                .user_header
                .as_ref()
                .and_then(|h| HeaderName::from_bytes(h.value.as_bytes()).ok()),
            headers: loaded
                .web
                .headers
                .iter()
                .filter_map(|(k, v)| {
                    Some((
                        HeaderName::from_bytes(k.as_bytes()).ok()?,
                        HeaderValue::from_str(v).ok()?,
                    ))
                })
                .collect(),
            exposed: !listen.ip().is_loopback(),
            verified: Mutex::new(HashMap::new()),
        }
    }

    /// Whether anything authenticates requests (basic auth or a proxy's user header).
    pub fn authenticates(&self) -> bool {
        !self.users.is_empty() || self.user_header.is_some()
    }

    /// Why writes are refused outright, for the start-up log; `None` when they are allowed.
    pub fn write_refusal(&self) -> Option<&'static str> {
        (self.exposed && !self.authenticates()).then_some(
            "listening beyond loopback without authentication: write endpoints (silences) \
             answer 403; configure basic_auth_users in a web config file, or trusted_proxies \
             and user_header",
        )
    }

    fn is_trusted_proxy(&self, peer: Option<SocketAddr>) -> bool {
        peer.is_some_and(|p| {
            let ip = p.ip().to_canonical();
            self.trusted.iter().any(|n| n.contains(&ip))
        })
    }

    async fn check_basic(&self, headers: &HeaderMap) -> Option<String> {
        use base64::Engine;
        use sha2::Digest;
        let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
        let (scheme, b64) = value.split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return None;
        }
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .ok()?;
        let decoded = String::from_utf8(decoded).ok()?;
        let (user, password) = decoded.split_once(':')?;
        let mut h = sha2::Sha256::new();
        h.update(user.as_bytes());
        h.update([0]);
        h.update(password.as_bytes());
        let key: [u8; 32] = h.finalize().into();
        if self.verified.lock().expect("auth cache").contains_key(&key) {
            return Some(user.to_string());
        }
        // An unknown user costs the same bcrypt round as a known one: no timing oracle.
        const DUMMY: &str = "$2y$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi";
        let hash = self
            .users
            .get(user)
            .cloned()
            .unwrap_or_else(|| DUMMY.to_string());
        let known = self.users.contains_key(user);
        let password = password.to_string();
        let ok = tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash))
            .await
            .ok()?
            .unwrap_or(false);
        if ok && known {
            let mut cache = self.verified.lock().expect("auth cache");
            if cache.len() >= 1024 {
                cache.clear();
            }
            cache.insert(key, ());
            Some(user.to_string())
        } else {
            None
        }
    }
}

fn refuse(code: StatusCode, message: impl Into<String>) -> Response {
    let mut r = (
        code,
        axum::Json(serde_json::json!({ "status": "error", "error": message.into() })),
    )
        .into_response();
    if code == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"orderwatch\""),
        );
    }
    r
}

/// The user a trusted proxy names, made safe to record: printable, at most 256 characters.
fn proxy_user(v: &HeaderValue) -> Option<String> {
    let s = v.to_str().ok()?.trim();
    (!s.is_empty() && s.len() <= 256 && !s.chars().any(char::is_control)).then(|| s.to_string())
}

/// Authentication, the write rules, the request timeout and the configured headers.
async fn access(State(a): State<Arc<Access>>, mut req: Request, next: Next) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let mut user = None;
    if let Some(h) = &a.user_header {
        if a.is_trusted_proxy(peer) {
            user = req.headers().get(h).and_then(proxy_user);
        }
        // Nobody downstream may read a user header we did not vouch for.
        req.headers_mut().remove(h);
    }
    let open_path = req.uri().path() == "/healthz";
    if user.is_none() && !a.users.is_empty() && !open_path {
        match a.check_basic(req.headers()).await {
            Some(u) => user = Some(u),
            None => return with_headers(&a, refuse(StatusCode::UNAUTHORIZED, "unauthorized")),
        }
    }
    let writes = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if writes {
        if let Some(why) = a.write_refusal() {
            return with_headers(&a, refuse(StatusCode::FORBIDDEN, why));
        }
        if a.authenticates() && user.is_none() {
            return with_headers(
                &a,
                refuse(
                    StatusCode::FORBIDDEN,
                    "writes need an authenticated user (basic auth or the trusted proxy's user header)",
                ),
            );
        }
        if matches!(*req.method(), Method::POST | Method::PUT | Method::PATCH) {
            let json = req
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(';').next())
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
            if !json {
                return with_headers(
                    &a,
                    refuse(
                        StatusCode::UNSUPPORTED_MEDIA_TYPE,
                        "write requests need Content-Type: application/json",
                    ),
                );
            }
        }
    }
    req.extensions_mut().insert(User(user));
    let response = match tokio::time::timeout(REQUEST_TIMEOUT, next.run(req)).await {
        Ok(r) => r,
        Err(_) => refuse(StatusCode::SERVICE_UNAVAILABLE, "request timed out"),
    };
    with_headers(&a, response)
}

fn with_headers(a: &Access, mut r: Response) -> Response {
    for (k, v) in &a.headers {
        r.headers_mut().insert(k.clone(), v.clone());
    }
    r
}

/// The routes wrapped in the access rules and the body limit.
pub fn app(routes: Router, access_rules: Arc<Access>) -> Router {
    routes
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(
            access_rules,
            self::access,
        ))
}

/// Serves `app` on `listener` (HTTPS when `web` has TLS) until `stop` turns true, then lets
/// requests in flight finish for up to 5 s.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    web: &Web,
    mut stop: watch::Receiver<bool>,
) -> Result<(), String> {
    let tls = match &web.tls {
        Some(m) => Some(tokio_rustls::TlsAcceptor::from(Arc::new(
            m.server_config(web.http2)?,
        ))),
        None => None,
    };
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder =
        hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    if web.tls.is_none() || !web.http2 {
        builder = builder.http1_only();
    }
    let mut last_full_warning: Option<std::time::Instant> = None;
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: wait instead of spinning.
                    tracing::warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = async { let _ = stop.wait_for(|s| *s).await; } => break,
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            if last_full_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                tracing::warn!(
                    max = MAX_CONNECTIONS,
                    peer = %peer,
                    "HTTP connection cap reached: closing new connections"
                );
                last_full_warning = Some(std::time::Instant::now());
            }
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let tls = tls.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _permit = permit;
            let service =
                hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(ConnectInfo(peer));
                    let mut app = app.clone();
                    async move {
                        use tower::Service;
                        app.call(req.map(axum::body::Body::new)).await
                    }
                });
            // hyper's header-read timeout starts at the first byte: a client that connects and
            // sends nothing is cut off here instead.
            if !matches!(
                tokio::time::timeout(HEADER_READ_TIMEOUT, stream.peek(&mut [0u8; 1])).await,
                Ok(Ok(1))
            ) {
                return;
            }
            let io: Pin<Box<dyn Io>> = match tls {
                Some(acceptor) => {
                    match tokio::time::timeout(HEADER_READ_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(s)) => Box::pin(s),
                        Ok(Err(e)) => {
                            tracing::debug!(peer = %peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => return,
                    }
                }
                None => Box::pin(stream),
            };
            let io = hyper_util::rt::TokioIo::new(IdleTimeout::new(io, IDLE_TIMEOUT));
            let conn = builder.serve_connection_with_upgrades(io, service);
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                tracing::debug!(peer = %peer, error = %e, "HTTP connection ended with an error");
            }
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(Duration::from_secs(5), graceful.shutdown()).await;
    Ok(())
}

trait Io: AsyncRead + AsyncWrite + Send {}
impl<T: AsyncRead + AsyncWrite + Send> Io for T {}

/// Closes a connection on which nothing moved for `idle`: a pending read or write fails
/// with `TimedOut` once the deadline passes; any progress moves the deadline.
struct IdleTimeout {
    inner: Pin<Box<dyn Io>>,
    idle: Duration,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl IdleTimeout {
    fn new(inner: Pin<Box<dyn Io>>, idle: Duration) -> IdleTimeout {
        IdleTimeout {
            inner,
            idle,
            deadline: Box::pin(tokio::time::sleep(idle)),
        }
    }

    fn moved(&mut self) {
        let next = tokio::time::Instant::now() + self.idle;
        self.deadline.as_mut().reset(next);
    }

    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        self.deadline.as_mut().poll(cx).is_ready()
    }
}

fn timed_out() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::TimedOut, "idle connection")
}

impl AsyncRead for IdleTimeout {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.inner.as_mut().poll_read(cx, buf) {
            Poll::Ready(r) => {
                self.moved();
                Poll::Ready(r)
            }
            Poll::Pending if self.expired(cx) => Poll::Ready(Err(timed_out())),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncWrite for IdleTimeout {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.inner.as_mut().poll_write(cx, buf) {
            Poll::Ready(r) => {
                self.moved();
                Poll::Ready(r)
            }
            Poll::Pending if self.expired(cx) => Poll::Ready(Err(timed_out())),
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.inner.as_mut().poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.inner.as_mut().poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.inner.as_mut().poll_write_vectored(cx, bufs) {
            Poll::Ready(r) => {
                self.moved();
                Poll::Ready(r)
            }
            Poll::Pending if self.expired(cx) => Poll::Ready(Err(timed_out())),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
