//! Bounded connections, shutdown and a stuck writer (issue 16, points 3, 4 and 7), against the
//! real server: connection limits global and per IP, the header (slowloris) and idle timeouts,
//! the open-file limit check, SIGTERM with open streams and watches, and the writer watchdog
//! driven by a debug-build failpoint. Loads are small and stay on loopback.

mod common;
mod realproc;

use celltrail::server::NetOptions;
use common::*;
use realproc::{Proc, Serve};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tonic::codegen::{http, Bytes};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A TCP connection from the loopback address `from` (127.0.0.x) that sent the HTTP/2 preface.
async fn raw_from(from: [u8; 4], to: SocketAddr) -> TcpStream {
    let sock = TcpSocket::new_v4().unwrap();
    sock.bind(SocketAddr::from((from, 0))).unwrap();
    let mut s = sock.connect(to).await.expect("tcp connect");
    let _ = s.write_all(PREFACE).await;
    s
}

/// True when the server closed `s` within `within` (EOF or reset), false if it is still open.
async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue, // the server's SETTINGS and the like
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_per_ip_and_global_limits_are_closed_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut net = NetOptions::default();
    net.conn.max_per_ip = 3;
    net.conn.max_connections = 5;
    let srv = TestServer::builder(dir.path()).net(net).start().await;
    let addr = srv.addr;

    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(raw_from([127, 0, 0, 2], addr).await);
    }
    let mut fourth = raw_from([127, 0, 0, 2], addr).await;
    assert!(
        closed_within(&mut fourth, Duration::from_secs(3)).await,
        "a 4th connection from one IP is closed (limit 3 per IP)"
    );
    for s in &mut held {
        assert!(
            !closed_within(s, Duration::from_millis(200)).await,
            "the first 3 stay open"
        );
    }
    held.push(raw_from([127, 0, 0, 3], addr).await);
    held.push(raw_from([127, 0, 0, 4], addr).await);
    let mut sixth = raw_from([127, 0, 0, 5], addr).await;
    assert!(
        closed_within(&mut sixth, Duration::from_secs(3)).await,
        "a 6th connection is closed (limit 5 in all)"
    );
    // Room again once one closes: a client gets through.
    held.clear();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut c = celltrail::client::connect(&addr.to_string()).await.unwrap();
    c.get_checkpoint(celltrail::pb::GetCheckpointRequest {})
        .await
        .expect_err("empty log: NOT_FOUND, but answered");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_sends_no_request_is_closed_after_the_header_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let mut net = NetOptions::default();
    net.conn.header_timeout = Duration::from_millis(500);
    let srv = TestServer::builder(dir.path()).net(net).start().await;
    let addr = srv.addr;

    // Silent after connecting.
    let mut silent = TcpStream::connect(addr).await.unwrap();
    // Slowloris: the preface one byte every 200 ms, never a request.
    let mut slow = TcpStream::connect(addr).await.unwrap();
    let started = Instant::now();
    let trickle = tokio::spawn(async move {
        for b in PREFACE.iter().cycle().take(40) {
            if slow.write_all(&[*b]).await.is_err() {
                return (slow, true);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        (slow, false)
    });
    assert!(closed_within(&mut silent, Duration::from_secs(5)).await);
    let (mut slow, write_failed) = trickle.await.unwrap();
    assert!(write_failed || closed_within(&mut slow, Duration::from_secs(1)).await);
    assert!(started.elapsed() < Duration::from_secs(6));
    srv.stop().await;
}

/// A raw HTTP/2 client: (request sender, task that ends when the connection closes).
async fn h2_client(
    addr: SocketAddr,
) -> (h2::client::SendRequest<Bytes>, tokio::task::JoinHandle<()>) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (send, conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
    let task = tokio::spawn(async move {
        let _ = conn.await;
    });
    (send, task)
}

fn grpc_request(addr: SocketAddr, method: &str) -> http::Request<()> {
    http::Request::post(format!("http://{addr}{method}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_is_closed_but_one_with_an_open_watch_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let mut net = NetOptions::default();
    net.conn.idle_timeout = Duration::from_millis(700);
    let srv = TestServer::builder(dir.path()).net(net).start().await;
    let addr = srv.addr;

    // One request answered, then nothing: closed after the idle timeout.
    let (send, idle_conn) = h2_client(addr).await;
    let mut send = send.ready().await.unwrap();
    let (resp, mut body) = send
        .send_request(grpc_request(addr, "/grpc.health.v1.Health/Check"), false)
        .unwrap();
    body.send_data(Bytes::from_static(&[0, 0, 0, 0, 0]), true)
        .unwrap();
    let mut resp = resp.await.expect("check answered").into_body();
    while let Some(chunk) = resp.data().await {
        chunk.unwrap();
    }
    // A health watch left open: a request in progress, so the connection is not idle.
    let (send2, watch_conn) = h2_client(addr).await;
    let mut send2 = send2.ready().await.unwrap();
    let (watch, mut wbody) = send2
        .send_request(grpc_request(addr, "/grpc.health.v1.Health/Watch"), false)
        .unwrap();
    wbody
        .send_data(Bytes::from_static(&[0, 0, 0, 0, 0]), true)
        .unwrap();
    let _watch = watch.await.expect("watch started");

    tokio::time::timeout(Duration::from_secs(5), idle_conn)
        .await
        .expect("the idle connection is closed")
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !watch_conn.is_finished(),
        "a connection with an open watch is not idle"
    );
    srv.stop().await;
}

async fn health(addr: &str) -> Result<i32, tonic::Status> {
    let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(2))
        .connect()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    Ok(HealthClient::new(ch)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await?
        .into_inner()
        .status)
}

fn wait_exit(p: &mut Proc, within: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Some(st) = p.child.try_wait().unwrap() {
            return Some(st);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_open_streams_and_watches_within_the_grace_period_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = Proc::start(dir.path(), &["--shutdown-grace", "2s"]).await;
    // An idle health watch and an idle append stream, both left open.
    let ch = tonic::transport::Endpoint::from_shared(format!("http://{}", p.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut watch = HealthClient::new(ch)
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        watch.message().await.unwrap().unwrap().status,
        ServingStatus::Serving as i32
    );
    let mut c = p.client().await;
    let (_tx, rx) = tokio::sync::mpsc::channel::<celltrail::pb::SignedEvent>(1);
    let _stream = c
        .append_stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap();

    let started = Instant::now();
    p.sigterm();
    let status = tokio::task::block_in_place(|| wait_exit(&mut p, Duration::from_secs(15)))
        .expect("the server exits within the grace period (2 s) plus shutdown");
    assert!(status.success(), "exit status {status:?}: {}", p.stderr());
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "open streams got their grace period"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(debug_assertions),
    ignore = "the stall failpoint is compiled into debug builds only"
)]
async fn a_stuck_writer_turns_health_not_serving_then_ends_the_process() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = Serve::new()
        .data_dir(dir.path())
        .args(["--watchdog-stall", "1s", "--watchdog-exit", "4s"])
        .env("CELLTRAIL_LOG", "warn")
        .env("CELLTRAIL_FAILPOINT_STALL_COMMIT", "60")
        .spawn()
        .await;
    assert_eq!(
        health(&p.addr).await.unwrap(),
        ServingStatus::Serving as i32
    );
    // The first group's write stalls (debug-build failpoint): this append never returns.
    let admin = realproc::admin_key(dir.path());
    let mut c = p.client().await;
    let nurse = signer("nurse.w");
    let stuck = tokio::spawn(async move {
        let _ = tokio::time::timeout(
            Duration::from_secs(20),
            register(&mut c, &admin, &nurse, "nurse", "HOSP-A"),
        )
        .await;
    });
    let deadline = Instant::now() + Duration::from_secs(4);
    loop {
        if health(&p.addr).await.ok() == Some(ServingStatus::NotServing as i32) {
            break;
        }
        assert!(Instant::now() < deadline, "health never said NOT_SERVING");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = tokio::task::block_in_place(|| wait_exit(&mut p, Duration::from_secs(15)))
        .expect("the process ends after the watchdog's exit bound");
    assert_eq!(status.code(), Some(70), "{}", p.stderr());
    assert!(p.stderr().contains("stuck"), "{}", p.stderr());
    stuck.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_flood_under_a_low_open_file_limit_leaves_appends_working() {
    let dir = tempfile::tempdir().unwrap();
    let p = Serve::new()
        .data_dir(dir.path())
        .args(["--header-timeout", "2s"])
        .env("CELLTRAIL_LOG", "warn")
        .nofile(400)
        .spawn()
        .await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while !p.stderr().contains("open-file limit is 400") {
        assert!(
            Instant::now() < deadline,
            "serve warns about the low limit: {}",
            p.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let addr: SocketAddr = p.addr.parse().unwrap();
    // 300 idle connections from another loopback address: most are refused (per IP 128, in
    // all 144 under this limit), none takes the store's descriptors.
    let mut flood = Vec::new();
    for _ in 0..300 {
        let sock = TcpSocket::new_v4().unwrap();
        sock.bind(SocketAddr::from(([127, 0, 0, 9], 0))).unwrap();
        if let Ok(s) = sock.connect(addr).await {
            flood.push(s);
        }
    }
    let admin = realproc::admin_key(dir.path());
    let mut c = p.client().await;
    let nurse = signer("nurse.f");
    register(&mut c, &admin, &nurse, "nurse", "HOSP-A").await;
    let mut open = 0;
    for s in &mut flood {
        if !closed_within(s, Duration::from_millis(5)).await {
            open += 1;
        }
    }
    assert!(open <= 128, "{open} flood connections stayed open");
    // The flood's connections time out (no request within 2 s); appends still work.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let mut still = 0;
    for s in &mut flood {
        if !closed_within(s, Duration::from_millis(5)).await {
            still += 1;
        }
    }
    assert_eq!(still, 0, "idle flood connections are closed");
    register(&mut c, &admin, &signer("nurse.g"), "nurse", "HOSP-A").await;
}
