//! The node's Kafka listener (`kafka.listen`): bound with the gRPC port, so
//! a taken port stops the node at start, and served once the node is
//! registered. The listener reaches the node's services through a dlog
//! client of the node's own gRPC address (docs/kafka.md).

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, bail};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::NodeConfig;

/// The listener, if `kafka.listen` turns it on.
pub async fn bind(config: &NodeConfig) -> anyhow::Result<Option<TcpListener>> {
    let Some(listen) = config.kafka.listen.as_deref() else {
        return Ok(None);
    };
    if listen.is_empty() || listen == "off" {
        return Ok(None);
    }
    if !config.roles.iter().any(|r| r == "ingest" || r == "reader") {
        bail!("kafka.listen: the Kafka listener runs on ingest and reader nodes only");
    }
    if config.auth.tokens {
        bail!(
            "kafka.listen: the Kafka listener has no client authentication yet, and this node \
             requires tokens (auth.tokens): turn one of them off"
        );
    }
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("kafka.listen: listen on {listen}"))?;
    Ok(Some(listener))
}

/// Serves Kafka clients on `listener` until `stop`; `grpc` is the node's
/// own gRPC address.
pub fn start(
    listener: TcpListener,
    config: &NodeConfig,
    node_id: &str,
    grpc: SocketAddr,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let bound = listener
        .local_addr()
        .context("kafka.listen: read the address")?;
    let advertised: SocketAddr = match &config.kafka.advertised {
        Some(addr) => addr
            .parse()
            .with_context(|| format!("kafka.advertised {addr}: expected IP:PORT"))?,
        None if bound.ip().is_unspecified() => bail!(
            "kafka.listen {bound} is a wildcard address: set kafka.advertised to the address \
             clients reach this node at"
        ),
        None => bound,
    };
    let own = if grpc.ip().is_unspecified() {
        SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), grpc.port())
    } else {
        grpc
    };
    let client = match &config.tls.ca {
        Some(ca) => {
            let pem = std::fs::read(ca).with_context(|| format!("read {}", ca.display()))?;
            let client = distributedlog::Client::new(format!("https://{own}")).with_tls(pem);
            match &config.tls.server_name {
                Some(name) => client.with_tls_server_name(name),
                None => client,
            }
        }
        None => distributedlog::Client::new(format!("http://{own}")),
    };
    let options = dlog_kafka::KafkaOptions {
        namespace: config.kafka.namespace.clone(),
        advertised,
        node_id: broker_id(node_id),
        cluster_id: "dlog".to_owned(),
        max_request_bytes: config.kafka.max_request_bytes,
        auto_create_partitions: config.kafka.auto_create_partitions,
    };
    dlog_wire::names::Namespace::new(&options.namespace)
        .with_context(|| "kafka.namespace".to_owned())?;
    tracing::info!(%bound, %advertised, namespace = %options.namespace, "serving Kafka clients");
    let gateway = Arc::new(dlog_kafka::Gateway::new(options, client));
    tokio::spawn(dlog_kafka::serve(listener, gateway, stop));
    Ok(())
}

/// The node's Kafka broker id: a hash of its node id (stable across
/// restarts, distinct between nodes with overwhelming odds), so that clients
/// given several nodes never see one broker id move between addresses.
fn broker_id(node_id: &str) -> i32 {
    // FNV-1a: fixed, unlike the standard library's seeded hasher.
    let hash = node_id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    (hash & 0x7fff_ffff) as i32
}

#[cfg(test)]
mod tests {
    #[test]
    fn broker_ids_are_stable_and_positive() {
        assert_eq!(super::broker_id("ingest-1"), super::broker_id("ingest-1"));
        assert_ne!(super::broker_id("ingest-1"), super::broker_id("ingest-2"));
        assert!(super::broker_id("standalone") >= 0);
    }
}
