//! Running nodes: `dlog serve` (chosen roles) and `dlog standalone` (every
//! role in one process, embedded metastore, one cache node, `file://`
//! objects under the data directory). Each role adds its gRPC service to one
//! server on one address and registers the node in the manifest on a lease.
//!
//! Shutdown is ordered: stop accepting requests and let in-flight ones
//! finish, flush the cache journal, then revoke the lease so the node's
//! registrations vanish at once instead of after their TTL. Open streams
//! (tailing reads, append sessions, LAC long-polls) do not hold it up:
//! reads end with `UNAVAILABLE` and whatever is still open after a drain
//! period is cut. A node that loses its lease (or whose cache identity is
//! taken over) stops the same way within about a second and exits
//! non-zero, so a supervisor restarts it fresh.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use dlog_cache::confirm::{self, Confirmation};
use dlog_cache::identity;
use dlog_cache::service::CacheServer;
use dlog_cache::trust::Trust;
use dlog_cache::{CacheStore, reconcile};
use dlog_compactor::Compactor;
use dlog_ingest::pool::CachePool;
use dlog_ingest::{AdminServer, IngestNode, LogServer};
use dlog_meta::cache_clients::{CacheClients, Connector, GrpcConnector, LocalFirst};
use dlog_meta::manifest::{Manifest, NodeInfo, Replication, Role};
use dlog_meta::metastore::{self, LeaseKeeper};
use dlog_reader::{ReadEngine, ReadServer};
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;

use crate::config::NodeConfig;

/// The same after the lease was lost: nothing this node does counts any
/// more, so it only ends its streams and goes.
const DRAIN_ON_LEASE_LOSS: Duration = Duration::from_millis(600);

/// What `serve` runs: the settings, and whether this is standalone.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub config: NodeConfig,
    /// Standalone: one cache node, so logs without their own replication
    /// settings use 1/1/1.
    pub single_node: bool,
}

fn parse_roles(roles: &[String]) -> anyhow::Result<Vec<Role>> {
    if roles.is_empty() {
        bail!("--roles is required: one or more of ingest, cache, compactor, reader");
    }
    let mut parsed = Vec::new();
    for role in roles {
        let role: Role = role.trim().parse().map_err(anyhow::Error::msg)?;
        if !parsed.contains(&role) {
            parsed.push(role);
        }
    }
    Ok(parsed)
}

fn default_node_id(addr: SocketAddr) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "node".into());
    format!("{host}-{}", addr.port())
}

/// `dlog standalone`: every role in one process on `config.listen`, state
/// under `config.data_dir` (`meta/` embedded metastore, `cache/` journal,
/// `objects/` Parquet files and Iceberg table metadata,
/// `iceberg-catalog.db` the tables' SQL catalog unless one is set), until
/// `shutdown` is cancelled. It sets the roles, metastore, object store and
/// node id itself.
pub async fn standalone(mut config: NodeConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let data_dir = config
        .data_dir
        .clone()
        .context("standalone needs a data directory")?;
    let objects = data_dir.join("objects");
    std::fs::create_dir_all(&objects).with_context(|| format!("create {}", objects.display()))?;
    let data_dir = data_dir
        .canonicalize()
        .with_context(|| format!("resolve {}", data_dir.display()))?;
    config.roles = ["cache", "ingest", "compactor", "reader"]
        .map(String::from)
        .to_vec();
    config.metastore = Some(format!("embedded://{}", data_dir.join("meta").display()));
    config.object_store = Some(format!("file://{}", data_dir.join("objects").display()));
    if config.compactor.iceberg_catalog.is_empty() {
        let catalog = data_dir.join("iceberg-catalog.db");
        config.compactor.iceberg_catalog = format!("sqlite://{}?mode=rwc", catalog.display());
    }
    config.data_dir = Some(data_dir);
    config.node_id = Some("standalone".to_owned());
    let options = ServeOptions {
        config,
        single_node: true,
    };
    serve(options, shutdown).await
}

/// With one cache node, the default replication (3/3/2) could never be
/// met: make 1/1/1 the default of namespaces without their own settings.
async fn one_replica_by_default(manifest: &Manifest) -> anyhow::Result<()> {
    let mut config = manifest
        .default_namespace()
        .await
        .context("read the default namespace settings")?;
    let single = Replication {
        ensemble: 1,
        write_quorum: 1,
        ack_quorum: 1,
    };
    if config.replication != single {
        config.replication = single;
        manifest
            .put_default_namespace(&config)
            .await
            .context("set replication 1/1/1 for standalone")?;
    }
    Ok(())
}

/// Runs the roles until `shutdown` is cancelled.
pub async fn serve(options: ServeOptions, shutdown: CancellationToken) -> anyhow::Result<()> {
    let config = options.config;
    let roles = parse_roles(&config.roles)?;
    let metastore_url = config
        .metastore
        .clone()
        .context("--metastore is required (etcd://HOST:PORT[/CLUSTER] or embedded://DIR)")?;
    let listen = config
        .listen
        .clone()
        .context("--listen is required (e.g. 127.0.0.1:7070)")?;
    let data_dir = config.data_dir.clone().context("--data-dir is required")?;
    dlog_compactor::failpoint::arm(&config.compactor.failpoints);
    let http = match &config.metrics_listen {
        Some(addr) => {
            let addr = addr
                .parse()
                .with_context(|| format!("--metrics-listen {addr}: expected HOST:PORT"))?;
            Some(crate::metrics::install(addr).await?)
        }
        None => None,
    };
    let readiness = crate::http::Readiness::default();
    let mut sampled = crate::metrics::Sampled::default();
    // Checked now so a typo fails at start, not at the first offload.
    let objects = match &config.object_store {
        Some(url) => Some(dlog_storage::objstore::open(url).context("--object-store")?),
        None => None,
    };
    for role in [Role::Compactor, Role::Reader] {
        if roles.contains(&role) && objects.is_none() {
            bail!(
                "the {} role needs --object-store (s3://BUCKET[/PREFIX], file:///DIR or memory://)",
                role.as_str()
            );
        }
    }

    let etcd_tls = config.tls.etcd()?;
    let tls = match config.tls.files()? {
        Some(files) => Some(
            dlog_meta::tls::TlsMaterial::load(files, config.tls.server_name.clone())
                .map_err(|err| anyhow::anyhow!("TLS settings: {err}"))?,
        ),
        None => None,
    };
    let (store, cluster) = metastore::open_with(&metastore_url, etcd_tls.as_ref())
        .await
        .with_context(|| format!("open metastore {metastore_url}"))?;
    let manifest = Manifest::new(store.clone(), &cluster);
    if options.single_node {
        one_replica_by_default(&manifest).await?;
    }
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("listen on {listen}"))?;
    let addr = listener
        .local_addr()
        .context("read the listening address")?;
    let kafka_listener = crate::kafka::bind(&config).await?;
    let node = NodeInfo {
        id: config
            .node_id
            .clone()
            .unwrap_or_else(|| default_node_id(addr)),
        address: match tls {
            Some(_) => format!("https://{addr}"),
            None => format!("http://{addr}"),
        },
        zone: config.zone.clone().unwrap_or_default(),
        capacity: 0,
        kafka: kafka_listener.as_ref().map(|k| k.advertised.to_string()),
    };

    // Client tokens: the table every request's grant comes from.
    let token_watch_stop = CancellationToken::new();
    let _stop_token_watch = token_watch_stop.clone().drop_guard();
    let tokens = if config.auth.tokens {
        let file = data_dir.join("root-token");
        std::fs::create_dir_all(&data_dir)
            .with_context(|| format!("create {}", data_dir.display()))?;
        if let Some(path) = dlog_meta::auth::bootstrap_root_token(&manifest, &file)
            .await
            .context("create the root token")?
        {
            tracing::warn!(path = %path.display(), "no client token existed: wrote a root token (every operation, every log); keep it secret");
        }
        let table =
            dlog_meta::auth::TokenTable::watched(manifest.clone(), token_watch_stop.clone())
                .await
                .context("read the client tokens")?;
        Some(table)
    } else {
        // A cluster with tokens has every node check them: one node
        // serving without checks would let anyone through it.
        let (existing, _) = manifest.tokens().await.context("read the client tokens")?;
        if !existing.is_empty() {
            bail!(
                "the cluster has client tokens ({}): start this node with --auth-tokens \
                 (auth.tokens = true) so it checks them too",
                existing.len()
            );
        }
        None
    };

    let lease = LeaseKeeper::start(store.clone(), config.node.lease_ttl)
        .await
        .context("take a node lease")?;

    let mut routes = tonic::service::RoutesBuilder::default();
    // gRPC reflection, in both versions: grpcurl speaks v1, grpcio-reflection
    // (Python's) and several GUI tools v1alpha only. And the standard
    // health service.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(dlog_wire::proto::FILE_DESCRIPTOR_SET)
    };
    let v1 = reflection()
        .build_v1()
        .context("build the reflection service (v1)")?;
    let v1alpha = reflection()
        .build_v1alpha()
        .context("build the reflection service (v1alpha)")?;
    routes.add_service(v1);
    routes.add_service(v1alpha);
    let (health, health_service) = tonic_health::server::health_reporter();
    let mut health = crate::health::Health::new(health);
    routes.add_service(health_service);
    let mut cache_store = None;
    let mut cache_identity = None;
    // How this node's roles reach cache nodes: its own in-process.
    let remote = GrpcConnector::with_tls(tls.clone());
    let mut connector: Arc<dyn Connector> = Arc::new(remote.clone());
    if roles.contains(&Role::Cache) {
        let journal_dir = data_dir.join("cache");
        let id = identity::establish(
            &manifest,
            &journal_dir,
            &node.id,
            config.reinit_cache,
            confirm::REINIT_WAIT,
        )
        .await
        .context("check the cache directory's identity")?;
        let confirmation = Arc::new(Confirmation::new(confirm::CONFIRMATION_VALIDITY));
        if id.reinitialised {
            tracing::warn!(node = %node.id, "cache node re-initialised with an empty store");
        }
        let options = config.store_options(journal_dir);
        let cache = tokio::task::spawn_blocking(move || CacheStore::open(options))
            .await
            .context("open the cache journal")?
            .context("open the cache journal")?;
        let cache = Arc::new(cache);
        // Confirmed once more just before serving (the re-initialisation's
        // wait and the journal replay took time since `establish`).
        let checked_at = tokio::time::Instant::now();
        match identity::registration(&manifest, &id.cookie).await {
            Ok(identity::Registration::Ours) => confirmation.confirmed(checked_at),
            Ok(other) => anyhow::bail!("the cache node's identity is {other:?} in the manifest"),
            Err(err) => return Err(err).context("confirm the cache node's identity"),
        }
        let trust = Arc::new(Trust::new(manifest.clone(), &id.cookie));
        let service = CacheServer::new(cache.clone())
            .with_trust(trust)
            .with_confirmation(confirmation.clone())
            .into_service();
        connector = Arc::new(LocalFirst::new(&node.id, service.clone(), remote.clone()));
        let tls_on = tls.is_some();
        // Over the network, nodes only (with TLS: a node certificate).
        routes.add_service(tonic::service::interceptor::InterceptedService::new(
            service,
            move |request: tonic::Request<()>| {
                dlog_meta::tls::require_node_peer(&request, tls_on)?;
                Ok(request)
            },
        ));
        health
            .serving::<dlog_wire::proto::cache_service_server::CacheServiceServer<CacheServer>>()
            .await;
        sampled.cache = Some(cache.clone());
        cache_store = Some(cache);
        cache_identity = Some((id, confirmation));
    }
    // Stops the background work (orphan adoption, compactor, cache
    // reconciliation) at shutdown.
    let background_stop = CancellationToken::new();
    // Ends open read streams when the node stops.
    let streams_stop = CancellationToken::new();
    // Another instance took this cache node's id over.
    let replaced = CancellationToken::new();
    let mut ingest = None;
    // Each role keeps its own connections and suspects, as before.
    let cache_clients = || {
        Arc::new(CacheClients::with_connector(
            manifest.clone(),
            connector.clone(),
        ))
    };
    if roles.contains(&Role::Ingest) {
        let pool = CachePool::with_connector(manifest.clone(), connector.clone());
        let node = IngestNode::with_pool(
            manifest.clone(),
            node.clone(),
            lease.lease,
            lease.lost.clone(),
            config.ingest_options(),
            Arc::new(pool),
        );
        sampled.ingest = Some(node.clone());
        routes.add_service(LogServer::new(node.clone()).into_service());
        routes.add_service(AdminServer::new(node.clone()).into_service());
        health
            .serving::<dlog_wire::proto::admin_service_server::AdminServiceServer<AdminServer>>()
            .await;
        health
            .serving::<dlog_wire::proto::log_service_server::LogServiceServer<LogServer>>()
            .await;
        ingest = Some(node);
    }

    if let (true, Some(objects)) = (roles.contains(&Role::Reader), &objects) {
        let engine = Arc::new(
            ReadEngine::with_cache_clients(
                manifest.clone(),
                objects.clone(),
                config.reader.clone(),
                cache_clients(),
            )
            .with_zone(&node.zone),
        );
        sampled.reader = Some(engine.clone());
        routes.add_service(
            ReadServer::new(engine)
                .stop_streams_on(streams_stop.clone())
                .into_service(),
        );
        health
            .serving::<dlog_wire::proto::read_service_server::ReadServiceServer<ReadServer>>()
            .await;
    }

    let mut compactor_task = None;
    if let (true, Some(shared)) = (roles.contains(&Role::Compactor), objects) {
        // S3 through a handle of its own: whole files go up in one request,
        // which may take longer than other roles' requests should wait.
        let url = config.object_store.as_deref().unwrap_or_default();
        let objects = if url.starts_with("s3://") {
            dlog_storage::objstore::open_for_uploads(url).context("--object-store")?
        } else {
            shared
        };
        let options = config.compactor_options();
        let catalog = &config.compactor.iceberg_catalog;
        let tables = if catalog.is_empty() {
            None
        } else {
            let tables = dlog_compactor::LogTables::open(catalog, objects.clone())
                .await
                .with_context(|| {
                    let shown = dlog_compactor::table::redacted_uri(catalog);
                    format!("open the Iceberg catalog {shown}")
                })?;
            Some(Arc::new(tables))
        };
        let mut compactor = Compactor::new(
            manifest.clone(),
            objects,
            node.id.clone(),
            lease.lease,
            options,
        )
        .with_cache_clients(cache_clients());
        if let Some(tables) = tables {
            compactor = compactor.with_tables(tables);
        }
        compactor_task = Some(tokio::spawn(compactor.run(background_stop.clone())));
    }

    for role in &roles {
        manifest
            .register_node(*role, &node, lease.lease)
            .await
            .with_context(|| format!("register as a {} node", role.as_str()))?;
    }
    // After registration: adopting a log may recover it from this very
    // node's cache role, which must be findable (and the listener is bound).
    if let Some(node) = &ingest {
        tokio::spawn(dlog_ingest::orphans::adopt_orphans(
            node.clone(),
            background_stop.clone(),
        ));
    }
    if let (Some(cache), Some((id, confirmation))) = (&cache_store, &cache_identity) {
        tokio::spawn(confirm::keep_confirming(
            manifest.clone(),
            id.cookie.clone(),
            confirmation.clone(),
            background_stop.clone(),
            replaced.clone(),
        ));
        let period = config.cache.reconcile_interval;
        tokio::spawn(reconcile::run(
            cache.clone(),
            manifest.clone(),
            id.cookie.clone(),
            period,
            background_stop.clone(),
            replaced.clone(),
        ));
    }
    if let Some((listener, recorder)) = http {
        tokio::spawn(crate::http::serve(
            listener,
            recorder.clone(),
            readiness.clone(),
            background_stop.clone(),
        ));
        tokio::spawn(crate::metrics::sample(
            sampled,
            recorder,
            config.node.metrics_sample_interval,
            background_stop.clone(),
        ));
    }
    if let Some(kafka) = kafka_listener {
        crate::kafka::start(
            kafka,
            &config,
            &node.id,
            addr,
            manifest.clone(),
            ingest.clone(),
            background_stop.clone(),
        )?;
    }
    // Registered, listening: load balancers may send work.
    readiness.set(true);
    let role_names: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
    tracing::info!(node = %node.id, zone = %node.zone, %addr, roles = %role_names.join(","), "serving");

    // Each request's token, as a grant the services check (none when
    // tokens are off: every call allowed).
    let grants = tonic::service::interceptor::InterceptorLayer::new(
        move |mut request: tonic::Request<()>| {
            if let Some(table) = &tokens {
                let grant = table.grant(request.metadata());
                request.extensions_mut().insert(grant);
            }
            Ok(request)
        },
    );
    let graceful = CancellationToken::new();
    // Hostile or broken clients: bounded streams per connection, bounded
    // headers, bounded unread bytes (the windows), and connections whose
    // peer stopped answering pings are closed.
    let server = tonic::transport::Server::builder()
        .initial_connection_window_size(dlog_wire::http2::CONNECTION_WINDOW)
        .initial_stream_window_size(dlog_wire::http2::STREAM_WINDOW)
        .max_concurrent_streams(Some(config.node.max_streams_per_connection))
        .http2_max_header_list_size(Some(dlog_wire::http2::MAX_HEADER_LIST_BYTES))
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .layer(grants)
        .add_routes(routes.routes());
    let until = graceful.clone().cancelled_owned();
    let server: futures::future::BoxFuture<'_, Result<(), tonic::transport::Error>> = match &tls {
        Some(tls) => {
            tokio::spawn(
                tls.clone()
                    .watch(config.tls.reload_interval, background_stop.clone()),
            );
            let incoming = crate::tls_incoming::incoming(listener, tls.clone());
            Box::pin(server.serve_with_incoming_shutdown(incoming, until))
        }
        None => {
            // Small request/response frames must not wait for Nagle's
            // algorithm.
            let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
            Box::pin(server.serve_with_incoming_shutdown(incoming, until))
        }
    };
    tokio::pin!(server);
    let why = tokio::select! {
        // Unasked, the server only ends when its listener does: a failure,
        // so that a supervisor restarts the node.
        result = &mut server => Stop::ServerEnded(
            result
                .context("serve gRPC")
                .and_then(|()| Err(anyhow::anyhow!("the gRPC listener stopped"))),
        ),
        _ = shutdown.cancelled() => Stop::Requested,
        _ = lease.lost.cancelled() => Stop::LeaseLost,
        _ = replaced.cancelled() => Stop::Replaced,
    };
    let drain = match &why {
        Stop::Requested => config.node.shutdown_drain,
        Stop::LeaseLost => {
            tracing::error!("lost the node lease; stopping");
            DRAIN_ON_LEASE_LOSS
        }
        Stop::Replaced => DRAIN_ON_LEASE_LOSS,
        Stop::ServerEnded(_) => Duration::ZERO,
    };
    // Before anything stops accepting work.
    readiness.set(false);
    health.draining().await;
    let mut result = Ok(());
    if let Stop::ServerEnded(ended) = why {
        result = ended;
    } else {
        let drained = tokio::time::timeout(drain, async {
            // Owners finish what is in flight and seal before the server
            // stops (at once when the lease is gone).
            if let Some(ingest) = &ingest {
                ingest.shut_down().await;
            }
            streams_stop.cancel();
            graceful.cancel();
            (&mut server).await
        })
        .await;
        match drained {
            Ok(served) => result = served.context("serve gRPC"),
            Err(_) => tracing::warn!(
                ?drain,
                "requests still open after the drain period; cutting them"
            ),
        }
    }
    streams_stop.cancel();
    background_stop.cancel();
    let lease_gone = lease.lost.is_cancelled();
    if let Some(task) = compactor_task {
        if lease_gone {
            task.abort();
        }
        let _ = task.await;
    }
    if let Some(cache) = cache_store {
        tokio::task::spawn_blocking(move || cache.shutdown())
            .await
            .ok();
    }
    lease.stop();
    if lease_gone {
        result = result.and(Err(anyhow::anyhow!("lost the node lease")));
    } else {
        if let Err(err) = store.lease_revoke(lease.lease).await {
            tracing::warn!("deregistering failed (the lease expires on its own): {err:#}");
        }
        if replaced.is_cancelled() {
            result = result.and(Err(anyhow::anyhow!(
                "another instance registered this cache node's id"
            )));
        }
    }
    drop(cache_identity);
    tracing::info!(node = %node.id, "stopped");
    result
}

/// Why `serve` stops.
enum Stop {
    Requested,
    LeaseLost,
    Replaced,
    ServerEnded(anyhow::Result<()>),
}

/// Cancels the token on Ctrl-C or SIGTERM.
pub fn cancel_on_signals(token: CancellationToken) {
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(err) => {
                    tracing::warn!("cannot watch SIGTERM: {err}");
                    let _ = tokio::signal::ctrl_c().await;
                    token.cancel();
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down");
        token.cancel();
    });
}
