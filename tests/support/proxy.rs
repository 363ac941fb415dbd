//! A TCP proxy in front of the real S3 server that can be cut: after a given number of bytes
//! from the client, every connection is closed and the port stops answering — an S3 server going
//! away mid-backup, as seen from dhis2ctl.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct CuttableProxy {
    pub endpoint: String,
    pub forwarded: Arc<AtomicU64>,
    cut: watch::Sender<bool>,
}

impl CuttableProxy {
    /// Forwards to `upstream` (host:port) until `cut_after` bytes came from clients.
    pub async fn start(upstream: String, cut_after: u64) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
        let (cut, cut_rx) = watch::channel(false);
        let forwarded = Arc::new(AtomicU64::new(0));
        let counter = forwarded.clone();
        let cut_tx = cut.clone();
        tokio::spawn(async move {
            let mut cut_rx_accept = cut_rx.clone();
            loop {
                tokio::select! {
                    _ = cut_rx_accept.changed() => return, // listener dropped: connection refused
                    accepted = listener.accept() => {
                        let Ok((client, _)) = accepted else { return };
                        let upstream = upstream.clone();
                        let (counter, cut_tx, cut_rx) = (counter.clone(), cut_tx.clone(), cut_rx.clone());
                        tokio::spawn(async move {
                            if let Ok(server) = TcpStream::connect(&upstream).await {
                                pipe(client, server, counter, cut_after, cut_tx, cut_rx).await;
                            }
                        });
                    }
                }
            }
        });
        Self {
            endpoint,
            forwarded,
            cut,
        }
    }

    pub fn is_cut(&self) -> bool {
        *self.cut.borrow()
    }
}

async fn pipe(
    client: TcpStream,
    server: TcpStream,
    counter: Arc<AtomicU64>,
    cut_after: u64,
    cut_tx: watch::Sender<bool>,
    mut cut_rx: watch::Receiver<bool>,
) {
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let mut cut_rx2 = cut_rx.clone();
    let up = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match cr.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if counter.fetch_add(n as u64, Ordering::SeqCst) + n as u64 > cut_after {
                let _ = cut_tx.send(true);
                return;
            }
            if sw.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    let down = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match sr.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if cw.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        _ = up => {}
        _ = down => {}
        _ = cut_rx.wait_for(|c| *c) => {}
        _ = cut_rx2.changed() => {}
    }
}
