//! A TCP proxy in front of the API server that a test can turn into a black hole: connections
//! stay open but nothing gets through, like a network partition (no reset, no error, just
//! silence; what is sent meanwhile is lost).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub struct Proxy {
    pub addr: SocketAddr,
    cut: Arc<AtomicBool>,
}

impl Proxy {
    /// Listens on a free port of 127.0.0.1 and forwards every connection to `upstream`.
    pub fn start(upstream: SocketAddr) -> Self {
        let cut = Arc::new(AtomicBool::new(false));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let flag = cut.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = TcpListener::from_std(listener).unwrap();
                while let Ok((client, _)) = listener.accept().await {
                    let flag = flag.clone();
                    tokio::spawn(async move {
                        let Ok(server) = TcpStream::connect(upstream).await else {
                            return;
                        };
                        let (cr, cw) = client.into_split();
                        let (sr, sw) = server.into_split();
                        tokio::join!(pipe(cr, sw, flag.clone()), pipe(sr, cw, flag));
                    });
                }
            });
        });
        Self { addr, cut }
    }

    /// While on, no byte passes in either direction, on open or new connections.
    pub fn black_hole(&self, on: bool) {
        self.cut.store(on, Ordering::SeqCst);
    }
}

async fn pipe(mut from: tokio::net::tcp::OwnedReadHalf, mut to: tokio::net::tcp::OwnedWriteHalf, cut: Arc<AtomicBool>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        // In the hole, bytes are lost, like packets in a partition: nothing sent then arrives
        // later (the TLS stream breaks instead, and the connection with it).
        if cut.load(Ordering::SeqCst) {
            continue;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// A TCP proxy in front of the API server that can hold back what the server sends: requests
/// pass at once (writes land), answers arrive late. The link is slow but not down: a client
/// sees its work done and learns about it too late.
pub struct SlowProxy {
    pub addr: SocketAddr,
    delay_ms: Arc<std::sync::atomic::AtomicU64>,
}

impl SlowProxy {
    /// Listens on a free port of 127.0.0.1 and forwards every connection to `upstream`, with
    /// no delay until [`SlowProxy::delay_answers`].
    pub fn start(upstream: SocketAddr) -> Self {
        let delay_ms = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let delay = delay_ms.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = TcpListener::from_std(listener).unwrap();
                while let Ok((client, _)) = listener.accept().await {
                    let delay = delay.clone();
                    tokio::spawn(async move {
                        let Ok(server) = TcpStream::connect(upstream).await else {
                            return;
                        };
                        let (cr, cw) = client.into_split();
                        let (sr, sw) = server.into_split();
                        let never_cut = Arc::new(AtomicBool::new(false));
                        tokio::join!(pipe(cr, sw, never_cut), delayed_pipe(sr, cw, delay));
                    });
                }
            });
        });
        Self { addr, delay_ms }
    }

    /// From now on, every byte from the API server reaches the client `delay` after the proxy
    /// got it, on open and new connections (zero: at once).
    pub fn delay_answers(&self, delay: std::time::Duration) {
        self.delay_ms.store(delay.as_millis() as u64, Ordering::SeqCst);
    }
}

/// Copies `from` to `to`, each chunk `delay_ms` after it was read, in order. The reading goes on
/// meanwhile, so the delay adds latency without cutting the throughput (a watch stream keeps up).
async fn delayed_pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay_ms: Arc<std::sync::atomic::AtomicU64>,
) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    let read = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let due = tokio::time::Instant::now() + std::time::Duration::from_millis(delay_ms.load(Ordering::SeqCst));
            if tx.send((due, buf[..n].to_vec())).is_err() {
                return;
            }
        }
    };
    let write = async move {
        while let Some((due, bytes)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&bytes).await.is_err() {
                return;
            }
        }
    };
    tokio::join!(read, write);
}
