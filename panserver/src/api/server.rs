//! The listener: hyper with warp's routes as the service. Responses that stream
//! (downloads) carry their body in a `StreamingBody` extension, because warp's own
//! body type cannot be built from a stream; it is swapped in here.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{Future, StreamExt};
use http_body_util::{BodyExt, StreamBody, combinators::UnsyncBoxBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tower_service::Service;

use crate::service::{App, ServiceError};

type ByteStream = BoxStream<'static, Result<Bytes, std::io::Error>>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A response body to stream in place of the (empty) one warp built.
#[derive(Clone)]
pub struct StreamingBody(Arc<Mutex<Option<ByteStream>>>);

impl StreamingBody {
    pub fn new(stream: ByteStream) -> Self {
        Self(Arc::new(Mutex::new(Some(stream))))
    }

    fn take(&self) -> Option<ByteStream> {
        self.0.lock().ok().and_then(|mut s| s.take())
    }
}

/// Serves the API on `listener` until `shutdown` resolves; HTTPS when `tls` is given.
pub async fn serve(
    app: Arc<App>,
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()>,
) {
    let tls = tls.map(tokio_rustls::TlsAcceptor::from);
    let routes = warp::service(super::routes(app));
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = tcp.set_nodelay(true);
        let routes = routes.clone();
        match tls.clone() {
            None => {
                tokio::spawn(serve_connection(tcp, peer, routes));
            }
            Some(acceptor) => {
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => serve_connection(stream, peer, routes).await,
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        }
    }
}

const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

async fn serve_connection<S, IO>(io: IO, peer: SocketAddr, routes: S)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: Service<
            http::Request<hyper::body::Incoming>,
            Response = warp::reply::Response,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let service = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let mut routes = routes.clone();
        // A refused request may leave its body unread, and then the connection
        // cannot be reused: say so, or a client may send its next request into a
        // connection about to close.
        let http1_with_body = req.version() < http::Version::HTTP_2
            && (req.headers().contains_key(http::header::TRANSFER_ENCODING)
                || req
                    .headers()
                    .get(http::header::CONTENT_LENGTH)
                    .is_some_and(|v| v.as_bytes() != b"0"));
        async move {
            // The handler runs in a task of its own, to its end even when its
            // client goes away (hyper then drops this future). Dropped midway,
            // a database call can leave its pooled connection inside a
            // transaction nobody ends, whose locks then hold every later
            // writer of those rows until the lock timeout.
            let resp = match tokio::spawn(routes.call(req)).await {
                Ok(resp) => resp?,
                Err(e) => super::error_reply(&ServiceError::Internal(format!(
                    "the request's handler failed: {e}"
                ))),
            };
            let (mut parts, body) = resp.into_parts();
            if http1_with_body && (parts.status.is_client_error() || parts.status.is_server_error())
            {
                parts.headers.insert(
                    http::header::CONNECTION,
                    http::HeaderValue::from_static("close"),
                );
            }
            // Browsers must not guess a type for stored bytes.
            parts.headers.insert(
                http::header::X_CONTENT_TYPE_OPTIONS,
                http::HeaderValue::from_static("nosniff"),
            );
            let body = match parts
                .extensions
                .remove::<StreamingBody>()
                .and_then(|s| s.take())
            {
                Some(stream) => UnsyncBoxBody::new(StreamBody::new(
                    stream.map(|r| r.map(Frame::data).map_err(BoxError::from)),
                )),
                None => UnsyncBoxBody::new(body.map_err(BoxError::from)),
            };
            Ok::<_, std::convert::Infallible>(http::Response::from_parts(parts, body))
        }
    });
    let builder = auto::Builder::new(TokioExecutor::new());
    if let Err(e) = builder.serve_connection(TokioIo::new(io), service).await {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use tokio::io::AsyncWriteExt;
    use tokio::sync::Notify;
    use warp::Filter;

    /// A client that sends a request and goes away before the answer: the
    /// handler still runs to its end.
    #[tokio::test]
    async fn a_handler_runs_to_its_end_after_its_client_went_away() {
        let started = Arc::new(Notify::new());
        let proceed = Arc::new(Notify::new());
        let finished = Arc::new(AtomicBool::new(false));
        let handler = {
            let (started, proceed, finished) = (started.clone(), proceed.clone(), finished.clone());
            warp::any().then(move || {
                let (started, proceed, finished) =
                    (started.clone(), proceed.clone(), finished.clone());
                async move {
                    started.notify_one();
                    proceed.notified().await;
                    finished.store(true, Ordering::SeqCst);
                    "done"
                }
            })
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let mut client = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (server_side, peer) = listener.accept().await.expect("accept");
        let connection = tokio::spawn(super::serve_connection(
            server_side,
            peer,
            warp::service(handler),
        ));
        client
            .write_all(b"GET / HTTP/1.1\r\nhost: pan\r\n\r\n")
            .await
            .expect("send the request");
        started.notified().await;
        drop(client);
        tokio::time::timeout(Duration::from_secs(10), connection)
            .await
            .expect("the connection ends when its client goes away")
            .expect("the connection's task");
        proceed.notify_one();
        tokio::time::timeout(Duration::from_secs(10), async {
            while !finished.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the handler finished after its client went away");
    }
}
