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

use crate::config::Loaded;

/// Connections served at once; beyond it each newcomer closes the oldest connection that has
/// not sent a byte (else the newcomer is closed), so descriptors stay free for the databases
/// and the notifiers (the unit raises LimitNOFILE well above) and an idle flood cannot lock a
/// scraper out.
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
    /// bcrypt runs this many at once, on the blocking pool the database and HTTP clients'
    /// name lookups share: failed logins cannot starve them.
    bcrypt_slots: tokio::sync::Semaphore,
    /// A hash of the configured cost that unknown users are checked against, so a known user
    /// takes as long as an unknown one.
    dummy_hash: String,
}

/// What a reload may change while the server runs: the access rules and the TLS acceptor.
pub struct HttpState {
    access: std::sync::RwLock<Arc<Access>>,
    tls: std::sync::RwLock<Option<(tokio_rustls::TlsAcceptor, bool)>>,
}

/// A built access configuration waiting to be installed ([`HttpState::install`]).
pub struct Prepared {
    access: Arc<Access>,
    tls: Option<(tokio_rustls::TlsAcceptor, bool)>,
}

impl HttpState {
    /// Builds the access rules and TLS of `loaded` for a server listening on `listen`.
    pub fn prepare(loaded: &Loaded, listen: SocketAddr) -> Result<Prepared, String> {
        let tls = match &loaded.web.tls {
            Some(m) => Some((
                tokio_rustls::TlsAcceptor::from(Arc::new(m.server_config(loaded.web.http2)?)),
                loaded.web.http2,
            )),
            None => None,
        };
        Ok(Prepared {
            access: Arc::new(Access::new(loaded, listen)),
            tls,
        })
    }

    /// The state of a new server.
    pub fn new(p: Prepared) -> Arc<HttpState> {
        Arc::new(HttpState {
            access: std::sync::RwLock::new(p.access),
            tls: std::sync::RwLock::new(p.tls),
        })
    }

    /// Swaps in what a reload prepared: new connections and requests use it at once (cached
    /// basic-auth checks go with the old rules).
    pub fn install(&self, p: Prepared) {
        if let Some(why) = p.access.write_refusal() {
            tracing::warn!("{why}");
        }
        *self.access.write().expect("access lock") = p.access;
        *self.tls.write().expect("tls lock") = p.tls;
    }

    /// The access rules in force.
    pub fn access(&self) -> Arc<Access> {
        self.access.read().expect("access lock").clone()
    }
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
            bcrypt_slots: tokio::sync::Semaphore::new(2),
            dummy_hash: dummy_hash(&loaded.web.users),
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
        let hash = self
            .users
            .get(user)
            .cloned()
            .unwrap_or_else(|| self.dummy_hash.clone());
        let known = self.users.contains_key(user);
        let password = password.to_string();
        // Waiting for a slot is bounded too: a flood of bad logins gets 401s, not a queue.
        let _slot = tokio::time::timeout(Duration::from_secs(2), self.bcrypt_slots.acquire())
            .await
            .ok()?
            .ok()?;
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

/// A bcrypt hash of a throwaway password at the cost of the configured hashes.
fn dummy_hash(users: &std::collections::BTreeMap<String, String>) -> String {
    let cost = users
        .values()
        .filter_map(|h| h.split('$').nth(2)?.parse::<u32>().ok())
        .max();
    match cost {
        Some(c) => bcrypt::hash("orderwatch-unknown-user", c).unwrap_or_default(),
        None => String::new(),
    }
}

/// Whether a request names this daemon on loopback (`localhost`, `127.0.0.1`, `[::1]`): a
/// page whose domain was re-pointed at 127.0.0.1 (DNS rebinding) names its own domain.
fn host_is_loopback(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        // HTTP/1.0 without Host, or HTTP/2 (:authority checked by hyper): curl-like tools.
        return true;
    };
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
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
async fn access(State(state): State<Arc<HttpState>>, mut req: Request, next: Next) -> Response {
    let a = state.access();
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let mut user = None;
    if let Some(h) = &a.user_header {
        // Exactly one value: a proxy that appends instead of replacing would otherwise let
        // the client's own header come first.
        if a.is_trusted_proxy(peer) && req.headers().get_all(h).iter().count() == 1 {
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
        if !a.authenticates() && !host_is_loopback(req.headers()) {
            return with_headers(
                &a,
                refuse(
                    StatusCode::FORBIDDEN,
                    "writes without authentication must name localhost in Host",
                ),
            );
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
pub fn app(routes: Router, state: Arc<HttpState>) -> Router {
    routes
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(state, self::access))
}

/// Serves `app` on `listener` (HTTPS while `state` has TLS) until `stop` turns true, then
/// lets requests in flight finish for up to 5 s.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    state: Arc<HttpState>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), String> {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut last_full_warning: Option<std::time::Instant> = None;
    // Connections that have not sent their first byte, oldest first.
    type Silent = std::collections::VecDeque<(u64, Arc<tokio::sync::Notify>)>;
    let silent: Arc<Mutex<Silent>> = Arc::default();
    let mut next_id: u64 = 0;
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
        let permit = match slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                if last_full_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                    tracing::warn!(
                        max = MAX_CONNECTIONS,
                        peer = %peer,
                        "HTTP connection cap reached: closing the oldest silent connections"
                    );
                    last_full_warning = Some(std::time::Instant::now());
                }
                // The oldest connection that has not sent a byte yet makes room, so an idle
                // flood cannot lock out a scraper; without one, the newcomer is closed.
                let oldest = silent.lock().expect("silent lock").pop_front();
                let Some((_, leave)) = oldest else {
                    drop(stream);
                    continue;
                };
                leave.notify_one();
                match tokio::time::timeout(Duration::from_secs(1), slots.clone().acquire_owned())
                    .await
                {
                    Ok(Ok(p)) => p,
                    _ => {
                        drop(stream);
                        continue;
                    }
                }
            }
        };
        next_id += 1;
        let id = next_id;
        let leave = Arc::new(tokio::sync::Notify::new());
        silent
            .lock()
            .expect("silent lock")
            .push_back((id, leave.clone()));
        let silent_list = silent.clone();
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let tls = state.tls.read().expect("tls lock").clone();
        let mut builder =
            hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
        builder
            .http1()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT);
        if !tls.as_ref().is_some_and(|(_, http2)| *http2) {
            builder = builder.http1_only();
        }
        let tls = tls.map(|(acceptor, _)| acceptor);
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
            let mut first = [0u8; 1];
            let spoke = tokio::select! {
                r = tokio::time::timeout(HEADER_READ_TIMEOUT, stream.peek(&mut first)) => {
                    matches!(r, Ok(Ok(1)))
                }
                _ = leave.notified() => false,
            };
            silent_list
                .lock()
                .expect("silent lock")
                .retain(|(i, _)| *i != id);
            if !spoke {
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

    // Flushing and shutting down are progress too, and a client that stops reading must not
    // hold them pending forever (TLS pushes buffered records out here).
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.inner.as_mut().poll_flush(cx) {
            Poll::Ready(r) => {
                self.moved();
                Poll::Ready(r)
            }
            Poll::Pending if self.expired(cx) => Poll::Ready(Err(timed_out())),
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.inner.as_mut().poll_shutdown(cx) {
            Poll::Ready(r) => Poll::Ready(r),
            Poll::Pending if self.expired(cx) => Poll::Ready(Err(timed_out())),
            Poll::Pending => Poll::Pending,
        }
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
