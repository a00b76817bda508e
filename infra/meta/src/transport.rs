//! How a cache node client reaches its node: the transport under the
//! generated gRPC client, and the [`Connector`] that makes one.
//!
//! Production connects over HTTP/2 ([`GrpcConnector`]). The deterministic
//! simulation (crate `dlog-sim`) hands out [`Transport::InProcess`]: the
//! real cache node's gRPC service called directly in the same process
//! (requests and answers still go through tonic's encoding), behind its
//! own fault injection. Nothing else differs for the callers.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use tonic::body::Body;
use tonic::transport::Channel;
use tower::Service;
use tower::util::BoxCloneSyncService;

use crate::manifest::NodeInfo;
use crate::tls::TlsMaterial;

/// Errors of a transport.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// An in-process gRPC service standing in for a network connection.
pub type InProcessService =
    BoxCloneSyncService<http::Request<Body>, http::Response<Body>, BoxError>;

/// A connection to one cache node.
#[derive(Clone)]
pub enum Transport {
    /// HTTP/2 over the network.
    Grpc(Channel),
    /// A service in this process (simulation).
    InProcess(InProcessService),
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Transport::Grpc(channel) => f.debug_tuple("Grpc").field(channel).finish(),
            Transport::InProcess(_) => f.write_str("InProcess"),
        }
    }
}

impl Service<http::Request<Body>> for Transport {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<http::Response<Body>, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        match self {
            Transport::Grpc(channel) => channel.poll_ready(cx).map_err(Into::into),
            Transport::InProcess(service) => service.poll_ready(cx),
        }
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        match self {
            Transport::Grpc(channel) => {
                let call = channel.call(request);
                Box::pin(async move { call.await.map_err(Into::into) })
            }
            Transport::InProcess(service) => Box::pin(service.call(request)),
        }
    }
}

/// Makes the transport to a registered cache node.
pub trait Connector: fmt::Debug + Send + Sync + 'static {
    /// Connects to `node` within `timeout`; the error says why not.
    fn connect(
        &self,
        node: &NodeInfo,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Transport, String>>;
}

/// Connects over the network to the node's registered address: over TLS
/// with this node's certificate when it has one.
#[derive(Debug, Default, Clone)]
pub struct GrpcConnector {
    tls: Option<Arc<TlsMaterial>>,
}

impl GrpcConnector {
    /// Connections over TLS with `tls` (plaintext with `None`).
    pub fn with_tls(tls: Option<Arc<TlsMaterial>>) -> GrpcConnector {
        GrpcConnector { tls }
    }
}

impl Connector for GrpcConnector {
    fn connect(
        &self,
        node: &NodeInfo,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Transport, String>> {
        crate::cache_clients::grpc_connect(node, timeout, self.tls.clone())
    }
}

/// Reaches the cache node of this very process in-process and every other
/// over the network. A node with both the ingest and the cache role (as
/// `dlog standalone`) so skips the loopback TCP hop, the HTTP/2 framing and
/// two thread hand-offs on every add, while the calls still go through the
/// cache node's own gRPC service (its identity and trust checks included).
#[derive(Debug)]
pub struct LocalFirst {
    node_id: String,
    local: Transport,
    remote: GrpcConnector,
}

impl LocalFirst {
    /// `service` is the gRPC service of cache node `node_id`, run here;
    /// `remote` reaches the others.
    pub fn new<S>(node_id: &str, service: S, remote: GrpcConnector) -> LocalFirst
    where
        S: Service<
                http::Request<Body>,
                Response = http::Response<Body>,
                Error = std::convert::Infallible,
            > + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        let service = tower::ServiceExt::map_err(service, |never| match never {});
        LocalFirst {
            node_id: node_id.to_owned(),
            local: Transport::InProcess(BoxCloneSyncService::new(service)),
            remote,
        }
    }
}

impl Connector for LocalFirst {
    fn connect(
        &self,
        node: &NodeInfo,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Transport, String>> {
        if node.id == self.node_id {
            let local = self.local.clone();
            return Box::pin(async move { Ok(local) });
        }
        self.remote.connect(node, timeout)
    }
}
