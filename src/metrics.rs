//! Prometheus metrics: names, the recording helpers the ledger and API call, and a minimal
//! HTTP endpoint (`GET /metrics`) that serves the text exposition format on `--metrics-addr`.
//!
//! Recording goes through the `metrics` facade; until [`install`] runs (no `--metrics-addr`),
//! every helper here is a no-op. The recorder is process-global, so several servers in one
//! process (tests) share one set of series. Labels never carry PHI: only event kinds, results
//! and gRPC code names.

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Appends answered, labelled `result` (accepted, duplicate, rejected) and `code` (gRPC code).
pub const APPENDS: &str = "celltrail_appends_total";
/// Events per committed group.
pub const GROUP_SIZE: &str = "celltrail_group_size";
/// Seconds to write and fsync one group.
pub const FLUSH_SECONDS: &str = "celltrail_flush_seconds";
/// Seconds to check one group (signatures, registry, policy) before it is written.
pub const VERIFY_SECONDS: &str = "celltrail_verify_seconds";
/// Entries in the Merkle log.
pub const TREE_SIZE: &str = "celltrail_tree_size";
/// Appends waiting for the writer.
pub const QUEUE_DEPTH: &str = "celltrail_queue_depth";
/// Seconds from receiving an append to answering it.
pub const APPEND_SECONDS: &str = "celltrail_append_seconds";
/// Online backups taken, labelled `result` (ok, error).
pub const BACKUPS: &str = "celltrail_backups_total";
/// Client connections cut off for failed signature verifications.
pub const PEERS_CUT_OFF: &str = "celltrail_peers_cut_off_total";
/// Client connections open now.
pub const CONNECTIONS: &str = "celltrail_connections";
/// Client connections refused or closed by a bound, labelled `reason`
/// (global_limit, ip_limit, idle, header_timeout, shutdown).
pub const CONNECTIONS_CLOSED: &str = "celltrail_connections_closed_total";
/// 1 while the writer has been inside one group's write and flush longer than the watchdog's
/// bound.
pub const WRITER_STALLED: &str = "celltrail_writer_stalled";

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];
const GROUP_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];

/// Installs the process-global Prometheus recorder (once) and returns its handle.
pub fn install() -> anyhow::Result<PrometheusHandle> {
    if let Some(h) = HANDLE.get() {
        return Ok(h.clone());
    }
    let handle = PrometheusBuilder::new()
        .set_buckets(LATENCY_BUCKETS)?
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Full(GROUP_SIZE.into()),
            GROUP_BUCKETS,
        )?
        .install_recorder()
        .map_err(|e| anyhow::anyhow!("cannot install the metrics recorder: {e}"))?;
    describe();
    let _ = HANDLE.set(handle);
    Ok(HANDLE.get().expect("set just above").clone())
}

fn describe() {
    metrics::describe_counter!(APPENDS, "Appends answered, by result and gRPC status code");
    metrics::describe_histogram!(GROUP_SIZE, "Events per committed group");
    metrics::describe_histogram!(
        FLUSH_SECONDS,
        metrics::Unit::Seconds,
        "Time to write and fsync one group"
    );
    metrics::describe_histogram!(
        VERIFY_SECONDS,
        metrics::Unit::Seconds,
        "Time to check one group (signatures, registry, policy)"
    );
    metrics::describe_histogram!(
        APPEND_SECONDS,
        metrics::Unit::Seconds,
        "Time from receiving an append to answering it"
    );
    metrics::describe_gauge!(TREE_SIZE, "Entries in the Merkle log");
    metrics::describe_gauge!(QUEUE_DEPTH, "Appends waiting for the writer");
    metrics::describe_counter!(BACKUPS, "Online backups taken, by result");
    metrics::describe_counter!(
        PEERS_CUT_OFF,
        "Client connections cut off for failed signature verifications"
    );
    metrics::describe_gauge!(CONNECTIONS, "Client connections open");
    metrics::describe_counter!(
        CONNECTIONS_CLOSED,
        "Client connections refused or closed by a bound, by reason"
    );
    metrics::describe_gauge!(
        WRITER_STALLED,
        "1 while a group's write and flush has exceeded the watchdog bound"
    );
}

/// One append answered.
pub fn append_answered(result: &'static str, code: tonic::Code, latency: Duration) {
    metrics::counter!(APPENDS, "result" => result, "code" => code_name(code)).increment(1);
    metrics::histogram!(APPEND_SECONDS).record(latency.as_secs_f64());
}

/// One group checked (signatures, registry, policy), before writing.
pub fn group_verified(elapsed: Duration) {
    metrics::histogram!(VERIFY_SECONDS).record(elapsed.as_secs_f64());
}

/// One group written and fsynced.
pub fn group_committed(events: usize, flush: Duration, tree_size: u64) {
    metrics::histogram!(GROUP_SIZE).record(events as f64);
    metrics::histogram!(FLUSH_SECONDS).record(flush.as_secs_f64());
    metrics::gauge!(TREE_SIZE).set(tree_size as f64);
}

pub fn tree_size(size: u64) {
    metrics::gauge!(TREE_SIZE).set(size as f64);
}

pub fn queue_depth(depth: usize) {
    metrics::gauge!(QUEUE_DEPTH).set(depth as f64);
}

pub fn peer_cut_off() {
    metrics::counter!(PEERS_CUT_OFF).increment(1);
}

pub fn connections(open: usize) {
    metrics::gauge!(CONNECTIONS).set(open as f64);
}

pub fn connection_closed(reason: &'static str) {
    metrics::counter!(CONNECTIONS_CLOSED, "reason" => reason).increment(1);
}

pub fn writer_stalled(stalled: bool) {
    metrics::gauge!(WRITER_STALLED).set(if stalled { 1.0 } else { 0.0 });
}

pub fn backup_taken(ok: bool) {
    metrics::counter!(BACKUPS, "result" => if ok { "ok" } else { "error" }).increment(1);
}

/// The canonical gRPC name of a status code (`OK`, `INVALID_ARGUMENT`, ...).
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Serves `GET /metrics` (Prometheus text format) on `listener` until `shutdown` resolves.
///
/// A deliberately small HTTP/1.1 responder: one request per connection, no keep-alive, no
/// body parsing. It binds a listener we own so `--metrics-addr 127.0.0.1:0` works in tests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    handle: PrometheusHandle,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let conn = tokio::select! {
            _ = &mut shutdown => return,
            c = listener.accept() => c,
        };
        let Ok((stream, _)) = conn else { continue };
        let handle = handle.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(10), answer(stream, &handle)).await;
        });
    }
}

async fn answer(
    mut stream: tokio::net::TcpStream,
    handle: &PrometheusHandle,
) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).await?;
        if n == 0 || buf.len() > 16 * 1024 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let line = String::from_utf8_lossy(&buf);
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, ctype, body) = match (method, path) {
        ("GET", "/metrics") => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            handle.render(),
        ),
        ("GET", _) => ("404 Not Found", "text/plain", "try /metrics\n".to_string()),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "GET only\n".to_string(),
        ),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

/// Binds `addr`, installs the recorder and serves metrics in the background; returns the bound
/// address (useful with port 0).
pub async fn start(
    addr: &str,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<SocketAddr> {
    use anyhow::Context;
    let handle = install()?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen for metrics on {addr}"))?;
    let bound = listener.local_addr()?;
    tokio::spawn(serve(listener, handle, shutdown));
    Ok(bound)
}
