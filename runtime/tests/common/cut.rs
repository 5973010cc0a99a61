//! A TCP proxy to the tests' PostgreSQL that cuts one connection at the
//! next client message holding a pattern (a `COMMIT`, a query): after
//! forwarding it, so the server acts on it and its answer is lost, or
//! before, so the server never gets it. Once, then it forwards everything.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What the proxy does with the next message holding its pattern.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Cut {
    /// Forwards it, then ends the connection before the answer comes back.
    After,
    /// Ends the connection without forwarding it.
    Before,
}

/// Listens on a free port on loopback and forwards to `server`
/// (`HOST:PORT`); the next message holding `pattern` is cut as `cut` says
/// when it is set (and `cut` is emptied). Answers its address.
pub async fn cutter(server: &str, pattern: &'static [u8], cut: Arc<Mutex<Option<Cut>>>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let server = server.to_string();
    tokio::spawn(async move {
        loop {
            let (mut client, _) = listener.accept().await.unwrap();
            let Ok(mut upstream) = tokio::net::TcpStream::connect(&server).await else {
                continue;
            };
            let cut = cut.clone();
            tokio::spawn(async move {
                let (mut up, mut down) = (vec![0u8; 65536], vec![0u8; 65536]);
                loop {
                    tokio::select! {
                        n = client.read(&mut up) => {
                            let Ok(n @ 1..) = n else { return };
                            let hit = up[..n].windows(pattern.len()).any(|w| w == pattern);
                            let now = if hit { cut.lock().unwrap().take() } else { None };
                            if now == Some(Cut::Before) {
                                return;
                            }
                            if upstream.write_all(&up[..n]).await.is_err() {
                                return;
                            }
                            if now == Some(Cut::After) {
                                // The client hears nothing more; the server
                                // reads the message and answers into the void.
                                drop(client);
                                let _ = upstream.shutdown().await;
                                while let Ok(1..) = upstream.read(&mut down).await {}
                                return;
                            }
                        }
                        n = upstream.read(&mut down) => {
                            let Ok(n @ 1..) = n else { return };
                            if client.write_all(&down[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    addr
}

/// `url` (`postgres://USER@HOST:PORT/DB?…`) through the proxy at `proxy`;
/// and the `HOST:PORT` it named.
pub fn through(url: &str, proxy: &str) -> String {
    let (head, rest) = url.split_once('@').expect("a URL with a user");
    let (_, tail) = rest.split_once('/').expect("a URL with a database");
    format!("{head}@{proxy}/{tail}")
}

/// The `HOST:PORT` of a PostgreSQL URL.
pub fn authority(url: &str) -> String {
    let (_, rest) = url.split_once('@').expect("a URL with a user");
    rest.split_once('/')
        .expect("a URL with a database")
        .0
        .to_string()
}
