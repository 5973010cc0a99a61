//! No resource exhaustion without credentials, against the real `eflow`
//! binary: hundreds of slow unauthenticated bodies do not grow its memory,
//! idle connections are closed after the header timeout, and the number of
//! connections it holds is bounded.

mod common;

use std::time::{Duration, Instant};

use common::DEADLINE;
use common::binary::{eflow, proc_mb};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sockets the process holds open (its listener and its connections).
fn sockets(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("proc fd")
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|l| l.to_string_lossy().starts_with("socket:"))
        .count()
}

/// Reads until the server closes the connection; false if it is still open
/// at `deadline`.
async fn closed_by_server(conn: &mut TcpStream, deadline: Instant) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, conn.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_unauthenticated_bodies_do_not_grow_memory() {
    let server = eflow("exhaustion-bodies", &["--body-timeout", "30s"]).await;
    let pid = server.child.id();
    let before = proc_mb(pid, "VmRSS");
    const CONNECTIONS: usize = 300;
    const SENT: usize = 1_500_000;
    // Each connection announces a 2 MB body (under the 2 MiB limit), sends
    // three quarters of it and stalls: a slow body without a credential, to
    // the callback route (a forged token) and to the deploy route (no token).
    let hold = tokio_util::sync::CancellationToken::new();
    let (sent_tx, mut sent_rx) = tokio::sync::mpsc::channel::<()>(CONNECTIONS);
    let mut tasks = Vec::new();
    for i in 0..CONNECTIONS {
        let addr = server.addr;
        let hold = hold.clone();
        let sent_tx = sent_tx.clone();
        tasks.push(tokio::spawn(async move {
            let path = if i % 2 == 0 {
                "/v1/callbacks/eyJydW4iOiJ4In0.AAAA"
            } else {
                "/v1/flows"
            };
            let mut conn = TcpStream::connect(addr).await.expect("connect");
            let head = format!(
                "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: 2000000\r\n\r\n{{\"output\": \""
            );
            let chunk = vec![b'x'; 64 * 1024];
            let mut ok = conn.write_all(head.as_bytes()).await.is_ok();
            let mut written = 0;
            while ok && written < SENT {
                ok = conn.write_all(&chunk).await.is_ok();
                written += chunk.len();
            }
            let _ = sent_tx.send(()).await;
            // Keep the connection (and whatever the server holds for it) open.
            hold.cancelled().await;
            drop(conn);
        }));
    }
    drop(sent_tx);
    let start = Instant::now();
    for _ in 0..CONNECTIONS {
        let left = DEADLINE.saturating_sub(start.elapsed());
        tokio::time::timeout(left, sent_rx.recv())
            .await
            .expect("every connection sent its part of the body");
    }
    let now = proc_mb(pid, "VmRSS");
    let peak = proc_mb(pid, "VmHWM");
    hold.cancel();
    for t in tasks {
        let _ = t.await;
    }
    assert!(
        peak - before < 40.0,
        "{CONNECTIONS} slow unauthenticated bodies grew the server from {before:.0} MB to {now:.0} MB (peak {peak:.0} MB)"
    );
    // And it still serves.
    let r = reqwest::get(format!("http://{}/v1/health", server.addr))
        .await
        .expect("health");
    assert!(r.status().is_success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_and_their_number_is_bounded() {
    const MAX: usize = 16;
    let server = eflow(
        "exhaustion-idle",
        &["--max-connections", "16", "--header-timeout", "1s"],
    )
    .await;
    let pid = server.child.id();
    let baseline = sockets(pid);

    // A connection that made a request and stays open (keep-alive) is idle too.
    let mut used = TcpStream::connect(server.addr).await.expect("connect");
    let req = format!("GET /v1/health HTTP/1.1\r\nHost: {}\r\n\r\n", server.addr);
    used.write_all(req.as_bytes()).await.expect("request");
    let mut buf = [0u8; 1024];
    let n = used.read(&mut buf).await.expect("answer");
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );

    // Many connections that never send anything.
    let mut idle = Vec::new();
    for _ in 0..100 {
        idle.push(TcpStream::connect(server.addr).await.expect("connect"));
    }
    // Give the server the time to take what it takes of them.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let held = sockets(pid) - baseline;
    assert!(
        held <= MAX,
        "the server holds {held} connections, more than --max-connections {MAX}"
    );

    let deadline = Instant::now() + DEADLINE;
    assert!(
        closed_by_server(&mut used, deadline).await,
        "a keep-alive connection idle past the header timeout is still open"
    );
    let mut open = 0;
    for conn in &mut idle {
        if !closed_by_server(conn, deadline).await {
            open += 1;
        }
    }
    assert_eq!(
        open, 0,
        "{open} of 100 idle connections were still open {DEADLINE:?} after they were opened"
    );
    // The server still serves.
    let r = reqwest::get(format!("http://{}/v1/health", server.addr))
        .await
        .expect("health");
    assert!(r.status().is_success());
}
