//! How a cache node client reaches its node: the transport under the
//! generated gRPC client, and the [`Connector`] that makes one.
//!
//! Production connects over HTTP/2 ([`GrpcConnector`]). The deterministic
//! simulation (crate `dlog-sim`) hands out [`Transport::InProcess`]: the
//! real cache node's gRPC service called directly in the same process
//! (requests and answers still go through tonic's encoding), behind its
//! own fault injection. Nothing else differs for the callers.

use std::fmt;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use tonic::body::Body;
use tonic::transport::Channel;
use tower::Service;
use tower::util::BoxCloneSyncService;

use crate::manifest::NodeInfo;

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

/// Connects over the network to the node's registered address.
#[derive(Debug, Default, Clone, Copy)]
pub struct GrpcConnector;

impl Connector for GrpcConnector {
    fn connect(
        &self,
        node: &NodeInfo,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Transport, String>> {
        crate::cache_clients::grpc_connect(node, timeout)
    }
}
