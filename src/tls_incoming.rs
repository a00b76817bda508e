//! The node's TLS listener: accepts TCP connections and hands the gRPC
//! server only those whose TLS handshake succeeded.
//!
//! Each handshake runs in a task of its own, bounded by
//! [`HANDSHAKE_TIMEOUT`], so a client that connects and says nothing holds
//! up no one else. Every handshake takes the node's TLS configuration as it
//! is at that moment ([`TlsMaterial::server_config`]): rotated certificate
//! files apply from the next connection, and open connections keep theirs.
//! A plaintext client fails the handshake and is closed. At most
//! [`MAX_HANDSHAKES`] run at once; connections beyond are closed.
//!
//! Not bounded here: a client that completes the handshake and then sends
//! nothing holds its connection (the HTTP/2 server has no deadline for the
//! connection preface), as on a plaintext port.

use std::sync::Arc;
use std::time::Duration;

use dlog_meta::tls::TlsMaterial;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;

/// Longest a connection may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most handshakes under way at once. A connection beyond it is closed at
/// once: a flood of connections costs the node sockets and handshakes up
/// to this bound, not its file descriptors or its CPU.
const MAX_HANDSHAKES: usize = 1024;

/// The stream of connections that completed a handshake. It ends when the
/// server stops taking them (the receiver is dropped).
pub fn incoming(
    listener: TcpListener,
    tls: Arc<TlsMaterial>,
) -> ReceiverStream<std::io::Result<TlsStream<TcpStream>>> {
    let (ready, connections) = tokio::sync::mpsc::channel(128);
    let handshakes = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = tokio::select! {
                _ = ready.closed() => return,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(err) => {
                        // Out of file descriptors and the like: pause, as
                        // tonic's own listener does.
                        tracing::warn!("accept a connection: {err}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let Ok(permit) = handshakes.clone().try_acquire_owned() else {
                tracing::debug!(%peer, "{MAX_HANDSHAKES} TLS handshakes under way: connection closed");
                continue;
            };
            // Small request/response frames must not wait for Nagle.
            let _ = tcp.set_nodelay(true);
            let acceptor = TlsAcceptor::from(tls.server_config());
            let ready = ready.clone();
            tokio::spawn(async move {
                let _permit = permit;
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = ready.send(Ok(stream)).await;
                    }
                    Ok(Err(err)) => tracing::debug!(%peer, "TLS handshake failed: {err}"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    ReceiverStream::new(connections)
}
