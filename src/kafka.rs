//! The node's Kafka listener (`kafka.listen`): bound with the gRPC port, so
//! a taken port stops the node at start, registered with the node (its
//! address is in the node's registration and in the owner keys of the logs
//! it owns, so that Metadata can name each partition's owner as leader), and
//! served once the node is registered. The listener reaches the node's
//! services through a dlog client of the node's own gRPC address
//! (docs/kafka.md).

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, bail};
use distributedlog::{Appended, ClientError, Record};
use dlog_ingest::IngestNode;
use dlog_meta::manifest::{Manifest, NodeInfo, Role};
use dlog_wire::record::Append;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::NodeConfig;

/// A bound listener and the address clients are told.
#[derive(Debug)]
pub struct Bound {
    listener: TcpListener,
    pub advertised: SocketAddr,
}

/// The listener, if `kafka.listen` turns it on.
pub async fn bind(config: &NodeConfig) -> anyhow::Result<Option<Bound>> {
    let Some(listen) = config.kafka.listen.as_deref() else {
        return Ok(None);
    };
    if listen.is_empty() || listen == "off" {
        return Ok(None);
    }
    // Fetches are served by the node's own reader, and Metadata may send
    // any consumer to any listener node.
    if !config.roles.iter().any(|r| r == "reader") {
        bail!("kafka.listen: the Kafka listener runs on nodes with the reader role");
    }
    if config.auth.tokens {
        bail!(
            "kafka.listen: the Kafka listener has no client authentication yet, and this node \
             requires tokens (auth.tokens): turn one of them off"
        );
    }
    let listener = TcpListener::bind(listen).await.with_context(|| {
        format!(
            "kafka.listen: listen on {listen} (another port: --kafka-listen HOST:PORT; \
                 no Kafka listener: --kafka-listen off)"
        )
    })?;
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
    Ok(Some(Bound {
        listener,
        advertised,
    }))
}

/// Serves Kafka clients on `bound` until `stop`; `node_id` and `grpc` are
/// the node's id and own gRPC address, `ingest` its ingest service if it
/// has the role (plain appends are then made in process).
pub fn start(
    bound: Bound,
    config: &NodeConfig,
    node_id: &str,
    grpc: SocketAddr,
    manifest: Manifest,
    ingest: Option<Arc<IngestNode>>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
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
        advertised: bound.advertised,
        node: node_id.to_owned(),
        cluster_id: "dlog".to_owned(),
        max_request_bytes: config.kafka.max_request_bytes,
        auto_create_partitions: config.kafka.auto_create_partitions,
    };
    dlog_wire::names::Namespace::new(&options.namespace)
        .with_context(|| "kafka.namespace".to_owned())?;
    tracing::info!(
        advertised = %bound.advertised,
        namespace = %options.namespace,
        "serving Kafka clients"
    );
    let directory = Arc::new(ManifestDirectory { manifest });
    let mut gateway = dlog_kafka::Gateway::new(options, client).with_directory(directory);
    if let Some(node) = ingest {
        gateway = gateway.with_ingest(Arc::new(NodeIngest { node }));
    }
    let gateway = Arc::new(gateway);
    tokio::spawn(dlog_kafka::serve(bound.listener, gateway, stop));
    Ok(())
}

/// Partition owners and Kafka brokers, from the manifest: a node's Kafka
/// address is in its registration and in the owner keys it writes.
#[derive(Debug)]
struct ManifestDirectory {
    manifest: Manifest,
}

fn kafka_address(node: &NodeInfo) -> Option<SocketAddr> {
    node.kafka.as_deref().and_then(|a| a.parse().ok())
}

#[async_trait::async_trait]
impl dlog_kafka::Directory for ManifestDirectory {
    async fn brokers(&self) -> anyhow::Result<Vec<(String, SocketAddr)>> {
        let mut brokers = Vec::new();
        for role in [Role::Ingest, Role::Reader] {
            for node in self.manifest.nodes(role).await? {
                if let Some(addr) = kafka_address(&node) {
                    brokers.push((node.id, addr));
                }
            }
        }
        brokers.sort();
        brokers.dedup();
        Ok(brokers)
    }

    async fn owner(&self, log: &str) -> anyhow::Result<Option<(String, Option<SocketAddr>)>> {
        let log = log.parse().context("a partition's log name")?;
        let owner = self.manifest.owner(&log).await?;
        Ok(owner.map(|node| {
            let addr = kafka_address(&node);
            (node.id, addr)
        }))
    }
}

/// The node's ingest service, for the listener's plain appends: the same
/// checks and the same owner path as the node's `Append` call, without the
/// gRPC hop to itself.
#[derive(Debug)]
struct NodeIngest {
    node: Arc<IngestNode>,
}

#[async_trait::async_trait]
impl dlog_kafka::Ingest for NodeIngest {
    async fn append(&self, log: &str, records: Vec<Record>) -> Result<Appended, ClientError> {
        let append =
            Append::checked(log, records, self.node.limits()).map_err(ClientError::Record)?;
        let ack = self
            .node
            .append(append)
            .await
            .map_err(|e| ClientError::Status(dlog_ingest::error::to_status(&e)))?;
        Ok(Appended {
            first_offset: ack.first_offset,
            last_offset: ack.last_offset,
            timestamp_ms: ack.timestamp_ms,
        })
    }
}
