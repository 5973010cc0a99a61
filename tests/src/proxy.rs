//! A TCP proxy that loses replies: it forwards a client's connections to a
//! server (the cluster fault suite puts one between an engine process and
//! its PostgreSQL) and, while told to, cuts a connection right after it
//! forwarded one of the client's messages, before the server's answer can
//! reach the client. The server reads the message and acts on it (a
//! `COMMIT` lands); the client only sees its connection end, and cannot
//! know whether it did.
//!
//! Which messages are cut is seeded: a message holding `COMMIT` (a
//! transaction's end, what the fault aims at) one time in three, any other
//! (a statement in autocommit: a lease renewed, timers claimed) one time in
//! twenty-five.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the proxy did so far.
#[derive(Debug, Default)]
pub struct Cuts {
    /// Connections cut after a client's message.
    pub all: AtomicU64,
    /// Those whose last message held `COMMIT`.
    pub commits: AtomicU64,
    /// Connections forwarded.
    pub connections: AtomicU64,
}

struct Shared {
    upstream: String,
    cutting: AtomicBool,
    /// Seeded choices (xorshift64*), shared by every connection.
    rng: Mutex<u64>,
    cuts: Cuts,
}

/// The proxy's handle: its address, the switch, the counts. The listener
/// and its connections end with the tokio runtime they were started on.
#[derive(Clone)]
pub struct Proxy {
    pub addr: String,
    shared: Arc<Shared>,
}

impl Proxy {
    /// Listens on a free port on loopback and forwards to `upstream`
    /// (`HOST:PORT`). It cuts nothing until [`Proxy::cutting`] says so.
    pub async fn start(upstream: &str, seed: u64) -> Result<Proxy, String> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| format!("the proxy's port: {e}"))?;
        let addr = listener
            .local_addr()
            .map_err(|e| format!("the proxy's address: {e}"))?
            .to_string();
        let shared = Arc::new(Shared {
            upstream: upstream.to_string(),
            cutting: AtomicBool::new(false),
            rng: Mutex::new(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1),
            cuts: Cuts::default(),
        });
        let s = shared.clone();
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                let s = s.clone();
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(&s.upstream).await {
                        s.cuts.connections.fetch_add(1, Ordering::Relaxed);
                        forward(client, server, &s).await;
                    }
                });
            }
        });
        Ok(Proxy { addr, shared })
    }

    /// Starts or stops cutting connections.
    pub fn cutting(&self, on: bool) {
        self.shared.cutting.store(on, Ordering::Relaxed);
    }

    pub fn cuts(&self) -> &Cuts {
        &self.shared.cuts
    }
}

impl Shared {
    /// Whether to cut after forwarding `message`.
    fn cut_after(&self, message: &[u8]) -> bool {
        if !self.cutting.load(Ordering::Relaxed) {
            return false;
        }
        let roll = {
            let mut x = self.rng.lock().unwrap_or_else(|e| e.into_inner());
            *x ^= *x >> 12;
            *x ^= *x << 25;
            *x ^= *x >> 27;
            x.wrapping_mul(0x2545_F491_4F6C_DD1D)
        };
        if holds_commit(message) {
            roll % 3 == 0
        } else {
            roll % 25 == 0
        }
    }
}

/// Whether a client's bytes hold a `COMMIT` (sqlx ends a transaction with
/// that simple query).
pub fn holds_commit(message: &[u8]) -> bool {
    message
        .windows(6)
        .any(|w| w.eq_ignore_ascii_case(b"COMMIT"))
}

/// Copies both ways until either side ends, or until a cut: then the
/// client's message has gone to the server, the client's side is closed at
/// once, and whatever the server answers is read and thrown away before
/// its side is closed too (so it is not reset before it read the message).
async fn forward(mut client: TcpStream, mut server: TcpStream, s: &Shared) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let mut up = vec![0u8; 64 * 1024];
    let mut down = vec![0u8; 64 * 1024];
    loop {
        tokio::select! {
            n = client.read(&mut up) => {
                let n = match n {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                let message = &up[..n];
                let cut = s.cut_after(message);
                if server.write_all(message).await.is_err() {
                    return;
                }
                if cut {
                    s.cuts.all.fetch_add(1, Ordering::Relaxed);
                    if holds_commit(message) {
                        s.cuts.commits.fetch_add(1, Ordering::Relaxed);
                    }
                    drop(client);
                    let _ = server.shutdown().await;
                    let _ = tokio::time::timeout(Duration::from_secs(5), async {
                        while let Ok(n) = server.read(&mut down).await {
                            if n == 0 {
                                break;
                            }
                        }
                    })
                    .await;
                    return;
                }
            }
            n = server.read(&mut down) => {
                let n = match n {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                if client.write_all(&down[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_commit_is_found_in_any_case() {
        assert!(holds_commit(b"Q\0\0\0\x0bCOMMIT\0"));
        assert!(holds_commit(b"xx commit"));
        assert!(!holds_commit(b"Q\0\0\0\x0eSELECT 1\0"));
    }

    /// A server that answers each line with a line: cut while cutting,
    /// the client's line still reaches it and its answer does not.
    #[tokio::test]
    async fn a_cut_connection_delivers_the_message_and_loses_the_answer() {
        let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = server.local_addr().unwrap().to_string();
        let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let (mut c, _) = server.accept().await.unwrap();
                let seen = seen_tx.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = c.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        let _ = seen.send(buf[..n].to_vec());
                        let _ = c.write_all(b"done\n").await;
                    }
                });
            }
        });
        let proxy = Proxy::start(&upstream, 1).await.unwrap();

        let mut c = TcpStream::connect(&proxy.addr).await.unwrap();
        c.write_all(b"BEGIN").await.unwrap();
        let mut buf = [0u8; 16];
        let n = c.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"done\n");
        assert_eq!(seen_rx.recv().await.unwrap(), b"BEGIN");

        // Every commit is cut within a few tries (one in three).
        proxy.cutting(true);
        let mut lost = false;
        for _ in 0..60 {
            let mut c = TcpStream::connect(&proxy.addr).await.unwrap();
            c.write_all(b"COMMIT").await.unwrap();
            assert_eq!(seen_rx.recv().await.unwrap(), b"COMMIT");
            let n = c.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                lost = true;
                break;
            }
            assert_eq!(&buf[..n], b"done\n");
        }
        assert!(lost, "no answer to a COMMIT was lost in 60 tries");
        assert!(proxy.cuts().commits.load(Ordering::Relaxed) >= 1);
    }
}
