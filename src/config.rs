//! The settings of a node (`dlog serve`, `dlog standalone`): every tunable
//! of every role, in one struct, read in layers (each overrides the one
//! before):
//!
//! 1. the defaults (those of the roles' `*Options`);
//! 2. the TOML file of `--config`;
//! 3. environment variables `DLOG_<KEY>`, with `__` between a section and
//!    its key (`DLOG_INGEST__LINGER=2ms`); variables that name no setting
//!    (`DLOG_ENDPOINT`, the CLI's) are left alone;
//! 4. the flags.
//!
//! Durations are human-readable (`"10s"`, `"2ms"`, `"1day"`); sizes are
//! bytes. Every key is documented in docs/configuration.md, and a test
//! checks that the page names each one. This module is the only place the
//! node reads its environment.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use dlog_cache::StoreOptions;
use dlog_compactor::CompactorOptions;
use dlog_ingest::IngestOptions;
use dlog_reader::ReaderOptions;
use figment::providers::{Env, Serialized};
use figment::value::{Dict, Map};
use figment::{Figment, Metadata, Profile, Provider};
use serde::{Deserialize, Deserializer, Serialize};

/// Longest zone name: a segment's metadata carries its replicas' zones.
const MAX_ZONE_LEN: usize = 64;

/// Everything a node runs with.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// Roles this node runs: ingest, cache, compactor, reader.
    #[serde(deserialize_with = "list_or_commas")]
    pub roles: Vec<String>,
    /// `etcd://HOST:PORT[,HOST:PORT..][/CLUSTER]` or `embedded://DIR`.
    pub metastore: Option<String>,
    /// `s3://BUCKET[/PREFIX]`, `file:///DIR` or `memory://`.
    pub object_store: Option<String>,
    /// gRPC address, `HOST:PORT`.
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    /// Text even when it looks like a number (`DLOG_NODE_ID=7`).
    #[serde(deserialize_with = "text_or_number")]
    pub node_id: Option<String>,
    /// Prometheus metrics on `HOST:PORT`; off if unset.
    pub metrics_listen: Option<String>,
    /// Cache role: rejoin under a registered id whose data is gone.
    pub reinit_cache: bool,
    /// The node's availability zone (any label; unset: none), registered
    /// with the node: ensembles spread over the cache nodes' zones, and
    /// readers prefer replicas in their own (ARCHITECTURE.md, "Replica
    /// placement").
    pub zone: Option<String>,
    pub node: NodeSection,
    pub ingest: IngestSection,
    pub cache: CacheSection,
    pub compactor: CompactorSection,
    /// The reader role's options as they are.
    pub reader: ReaderOptions,
    pub auth: AuthSection,
    pub tls: TlsSection,
    pub kafka: KafkaSection,
}

/// The Kafka-protocol listener (docs/kafka.md).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaSection {
    /// `HOST:PORT` to serve Kafka clients on; off if unset or `off`
    /// (standalone: `127.0.0.1:9092` unless set).
    pub listen: Option<String>,
    /// `HOST:PORT` Metadata gives clients for this node (default: the
    /// listening address, which must then not be a wildcard).
    pub advertised: Option<String>,
    /// The namespace whose logs are the topics' partitions.
    pub namespace: String,
    /// Largest request frame, bytes; a larger one closes the connection.
    pub max_request_bytes: usize,
    /// Partitions of a topic Kafka clients create by using it (Kafka's
    /// `num.partitions`); 0 turns auto-creation off.
    pub auto_create_partitions: i32,
}

impl Default for KafkaSection {
    fn default() -> Self {
        KafkaSection {
            listen: None,
            advertised: None,
            namespace: "kafka".to_owned(),
            max_request_bytes: dlog_kafka::DEFAULT_MAX_REQUEST_BYTES,
            auto_create_partitions: 1,
        }
    }
}

/// TLS on the node's gRPC port, to other nodes, and to etcd.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsSection {
    /// The node's certificate chain (PEM). With `key` and `ca`, the node
    /// serves TLS only and registers an `https://` address.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// The cluster CA (PEM): node certificates and client certificates
    /// chain to it.
    pub ca: Option<PathBuf>,
    /// The name node certificates are checked against when this node
    /// connects to another (default: the host of the registered address).
    pub server_name: Option<String>,
    /// How often the three files are checked for a rotation.
    #[serde(with = "humantime_serde")]
    pub reload_interval: Duration,
    /// The CA of etcd's certificate: with it, the node talks TLS to etcd.
    pub etcd_ca: Option<PathBuf>,
    /// A client certificate and key for etcd (`--client-cert-auth`).
    pub etcd_cert: Option<PathBuf>,
    pub etcd_key: Option<PathBuf>,
}

impl Default for TlsSection {
    fn default() -> Self {
        TlsSection {
            cert: None,
            key: None,
            ca: None,
            server_name: None,
            reload_interval: Duration::from_secs(10),
            etcd_ca: None,
            etcd_cert: None,
            etcd_key: None,
        }
    }
}

impl TlsSection {
    /// The node's TLS files, all three or none.
    pub fn files(&self) -> anyhow::Result<Option<dlog_meta::tls::TlsFiles>> {
        match (&self.cert, &self.key, &self.ca) {
            (Some(cert), Some(key), Some(ca)) => Ok(Some(dlog_meta::tls::TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                ca: ca.clone(),
            })),
            (None, None, None) => Ok(None),
            _ => {
                bail!("settings: tls.cert, tls.key and tls.ca go together: give all three or none")
            }
        }
    }

    /// TLS to etcd, if set.
    pub fn etcd(&self) -> anyhow::Result<Option<dlog_meta::metastore::EtcdTls>> {
        match (&self.etcd_ca, &self.etcd_cert, &self.etcd_key) {
            (None, None, None) => Ok(None),
            (Some(ca), cert, key) if cert.is_some() == key.is_some() => {
                Ok(Some(dlog_meta::metastore::EtcdTls {
                    ca: ca.clone(),
                    cert: cert.clone(),
                    key: key.clone(),
                }))
            }
            (None, _, _) => bail!("settings: tls.etcd_cert and tls.etcd_key need tls.etcd_ca"),
            _ => bail!("settings: tls.etcd_cert and tls.etcd_key go together"),
        }
    }
}

/// Who may call the node.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSection {
    /// Require a client token (`authorization: Bearer dlog_…`) on
    /// LogService, ReadService and AdminService. The first node to start
    /// with it and no token in the cluster writes a root token to
    /// `DATA_DIR/root-token`.
    pub tokens: bool,
}

/// The top-level keys, for telling the environment variables that are
/// settings from those that are not: plain keys, then the sections.
const TOP_KEYS: [&str; 17] = [
    "roles",
    "metastore",
    "object_store",
    "listen",
    "data_dir",
    "node_id",
    "metrics_listen",
    "reinit_cache",
    "zone",
    "node",
    "ingest",
    "cache",
    "compactor",
    "reader",
    "auth",
    "tls",
    "kafka",
];

/// Settings of the process, whatever its roles.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeSection {
    /// TTL of the node's lease in the metastore.
    #[serde(with = "humantime_serde")]
    pub lease_ttl: Duration,
    /// How long a clean stop (SIGTERM) lets work finish before it cuts
    /// open connections.
    #[serde(with = "humantime_serde")]
    pub shutdown_drain: Duration,
    /// How often gauges are sampled for the metrics page.
    #[serde(with = "humantime_serde")]
    pub metrics_sample_interval: Duration,
    /// Streams one client connection may have open at once; more wait in
    /// the client.
    pub max_streams_per_connection: u32,
}

impl Default for NodeSection {
    fn default() -> Self {
        NodeSection {
            lease_ttl: Duration::from_secs(10),
            shutdown_drain: Duration::from_secs(10),
            metrics_sample_interval: Duration::from_secs(5),
            max_streams_per_connection: dlog_wire::http2::MAX_STREAMS_PER_CONNECTION,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestSection {
    #[serde(with = "humantime_serde")]
    pub linger: Duration,
    pub max_entry_bytes: usize,
    pub max_in_flight_bytes: usize,
    pub max_node_in_flight_bytes: usize,
    #[serde(with = "humantime_serde")]
    pub roll_drain_timeout: Duration,
}

impl Default for IngestSection {
    fn default() -> Self {
        let options = IngestOptions::default();
        IngestSection {
            linger: options.owner.linger,
            max_entry_bytes: options.owner.max_entry_bytes,
            max_in_flight_bytes: options.owner.max_in_flight_bytes,
            max_node_in_flight_bytes: options.max_node_in_flight_bytes,
            roll_drain_timeout: options.owner.drain_timeout,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheSection {
    pub hot_cache_bytes: u64,
    pub journal_roll_bytes: u64,
    pub journal_max_batch_bytes: usize,
    #[serde(with = "humantime_serde")]
    pub reconcile_interval: Duration,
}

impl Default for CacheSection {
    fn default() -> Self {
        let options = StoreOptions::new("");
        CacheSection {
            hot_cache_bytes: options.hot_cache_bytes,
            journal_roll_bytes: options.journal.roll_bytes,
            journal_max_batch_bytes: options.journal.max_batch_bytes,
            reconcile_interval: dlog_cache::reconcile::DEFAULT_PERIOD,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CompactorSection {
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub cache_drop_grace: Duration,
    /// `0s`: never.
    #[serde(with = "humantime_serde")]
    pub orphan_sweep_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub keep_purge_records: Duration,
    /// The Iceberg catalog the logs' tables are registered in: the SQL
    /// catalog at `sqlite:///PATH?mode=rwc` or `postgres://...`, or the AWS
    /// Glue Data Catalog at `glue://?region=REGION` (optional
    /// `&catalog_id=ACCOUNT`, `&endpoint=URL`; credentials from the
    /// standard AWS chain); empty: no tables. Standalone mode defaults it
    /// to a SQLite file in its data folder.
    pub iceberg_catalog: String,
    /// How long a file removed from a table stays in the object store.
    #[serde(with = "humantime_serde")]
    pub table_file_grace: Duration,
    /// Adjacent offloaded segments whose files are smaller are merged into
    /// files of up to this many bytes; 0: no merging.
    pub merge_target_bytes: u64,
    /// Tests only: crash points to abort at.
    #[serde(deserialize_with = "list_or_commas")]
    pub failpoints: Vec<String>,
}

impl Default for CompactorSection {
    fn default() -> Self {
        let options = CompactorOptions::default();
        CompactorSection {
            poll_interval: options.poll_interval,
            cache_drop_grace: options.cache_drop_grace,
            orphan_sweep_interval: options.orphan_sweep_interval.unwrap_or(Duration::ZERO),
            keep_purge_records: options.keep_purge_records,
            iceberg_catalog: String::new(),
            table_file_grace: options.table_file_grace,
            merge_target_bytes: options.merge_target_bytes,
            failpoints: Vec::new(),
        }
    }
}

/// A list, or one string of comma-separated items (as an environment
/// variable gives it: `DLOG_ROLES=ingest,cache`).
fn list_or_commas<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ListOrCommas {
        List(Vec<String>),
        Commas(String),
    }
    Ok(match ListOrCommas::deserialize(deserializer)? {
        ListOrCommas::List(items) => items,
        ListOrCommas::Commas(text) => text
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
    })
}

/// An optional text that an environment variable may give as a number.
fn text_or_number<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum TextOrNumber {
        Text(String),
        Unsigned(u64),
        Signed(i64),
    }
    Ok(
        Option::<TextOrNumber>::deserialize(deserializer)?.map(|value| match value {
            TextOrNumber::Text(text) => text,
            TextOrNumber::Unsigned(n) => n.to_string(),
            TextOrNumber::Signed(n) => n.to_string(),
        }),
    )
}

/// The settings file as a layer, named by its path in errors.
struct TomlFile {
    path: PathBuf,
    table: toml::Table,
}

impl TomlFile {
    fn read(path: &Path) -> anyhow::Result<TomlFile> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("read config file {}", path.display()))?;
        let table = text
            .parse()
            .with_context(|| format!("parse config file {}", path.display()))?;
        Ok(TomlFile {
            path: path.to_owned(),
            table,
        })
    }
}

impl Provider for TomlFile {
    fn metadata(&self) -> Metadata {
        Metadata::named(format!("config file {}", self.path.display()))
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Serialized::defaults(&self.table).data()
    }
}

/// The environment layer: `DLOG_` variables whose name starts with a
/// setting's top-level key.
fn environment() -> Env {
    Env::prefixed("DLOG_").split("__").filter(|key| {
        let top = key.as_str().split('.').next().unwrap_or_default();
        TOP_KEYS.iter().any(|k| k.eq_ignore_ascii_case(top))
    })
}

/// Sections of the settings (the top-level keys from `node` on):
/// `DLOG_<SECTION>_<KEY>` with one underscore is a mistake for
/// `DLOG_<SECTION>__<KEY>`.
const SECTIONS: &[&str] = TOP_KEYS.split_at(9).1;

/// Environment variables of earlier versions, and what replaced them.
const RENAMED: [(&str, &str); 6] = [
    (
        "DLOG_NODE_LEASE_TTL_SECS",
        "DLOG_NODE__LEASE_TTL (e.g. 10s)",
    ),
    (
        "DLOG_CACHE_DROP_GRACE_SECS",
        "DLOG_COMPACTOR__CACHE_DROP_GRACE",
    ),
    (
        "DLOG_ORPHAN_SWEEP_SECS",
        "DLOG_COMPACTOR__ORPHAN_SWEEP_INTERVAL",
    ),
    (
        "DLOG_CACHE_RECONCILE_SECS",
        "DLOG_CACHE__RECONCILE_INTERVAL",
    ),
    (
        "DLOG_METRICS_SAMPLE_MS",
        "DLOG_NODE__METRICS_SAMPLE_INTERVAL",
    ),
    ("DLOG_FAILPOINTS", "DLOG_COMPACTOR__FAILPOINTS"),
];

/// Refuses `DLOG_*` variables that look like settings but would be
/// ignored: a renamed one, or a section and key joined by one underscore.
fn check_environment(vars: impl Iterator<Item = String>) -> anyhow::Result<()> {
    for name in vars {
        if let Some((_, instead)) = RENAMED.iter().find(|(old, _)| *old == name) {
            bail!("settings: {name} is no longer read; use {instead} (docs/configuration.md)");
        }
        let Some(key) = name.strip_prefix("DLOG_").map(str::to_ascii_lowercase) else {
            continue;
        };
        let top = key.split("__").next().unwrap_or_default();
        if TOP_KEYS.contains(&top) {
            continue;
        }
        if let Some(section) = SECTIONS
            .iter()
            .find(|section| top.starts_with(&format!("{section}_")))
        {
            let rest = &name["DLOG_".len() + section.len() + 1..];
            bail!(
                "settings: {name} names no setting; a key of [{section}] is \
                 DLOG_{}__{rest} (docs/configuration.md)",
                section.to_ascii_uppercase()
            );
        }
    }
    Ok(())
}

/// Layers for one node: `defaults`, the file, the environment, `flags`
/// (only the keys they set).
pub fn load(
    defaults: NodeConfig,
    file: Option<&Path>,
    flags: &[(&str, figment::value::Value)],
) -> anyhow::Result<NodeConfig> {
    let mut figment = Figment::from(Serialized::defaults(defaults));
    if let Some(path) = file {
        figment = figment.merge(TomlFile::read(path)?);
    }
    check_environment(std::env::vars().map(|(name, _)| name))?;
    figment = figment.merge(environment());
    for (key, value) in flags {
        figment = figment.merge(Serialized::default(key, value.clone()));
    }
    let config: NodeConfig = figment.extract().map_err(one_line)?;
    config.check()?;
    Ok(config)
}

/// figment's error (which names the key and where its value came from) as
/// one line.
fn one_line(err: figment::Error) -> anyhow::Error {
    anyhow::anyhow!(
        "settings: {}",
        err.into_iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("; ")
    )
}

impl NodeConfig {
    /// Refuses values no node can run with.
    fn check(&self) -> anyhow::Result<()> {
        // Every duration: at most a year (longer would overflow instants);
        // those marked must not be zero.
        const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);
        for (key, value, not_zero) in [
            ("node.lease_ttl", self.node.lease_ttl, true),
            ("node.shutdown_drain", self.node.shutdown_drain, false),
            (
                "node.metrics_sample_interval",
                self.node.metrics_sample_interval,
                true,
            ),
            ("ingest.linger", self.ingest.linger, false),
            (
                "ingest.roll_drain_timeout",
                self.ingest.roll_drain_timeout,
                true,
            ),
            (
                "cache.reconcile_interval",
                self.cache.reconcile_interval,
                true,
            ),
            (
                "compactor.poll_interval",
                self.compactor.poll_interval,
                true,
            ),
            (
                "compactor.cache_drop_grace",
                self.compactor.cache_drop_grace,
                false,
            ),
            (
                "compactor.orphan_sweep_interval",
                self.compactor.orphan_sweep_interval,
                false,
            ),
            (
                "compactor.keep_purge_records",
                self.compactor.keep_purge_records,
                false,
            ),
            ("tls.reload_interval", self.tls.reload_interval, true),
        ] {
            if not_zero && value.is_zero() {
                bail!("settings: {key} must be more than 0s");
            }
            if value > YEAR {
                bail!("settings: {key} must be at most a year");
            }
        }
        if self.node.lease_ttl < Duration::from_secs(1) || self.node.lease_ttl.subsec_nanos() != 0 {
            bail!(
                "settings: node.lease_ttl must be whole seconds, at least 1s \
                 (the metastore counts in seconds)"
            );
        }
        let sweep = self.compactor.orphan_sweep_interval;
        if !sweep.is_zero() && self.compactor.keep_purge_records < sweep {
            bail!(
                "settings: compactor.keep_purge_records must be at least \
                 compactor.orphan_sweep_interval (a purge record must outlive a sweep)"
            );
        }
        if self.compactor.merge_target_bytes > dlog_meta::manifest::MAX_ROLL_BYTES {
            bail!(
                "settings: compactor.merge_target_bytes must be at most {} \
                 (a merged file is uploaded in one request)",
                dlog_meta::manifest::MAX_ROLL_BYTES
            );
        }
        if let Some(zone) = &self.zone
            && (zone.trim() != zone
                || zone.chars().any(char::is_control)
                || zone.len() > MAX_ZONE_LEN)
        {
            bail!(
                "settings: zone {zone:?} must be at most {MAX_ZONE_LEN} bytes, \
                 without surrounding spaces or control characters"
            );
        }
        self.tls.files()?;
        self.tls.etcd()?;
        for (key, value) in [
            ("ingest.max_entry_bytes", self.ingest.max_entry_bytes),
            (
                "ingest.max_in_flight_bytes",
                self.ingest.max_in_flight_bytes,
            ),
            (
                "ingest.max_node_in_flight_bytes",
                self.ingest.max_node_in_flight_bytes,
            ),
            (
                "node.max_streams_per_connection",
                self.node.max_streams_per_connection as usize,
            ),
            (
                "cache.journal_max_batch_bytes",
                self.cache.journal_max_batch_bytes,
            ),
            ("reader.max_batch_records", self.reader.max_batch_records),
            ("reader.max_batch_bytes", self.reader.max_batch_bytes),
            ("reader.max_reads", self.reader.max_reads),
            (
                "reader.max_reads_per_client",
                self.reader.max_reads_per_client,
            ),
        ] {
            if value == 0 {
                bail!("settings: {key} must be more than 0");
            }
        }
        if self.cache.journal_roll_bytes == 0 {
            bail!("settings: cache.journal_roll_bytes must be more than 0");
        }
        Ok(())
    }

    /// The effective settings as TOML (`--print-config`).
    pub fn to_toml(&self) -> anyhow::Result<String> {
        toml::to_string(self).context("print the settings")
    }

    pub fn ingest_options(&self) -> IngestOptions {
        let mut options = IngestOptions::default();
        options.owner.linger = self.ingest.linger;
        options.owner.max_entry_bytes = self.ingest.max_entry_bytes;
        options.owner.max_in_flight_bytes = self.ingest.max_in_flight_bytes;
        options.owner.drain_timeout = self.ingest.roll_drain_timeout;
        options.max_node_in_flight_bytes = self.ingest.max_node_in_flight_bytes;
        options
    }

    pub fn store_options(&self, journal_dir: PathBuf) -> StoreOptions {
        let mut options = StoreOptions::new(journal_dir);
        options.hot_cache_bytes = self.cache.hot_cache_bytes;
        options.journal.roll_bytes = self.cache.journal_roll_bytes;
        options.journal.max_batch_bytes = self.cache.journal_max_batch_bytes;
        options
    }

    pub fn compactor_options(&self) -> CompactorOptions {
        let section = &self.compactor;
        CompactorOptions {
            poll_interval: section.poll_interval,
            cache_drop_grace: section.cache_drop_grace,
            orphan_sweep_interval: Some(section.orphan_sweep_interval)
                .filter(|every| !every.is_zero()),
            keep_purge_records: section.keep_purge_records,
            table_file_grace: section.table_file_grace,
            merge_target_bytes: section.merge_target_bytes,
            ..CompactorOptions::default()
        }
    }
}

#[cfg(test)]
// `figment::Jail`'s closures return its (large) error type.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use figment::value::Value;

    /// Every key of the settings, dotted (`ingest.linger`).
    fn keys() -> Vec<String> {
        // Unset options are left out of the TOML: set them to list them.
        let config = NodeConfig {
            metastore: Some(String::new()),
            object_store: Some(String::new()),
            listen: Some(String::new()),
            data_dir: Some(PathBuf::new()),
            node_id: Some(String::new()),
            metrics_listen: Some(String::new()),
            zone: Some(String::new()),
            ..NodeConfig::default()
        };
        let table: toml::Table = config.to_toml().unwrap().parse().unwrap();
        let mut keys = Vec::new();
        for (key, value) in table {
            match value {
                toml::Value::Table(section) => {
                    keys.extend(section.keys().map(|k| format!("{key}.{k}")))
                }
                _ => keys.push(key),
            }
        }
        keys
    }

    #[test]
    fn every_key_is_documented_and_every_top_key_reaches_the_environment_filter() {
        let page = include_str!("../docs/configuration.md");
        let keys = keys();
        assert!(keys.len() > 30, "{keys:?}");
        // The sections are the top-level keys that hold keys.
        let sections: Vec<&str> = TOP_KEYS
            .iter()
            .copied()
            .filter(|top| keys.iter().any(|key| key.starts_with(&format!("{top}."))))
            .collect();
        assert_eq!(sections, SECTIONS);
        for key in &keys {
            assert!(
                page.contains(&format!("`{key}`")),
                "docs/configuration.md lacks `{key}`"
            );
            let top = key.split('.').next().unwrap();
            assert!(TOP_KEYS.contains(&top), "TOP_KEYS lacks {top}");
        }
        assert_eq!(TOP_KEYS.len(), {
            let mut tops: Vec<_> = keys.iter().map(|k| k.split('.').next().unwrap()).collect();
            tops.dedup();
            tops.len()
        });
    }

    #[test]
    fn layers_override_in_order_and_durations_read_as_text() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "node.toml",
                r#"
                roles = ["ingest", "cache"]
                listen = "127.0.0.1:1"
                [ingest]
                linger = "3ms"
                max_in_flight_bytes = 1000
                [compactor]
                orphan_sweep_interval = "0s"
                "#,
            )?;
            jail.set_env("DLOG_LISTEN", "127.0.0.1:2");
            jail.set_env("DLOG_INGEST__LINGER", "4ms");
            jail.set_env("DLOG_CACHE__RECONCILE_INTERVAL", "2s");
            // Not a setting: left alone.
            jail.set_env("DLOG_ENDPOINT", "http://elsewhere");
            // The zone Terraform writes to the node's environment.
            jail.set_env("DLOG_ZONE", "eu-west-1a");
            let flags = [("listen", Value::from("127.0.0.1:3"))];
            let config = load(NodeConfig::default(), Some(Path::new("node.toml")), &flags).unwrap();
            assert_eq!(config.roles, ["ingest", "cache"]);
            assert_eq!(config.listen.as_deref(), Some("127.0.0.1:3"));
            assert_eq!(config.ingest.linger, Duration::from_millis(4));
            assert_eq!(config.ingest.max_in_flight_bytes, 1000);
            assert_eq!(config.cache.reconcile_interval, Duration::from_secs(2));
            assert_eq!(config.zone.as_deref(), Some("eu-west-1a"));
            assert_eq!(config.compactor_options().orphan_sweep_interval, None);
            // Untouched keys keep the roles' defaults.
            assert_eq!(config.reader.max_reads, ReaderOptions::default().max_reads);
            // Printed, the settings read back the same.
            let printed = config.to_toml().unwrap();
            assert!(printed.contains("linger = \"4ms\""), "{printed}");
            jail.set_env("DLOG_ROLES", "reader, compactor");
            let config = load(NodeConfig::default(), None, &[]).unwrap();
            assert_eq!(config.roles, ["reader", "compactor"]);
            // The flag wins over the environment.
            let flags = [("zone", Value::from("b"))];
            let config = load(NodeConfig::default(), None, &flags).unwrap();
            assert_eq!(config.zone.as_deref(), Some("b"));
            let flags = [("zone", Value::from(" b"))];
            let err = load(NodeConfig::default(), None, &flags)
                .unwrap_err()
                .to_string();
            assert!(err.contains("zone"), "{err}");
            let flags = [("zone", Value::from("z".repeat(65)))];
            let err = load(NodeConfig::default(), None, &flags)
                .unwrap_err()
                .to_string();
            assert!(err.contains("at most 64 bytes"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn a_bad_key_or_value_is_one_line_naming_it_and_its_source() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("typo.toml", "[ingest]\nlingr = \"3ms\"\n")?;
            let err = load(NodeConfig::default(), Some(Path::new("typo.toml")), &[])
                .unwrap_err()
                .to_string();
            assert!(err.contains("lingr"), "{err}");
            assert!(err.contains("typo.toml"), "{err}");
            assert!(!err.contains('\n'), "{err}");

            jail.set_env("DLOG_NODE__LEASE_TTL", "soon");
            let err = load(NodeConfig::default(), None, &[])
                .unwrap_err()
                .to_string();
            assert!(err.to_lowercase().contains("node.lease_ttl"), "{err}");
            jail.set_env("DLOG_NODE__LEASE_TTL", "0s");
            let err = load(NodeConfig::default(), None, &[])
                .unwrap_err()
                .to_string();
            assert!(err.contains("node.lease_ttl must be"), "{err}");
            jail.set_env("DLOG_NODE__LEASE_TTL", "1500ms");
            let err = load(NodeConfig::default(), None, &[])
                .unwrap_err()
                .to_string();
            assert!(err.contains("whole seconds"), "{err}");
            jail.set_env("DLOG_NODE__LEASE_TTL", "10s");
            jail.set_env("DLOG_INGEST__LINGER", "300000000years");
            let err = load(NodeConfig::default(), None, &[])
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("ingest.linger must be at most a year"),
                "{err}"
            );
            jail.set_env("DLOG_INGEST__LINGER", "1ms");
            // A numeric node id from the environment is still an id.
            jail.set_env("DLOG_NODE_ID", "7");
            let config = load(NodeConfig::default(), None, &[]).unwrap();
            assert_eq!(config.node_id.as_deref(), Some("7"));
            Ok(())
        });
    }

    #[test]
    fn renamed_and_misspelt_variables_are_refused_not_ignored() {
        let check = |name: &str| check_environment([name.to_owned()].into_iter());
        let err = check("DLOG_NODE_LEASE_TTL_SECS").unwrap_err().to_string();
        assert!(err.contains("DLOG_NODE__LEASE_TTL"), "{err}");
        let err = check("DLOG_INGEST_LINGER").unwrap_err().to_string();
        assert!(err.contains("DLOG_INGEST__LINGER"), "{err}");
        // Settings, and variables that are no settings, pass.
        for fine in [
            "DLOG_NODE_ID",
            "DLOG_INGEST__LINGER",
            "DLOG_ENDPOINT",
            "DLOG_READ_ENDPOINT",
            "DLOG_ZONE",
            "DLOG_NVME_JOURNAL",
            "DLOG_SIM_VERBOSE",
            "PATH",
        ] {
            check(fine).unwrap();
        }
    }
}
