//! Proxies in front of the real S3 server: one that can be cut (after a given number of bytes
//! from the client, every connection is closed and the port stops answering — an S3 server going
//! away mid-backup, as seen from dhis2ctl), one that refuses deletions, one that corrupts what
//! it serves of one object.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Body;
use axum::extract::Request;
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
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

/// An HTTP proxy in front of the real S3 server that passes every request except deletions,
/// which it refuses with S3's own `AccessDenied`: what append-only (or object-locked) backup
/// credentials look like to dhis2ctl. Backups go through; retention cannot delete.
pub struct AppendOnlyS3 {
    pub endpoint: String,
    /// Deletions refused so far.
    pub refused: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl AppendOnlyS3 {
    /// Forwards to `upstream` (e.g. `http://127.0.0.1:8333`).
    pub async fn start(upstream: String) -> Self {
        let refused = Arc::new(AtomicU64::new(0));
        let counter = refused.clone();
        let (endpoint, task) = serve_s3_proxy(upstream, move |parts, forwarded| {
            let counter = counter.clone();
            async move {
                let batch_delete = parts.method == Method::POST
                    && parts.uri.query().is_some_and(|q| {
                        q.split('&')
                            .any(|p| p == "delete" || p.starts_with("delete="))
                    });
                if parts.method == Method::DELETE || batch_delete {
                    counter.fetch_add(1, Ordering::SeqCst);
                    return Response::builder()
                        .status(StatusCode::FORBIDDEN)
                        .header(header::CONTENT_TYPE, "application/xml")
                        .body(Body::from(
                            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>",
                        ))
                        .unwrap();
                }
                forwarded.await.into_response()
            }
        })
        .await;
        Self {
            endpoint,
            refused,
            task,
        }
    }
}

impl Drop for AppendOnlyS3 {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An HTTP proxy in front of the real S3 server that passes every request, but answers GETs of
/// objects named `object` with one byte of the body changed (same length, the store's own
/// checksum headers left out): a store, disk or network that hands back other bytes than it was
/// given, without saying so.
pub struct CorruptingS3 {
    pub endpoint: String,
    /// Bodies corrupted so far.
    pub corrupted: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl CorruptingS3 {
    /// Forwards to `upstream` (e.g. `http://127.0.0.1:8333`); `object` is the last part of the
    /// key, e.g. `database.pgdump.zst`.
    pub async fn start(upstream: String, object: &str) -> Self {
        let corrupted = Arc::new(AtomicU64::new(0));
        let counter = corrupted.clone();
        let suffix = format!("/{object}");
        let (endpoint, task) = serve_s3_proxy(upstream, move |parts, forwarded| {
            let (counter, suffix) = (counter.clone(), suffix.clone());
            async move {
                let mut answer = forwarded.await;
                let read = parts.method == Method::GET && parts.uri.path().ends_with(&suffix);
                if let Ok(a) = &mut answer
                    && read
                    && a.status.is_success()
                    && !a.body.is_empty()
                {
                    let mut body = a.body.to_vec();
                    let middle = body.len() / 2;
                    body[middle] ^= 0x01;
                    a.body = body.into();
                    a.headers
                        .retain(|(name, _)| !name.as_str().starts_with("x-amz-checksum-"));
                    counter.fetch_add(1, Ordering::SeqCst);
                }
                answer.into_response()
            }
        })
        .await;
        Self {
            endpoint,
            corrupted,
            task,
        }
    }
}

impl Drop for CorruptingS3 {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The real server's answer to a forwarded request, or why it could not be had.
pub struct Forwarded {
    pub status: StatusCode,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: bytes::Bytes,
}

trait IntoProxyResponse {
    fn into_response(self) -> Response;
}

impl IntoProxyResponse for Result<Forwarded, String> {
    fn into_response(self) -> Response {
        match self {
            Ok(a) => {
                let mut response = Response::builder().status(a.status);
                for (name, value) in a.headers {
                    response = response.header(name, value);
                }
                response.body(Body::from(a.body)).unwrap()
            }
            Err(e) => Response::builder()
                .status(StatusCode::BAD_GATEWAY)
                .body(Body::from(e))
                .unwrap(),
        }
    }
}

/// Serves an HTTP proxy to `upstream`; `handle` gets each request's head and the forwarding of
/// it (not sent until awaited), and answers the client.
async fn serve_s3_proxy<H, F>(upstream: String, handle: H) -> (String, tokio::task::JoinHandle<()>)
where
    H: Fn(Parts, futures::future::BoxFuture<'static, Result<Forwarded, String>>) -> F
        + Clone
        + Send
        + Sync
        + 'static,
    F: std::future::Future<Output = Response> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
    let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
    let http = reqwest::Client::new();
    let app = axum::Router::new().fallback(move |req: Request| {
        let (http, upstream, handle) = (http.clone(), upstream.clone(), handle.clone());
        async move {
            let (parts, body) = req.into_parts();
            let bytes = axum::body::to_bytes(body, usize::MAX)
                .await
                .unwrap_or_default();
            let forwarded = Box::pin(forward(http, upstream, parts.clone(), bytes));
            handle(parts, forwarded).await
        }
    });
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (endpoint, task)
}

async fn forward(
    http: reqwest::Client,
    upstream: String,
    parts: Parts,
    bytes: bytes::Bytes,
) -> Result<Forwarded, String> {
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    // Every header goes through as signed, Host included (SigV4 signs it); the body is sent
    // whole, so hop-by-hop framing headers are left to the client.
    let mut request = http.request(parts.method.clone(), format!("{upstream}{path}"));
    for (name, value) in &parts.headers {
        if name != header::TRANSFER_ENCODING && name != header::CONNECTION && name != header::EXPECT
        {
            request = request.header(name, value);
        }
    }
    let answer = request
        .body(bytes)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = answer.status();
    let headers: Vec<_> = answer
        .headers()
        .iter()
        .filter(|(name, _)| **name != header::TRANSFER_ENCODING && **name != header::CONNECTION)
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect();
    let body = answer.bytes().await.map_err(|e| e.to_string())?;
    Ok(Forwarded {
        status,
        headers,
        body,
    })
}
