//! Client connections, bounded. Owns the accept loop the gRPC server is fed from and wraps
//! every TCP stream so that:
//! - at most `max_connections` are open at once, and at most `max_per_ip` from one address
//!   (more are closed right after `accept`, before any byte is read);
//! - a new connection must start its first request within `header_timeout` (slowloris; this
//!   also bounds a TLS handshake), and a connection with no request in progress is closed after
//!   `idle_timeout` (an open stream or watch is a request in progress);
//! - a connection whose peer was cut off (`admission::Peer`) is closed at once;
//! - after a shutdown's grace period, [`Tracker::close_all`] closes every connection still open;
//! - `accept` failing with "too many open files" backs off (up to a second) instead of spinning
//!   and starving the store of descriptors.
//!
//! HTTP/2 keepalive (ping every `keepalive_interval`, dead after `keepalive_timeout`) is set on
//! the server builder by `server`. Requests find their connection's [`Peer`] with [`peer_of`].

use crate::admission::Peer;
use futures_util::task::AtomicWaker;
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};

/// Bounds on client connections (`serve` flags of the same names).
#[derive(Debug, Clone)]
pub struct ConnLimits {
    pub max_connections: usize,
    pub max_per_ip: usize,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            max_connections: 1024,
            max_per_ip: 128,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(10),
        }
    }
}

/// File descriptors kept for everything but client connections (sled's files, logs, the
/// metrics endpoint, backups).
pub const RESERVED_FDS: usize = 256;

/// Checks the open-file limit against `max_connections` + [`RESERVED_FDS`]: raises the soft
/// limit up to the hard one if needed, and when that is not enough lowers `max_connections` to
/// fit, with a warning on stderr that says how to raise the limit. Returns the limits to use.
pub fn fit_open_file_limit(mut limits: ConnLimits) -> ConnLimits {
    let need = (limits.max_connections + RESERVED_FDS) as u64;
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed by pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } != 0 {
        return limits;
    }
    if rl.rlim_cur < need as libc::rlim_t && rl.rlim_cur < rl.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: (need as libc::rlim_t).min(rl.rlim_max),
            rlim_max: rl.rlim_max,
        };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            rl.rlim_cur = raised.rlim_cur;
        }
    }
    let have: u64 = rl.rlim_cur;
    if have < need {
        let fit = (have as usize).saturating_sub(RESERVED_FDS).max(8);
        eprintln!(
            "celltrail: warning: the open-file limit is {have}, below the {need} this server needs \
             ({} connections + {RESERVED_FDS} for the store); serving at most {fit} connections. \
             Raise it (`ulimit -n {need}`, or LimitNOFILE={need} in the systemd unit).",
            limits.max_connections
        );
        tracing::warn!(
            limit = have,
            need,
            max_connections = fit,
            "open-file limit too low"
        );
        limits.max_connections = fit;
    }
    limits
}

/// Live connections by remote address, for [`peer_of`].
fn registry() -> &'static Mutex<HashMap<SocketAddr, Weak<Peer>>> {
    static CONNS: OnceLock<Mutex<HashMap<SocketAddr, Weak<Peer>>>> = OnceLock::new();
    CONNS.get_or_init(Default::default)
}

/// The peer of the live connection from `addr` (requests find theirs by `remote_addr`).
pub fn peer_of(addr: SocketAddr) -> Option<Arc<Peer>> {
    registry()
        .lock()
        .expect("conn registry")
        .get(&addr)?
        .upgrade()
}

/// Per-connection state shared by the stream wrapper and the request layer.
struct ConnState {
    active: AtomicUsize,
    served: AtomicBool,
    idle_since: Mutex<Instant>,
    waker: AtomicWaker,
}

fn states() -> &'static Mutex<HashMap<SocketAddr, Weak<ConnState>>> {
    static STATES: OnceLock<Mutex<HashMap<SocketAddr, Weak<ConnState>>>> = OnceLock::new();
    STATES.get_or_init(Default::default)
}

/// Counts open connections (global and per IP) and can close them all.
#[derive(Default)]
pub struct Tracker {
    open: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    closing: AtomicBool,
    conns: Mutex<Vec<Weak<ConnState>>>,
}

impl Tracker {
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Closes every open connection (the end of a shutdown's grace period) and any accepted
    /// later.
    pub fn close_all(&self) {
        self.closing.store(true, Ordering::Release);
        let conns = std::mem::take(&mut *self.conns.lock().expect("conns"));
        for c in conns.iter().filter_map(Weak::upgrade) {
            c.waker.wake();
        }
    }

    fn admit(&self, ip: IpAddr, limits: &ConnLimits) -> Result<(), &'static str> {
        let mut per_ip = self.per_ip.lock().expect("per ip");
        if self.open.load(Ordering::Acquire) >= limits.max_connections {
            return Err("global_limit");
        }
        let n = per_ip.entry(ip).or_insert(0);
        if *n >= limits.max_per_ip {
            return Err("ip_limit");
        }
        *n += 1;
        let open = self.open.fetch_add(1, Ordering::AcqRel) + 1;
        crate::metrics::connections(open);
        Ok(())
    }

    fn release(&self, ip: IpAddr) {
        let mut per_ip = self.per_ip.lock().expect("per ip");
        if let Some(n) = per_ip.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                per_ip.remove(&ip);
            }
        }
        let open = self.open.fetch_sub(1, Ordering::AcqRel) - 1;
        crate::metrics::connections(open);
    }
}

/// An accepted client connection under the bounds of [`ConnLimits`].
pub struct Guarded {
    tcp: TcpStream,
    addr: SocketAddr,
    peer: Arc<Peer>,
    state: Arc<ConnState>,
    tracker: Arc<Tracker>,
    header_timeout: Duration,
    idle_timeout: Duration,
    timer: Pin<Box<Sleep>>,
    closed: Option<&'static str>,
}

impl Guarded {
    /// Why the connection must close now, if it must (registers `cx` for the events that
    /// would make it so).
    fn must_close(&mut self, cx: &mut Context<'_>) -> Option<&'static str> {
        if self.closed.is_some() {
            return self.closed;
        }
        self.state.waker.register(cx.waker());
        let why = if self.tracker.closing.load(Ordering::Acquire) {
            Some("shutdown")
        } else if self.peer.poll_cut_off(cx) {
            Some("cut_off")
        } else if self.state.active.load(Ordering::Acquire) == 0 {
            let (limit, why) = if self.state.served.load(Ordering::Acquire) {
                (self.idle_timeout, "idle")
            } else {
                (self.header_timeout, "header_timeout")
            };
            let deadline = *self.state.idle_since.lock().expect("idle") + limit;
            if self.timer.deadline() != deadline {
                self.timer.as_mut().reset(deadline);
            }
            self.timer.as_mut().poll(cx).is_ready().then_some(why)
        } else {
            None
        };
        if let Some(why) = why {
            tracing::debug!(addr = %self.addr, reason = why, "closing client connection");
            crate::metrics::connection_closed(why);
            self.closed = Some(why);
        }
        why
    }

    fn closed_error(why: &str) -> io::Error {
        io::Error::new(
            io::ErrorKind::ConnectionAborted,
            format!("connection closed by the server ({why})"),
        )
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        let mut reg = registry().lock().expect("conn registry");
        if reg
            .get(&self.addr)
            .is_some_and(|p| p.ptr_eq(&Arc::downgrade(&self.peer)))
        {
            reg.remove(&self.addr);
        }
        drop(reg);
        let mut st = states().lock().expect("conn states");
        if st
            .get(&self.addr)
            .is_some_and(|s| s.ptr_eq(&Arc::downgrade(&self.state)))
        {
            st.remove(&self.addr);
        }
        drop(st);
        self.tracker.release(self.addr.ip());
    }
}

impl AsyncRead for Guarded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(why) = self.must_close(cx) {
            return Poll::Ready(Err(Self::closed_error(why)));
        }
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        if let Some(why) = self.closed {
            return Poll::Ready(Err(Self::closed_error(why)));
        }
        Pin::new(&mut self.tcp).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for Guarded {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.tcp.connect_info()
    }
}

type Accepted = io::Result<Guarded>;

/// Accepts connections on `listener` under `limits` and yields them to the gRPC server. The
/// accept loop (and the listening socket) ends when the server drops the stream.
pub fn incoming(
    listener: TcpListener,
    limits: ConnLimits,
    tracker: Arc<Tracker>,
) -> tokio_stream::wrappers::ReceiverStream<Accepted> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Accepted>(16);
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(10);
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = tx.closed() => return,
            };
            let (tcp, addr) = match accepted {
                Ok(a) => {
                    backoff = Duration::from_millis(10);
                    a
                }
                Err(e) if out_of_descriptors(&e) => {
                    tracing::error!(error = %e, backoff_ms = backoff.as_millis() as u64,
                        "cannot accept a connection: out of file descriptors; backing off");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
                // A connection reset before it was accepted, and the like: nothing to do.
                Err(_) => continue,
            };
            if let Err(why) = tracker.admit(addr.ip(), &limits) {
                crate::metrics::connection_closed(why);
                tracing::debug!(%addr, reason = why, "connection refused");
                drop(tcp);
                continue;
            }
            let _ = tcp.set_nodelay(true);
            let peer = Peer::remote(addr);
            let state = Arc::new(ConnState {
                active: AtomicUsize::new(0),
                served: AtomicBool::new(false),
                idle_since: Mutex::new(Instant::now()),
                waker: AtomicWaker::new(),
            });
            registry()
                .lock()
                .expect("conn registry")
                .insert(addr, Arc::downgrade(&peer));
            states()
                .lock()
                .expect("conn states")
                .insert(addr, Arc::downgrade(&state));
            {
                let mut conns = tracker.conns.lock().expect("conns");
                if conns.len() > 2 * tracker.open() + 64 {
                    conns.retain(|c| c.strong_count() > 0);
                }
                conns.push(Arc::downgrade(&state));
            }
            let guarded = Guarded {
                tcp,
                addr,
                peer,
                state,
                tracker: tracker.clone(),
                header_timeout: limits.header_timeout,
                idle_timeout: limits.idle_timeout,
                timer: Box::pin(tokio::time::sleep(Duration::ZERO)),
                closed: None,
            };
            if tx.send(Ok(guarded)).await.is_err() {
                return;
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

fn out_of_descriptors(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE) | Some(libc::ENFILE) | Some(libc::ENOBUFS) | Some(libc::ENOMEM)
    )
}

/// Marks a request in progress on its connection until the response body ends (so idle means
/// "no request in progress", and an open watch or stream is never idle).
#[derive(Clone, Default)]
pub struct ActivityLayer;

impl<S> tower_layer::Layer<S> for ActivityLayer {
    type Service = Activity<S>;

    fn layer(&self, inner: S) -> Activity<S> {
        Activity { inner }
    }
}

#[derive(Clone)]
pub struct Activity<S> {
    inner: S,
}

/// A request in progress; ends (and may start the idle clock) when dropped.
struct InProgress(Arc<ConnState>);

impl InProgress {
    fn begin<B>(req: &http::Request<B>) -> Option<InProgress> {
        let addr = req
            .extensions()
            .get::<tonic::transport::server::TcpConnectInfo>()
            .and_then(|i| i.remote_addr())
            .or_else(|| {
                req.extensions()
                    .get::<tonic::transport::server::TlsConnectInfo<
                        tonic::transport::server::TcpConnectInfo,
                    >>()
                    .and_then(|i| i.get_ref().remote_addr())
            })?;
        let state = states()
            .lock()
            .expect("conn states")
            .get(&addr)?
            .upgrade()?;
        state.served.store(true, Ordering::Release);
        state.active.fetch_add(1, Ordering::AcqRel);
        Some(InProgress(state))
    }
}

impl Drop for InProgress {
    fn drop(&mut self) {
        if self.0.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            *self.0.idle_since.lock().expect("idle") = Instant::now();
            self.0.waker.wake();
        }
    }
}

use tonic::codegen::http;

impl<S, B, RB> tonic::codegen::Service<http::Request<B>> for Activity<S>
where
    S: tonic::codegen::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Counted<RB>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let guard = InProgress::begin(&req);
        let fut = self.inner.call(req);
        Box::pin(async move {
            let resp = fut.await?;
            Ok(resp.map(|body| Counted {
                inner: body,
                _guard: guard,
            }))
        })
    }
}

/// A response body that keeps its request counted as in progress until it ends.
pub struct Counted<B> {
    inner: B,
    _guard: Option<InProgress>,
}

impl<B: http_body::Body + Unpin> http_body::Body for Counted<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
