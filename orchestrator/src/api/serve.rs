//! Serving the API's connections (what `axum::serve` did, plus TLS and a
//! header timeout): each accepted connection gets `api.header_timeout_ms`
//! to finish its TLS handshake and then, per request, to send its request
//! line and headers (hyper's `header_read_timeout`, a defence against
//! clients that send headers slowly to hold connections open); a slower one
//! is closed. Over TLS, the names of a verified client certificate go into
//! every request's extensions as a [`PeerCert`] (the guard's mTLS caller).
//! When `stop` turns true the listener closes, every connection finishes the
//! request it is serving (a graceful shutdown), and [`serve`] returns once
//! all are closed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use super::tls::PeerCert;

/// Serves `app` on `listener` (over TLS with `tls`) until `stop` is true.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<Arc<ServerConfig>>,
    header_timeout: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let acceptor = tls.map(TlsAcceptor::from);
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = async { let _ = stop.wait_for(|s| *s).await; } => break,
        };
        while connections.try_join_next().is_some() {}
        let (tcp, remote) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: back off as axum::serve does.
                tracing::warn!(error = %e, "accepting an API connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        connections.spawn(connection(
            tcp,
            remote,
            app.clone(),
            acceptor.clone(),
            header_timeout,
            stop.clone(),
        ));
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

async fn connection(
    tcp: TcpStream,
    remote: SocketAddr,
    app: Router,
    acceptor: Option<TlsAcceptor>,
    header_timeout: Duration,
    stop: watch::Receiver<bool>,
) {
    let _ = tcp.set_nodelay(true);
    let Some(acceptor) = acceptor else {
        return http(tcp, None, app, header_timeout, stop).await;
    };
    let tls = match tokio::time::timeout(header_timeout, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::info!(%remote, error = %e, "API TLS handshake refused");
            return;
        }
        Err(_) => {
            tracing::info!(%remote, timeout_ms = header_timeout.as_millis() as u64, "API TLS handshake not finished in time (api.header_timeout_ms); connection closed");
            return;
        }
    };
    let peer = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(PeerCert::from_der);
    http(tls, peer, app, header_timeout, stop).await
}

async fn http<S>(
    stream: S,
    peer: Option<PeerCert>,
    app: Router,
    header_timeout: Duration,
    mut stop: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        if let Some(peer) = &peer {
            req.extensions_mut().insert(peer.clone());
        }
        tower::ServiceExt::oneshot(app.clone(), req)
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let conn = builder
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        done = conn.as_mut() => {
            if let Err(e) = done {
                tracing::debug!(error = %e, "API connection ended");
            }
        }
        _ = async { let _ = stop.wait_for(|s| *s).await; } => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}
