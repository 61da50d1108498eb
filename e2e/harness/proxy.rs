//! A TCP proxy in front of the API server that a test can degrade: a black hole (connections stay
//! open but nothing gets through, like a network partition: no reset, no error, just silence;
//! what is sent meanwhile is lost), or a slow link (requests pass at once, so writes land, and
//! answers arrive late: a client sees its work done and learns about it too late).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

pub struct Proxy {
    pub addr: SocketAddr,
    cut: Arc<AtomicBool>,
    answer_delay_ms: Arc<AtomicU64>,
}

impl Proxy {
    /// Listens on a free port of 127.0.0.1 and forwards every connection to `upstream`, at once
    /// until told otherwise.
    pub fn start(upstream: SocketAddr) -> Self {
        let cut = Arc::new(AtomicBool::new(false));
        let answer_delay_ms = Arc::new(AtomicU64::new(0));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (cut_, delay) = (cut.clone(), answer_delay_ms.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = TcpListener::from_std(listener).unwrap();
                while let Ok((client, _)) = listener.accept().await {
                    let (cut, delay) = (cut_.clone(), delay.clone());
                    tokio::spawn(async move {
                        let Ok(server) = TcpStream::connect(upstream).await else {
                            return;
                        };
                        let (cr, cw) = client.into_split();
                        let (sr, sw) = server.into_split();
                        let requests_at_once = Arc::new(AtomicU64::new(0));
                        tokio::join!(pipe(cr, sw, cut.clone(), requests_at_once), pipe(sr, cw, cut, delay));
                    });
                }
            });
        });
        Self {
            addr,
            cut,
            answer_delay_ms,
        }
    }

    /// While on, no byte passes in either direction, on open or new connections.
    pub fn black_hole(&self, on: bool) {
        self.cut.store(on, Ordering::SeqCst);
    }

    /// From now on, every byte from the API server reaches the client `delay` after the proxy
    /// got it, on open and new connections (zero: at once).
    pub fn delay_answers(&self, delay: Duration) {
        self.answer_delay_ms.store(delay.as_millis() as u64, Ordering::SeqCst);
    }
}

/// Copies `from` to `to`, each chunk `delay_ms` after it was read, in order. The reading goes on
/// meanwhile, so a delay adds latency without cutting the throughput (a watch stream keeps up).
/// In the black hole bytes are lost, like packets in a partition: nothing sent then arrives
/// later (the TLS stream breaks instead, and the connection with it).
async fn pipe(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, cut: Arc<AtomicBool>, delay_ms: Arc<AtomicU64>) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    let read = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if cut.load(Ordering::SeqCst) {
                continue;
            }
            let due = tokio::time::Instant::now() + Duration::from_millis(delay_ms.load(Ordering::SeqCst));
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
