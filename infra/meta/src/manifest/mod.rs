//! The manifest: the cluster's shared state, as keys in a [`MetaStore`]
//! under `/dlog/<cluster>/` (ARCHITECTURE.md, "Manifest keys").
//!
//! ```text
//! ns/<ns>                          NamespaceConfig            admin
//! payload_schema/<ns>              PayloadSchema              admin
//! log/<ns>/<log>/meta              LogMeta                    admin
//! log/<ns>/<log>/id                live log id (decimal)      admin (create; deleted by delete)
//! log/<ns>/<log>/epoch             writer epoch (decimal)     new owner, by CAS
//! log/<ns>/<log>/next_segment      next segment id (decimal)  owner
//! log/<ns>/<log>/seg/<id:020>      SegmentMeta                owner (open, seal), compactor (offloaded)
//! log/<ns>/<log>/trim              trim offset (decimal)      admin / retention
//! log/<ns>/<log>/sub/<name>        committed offset (decimal) readers
//! owner/<ns>/<log>                 NodeInfo, on the owner's lease
//! placement/<ns>/<log>             {"node": id}               admin (a log moved by hand)
//! node/<role>/<id>                 NodeInfo, on the node's lease
//! counter/log_id                   last log id (decimal)
//! claim/<what>                     holder id, on its lease    workers (compactors)
//! ```
//!
//! Fencing invariant: every write an owner makes is a transaction that also
//! compares `id == my_log_id` and `epoch == my_epoch` (a [`Fence`]), so an
//! owner deposed by a newer epoch, or one of a log since deleted (and maybe
//! re-created under the same name, where epochs start over), can change
//! nothing. Epochs only grow within a log id, by compare-and-swap, so two
//! claimants of one log get distinct epochs and exactly one of them the
//! newest. The compactor's writes compare the log id too: a log's identity
//! is its log id, which never repeats, not its name.

use std::fmt;

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::metastore::{
    self, CmpOp, Compare, CompareTarget, KeyValue, LeaseId, Revision, SharedMetaStore, Txn, TxnOp,
    WatchStream,
};
use dlog_wire::error::{Classify, ErrorKind};
use dlog_wire::ids::{Epoch, LogId, Offset, SegmentId};
use dlog_wire::names::{LogName, Namespace};

mod placement;
mod purged;
mod tokens;
mod types;
pub use placement::PlacementView;
pub use purged::Purged;
pub use tokens::TokenRecord;
pub use types::*;

/// Errors of manifest operations.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("log {0} not found")]
    LogNotFound(LogName),
    #[error("log {0} already exists")]
    LogExists(LogName),
    #[error("log {0} is being deleted")]
    LogDeleting(LogName),
    #[error("log {log} with id {log_id} was deleted (the name may have been re-created)")]
    LogReplaced { log: LogName, log_id: u64 },
    #[error("epoch {mine} of log {log} is stale: the current epoch is {current}")]
    StaleEpoch {
        log: LogName,
        mine: u64,
        current: u64,
    },
    #[error("log {log} is owned by node {} at {}", owner.id, owner.address)]
    OwnedBy { log: LogName, owner: Box<NodeInfo> },
    #[error("segment {segment} of log {log} not found")]
    SegmentNotFound { log: LogName, segment: u64 },
    #[error("segment {segment} of log {log} is {actual:?}, expected {expected:?}")]
    SegmentState {
        log: LogName,
        segment: u64,
        expected: SegmentState,
        actual: SegmentState,
    },
    #[error("segment {segment} of log {log} changed concurrently")]
    SegmentChanged { log: LogName, segment: u64 },
    #[error("invalid namespace configuration: {0}")]
    InvalidConfig(String),
    #[error("manifest key {key} holds an unreadable value: {reason}")]
    Corrupt { key: String, reason: String },
    #[error("manifest")]
    Store(#[from] metastore::Error),
}

impl Classify for Error {
    fn kind(&self) -> ErrorKind {
        match self {
            Error::LogNotFound(_) | Error::SegmentNotFound { .. } => ErrorKind::NotFound,
            Error::LogExists(_) => ErrorKind::AlreadyExists,
            Error::LogDeleting(_)
            | Error::LogReplaced { .. }
            | Error::StaleEpoch { .. }
            | Error::SegmentState { .. }
            | Error::SegmentChanged { .. } => ErrorKind::FailedPrecondition,
            Error::OwnedBy { .. } => ErrorKind::Unavailable,
            Error::InvalidConfig(_) => ErrorKind::InvalidArgument,
            Error::Corrupt { .. } => ErrorKind::DataLoss,
            Error::Store(err) => err.kind(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Typed access to the manifest of one cluster.
#[derive(Clone)]
pub struct Manifest {
    store: SharedMetaStore,
    root: String,
}

impl fmt::Debug for Manifest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Manifest")
            .field("root", &self.root)
            .finish()
    }
}

fn encode_json<T: Serialize>(value: &T) -> Bytes {
    Bytes::from(serde_json::to_vec(value).expect("manifest values serialize"))
}

fn decode_json<T: DeserializeOwned>(kv: &KeyValue) -> Result<T> {
    serde_json::from_slice(&kv.value).map_err(|err| Error::Corrupt {
        key: kv.key.clone(),
        reason: err.to_string(),
    })
}

fn decode_u64(kv: &KeyValue) -> Result<u64> {
    std::str::from_utf8(&kv.value)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Error::Corrupt {
            key: kv.key.clone(),
            reason: "expected a decimal number".into(),
        })
}

fn encode_u64(value: u64) -> Bytes {
    Bytes::from(value.to_string())
}

/// What [`Manifest::log_snapshot`] read, at `revision`.
#[derive(Debug, Clone)]
pub struct LogSnapshot {
    pub meta: Option<LogMeta>,
    pub segments: Vec<SegmentMeta>,
    pub trim_point: u64,
    pub revision: Revision,
}

/// A key's value and the revision it was last changed at (0: absent), for
/// compare-and-swap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Versioned<T> {
    pub value: T,
    pub mod_revision: Revision,
}

impl Manifest {
    /// The manifest of `cluster` in `store`.
    pub fn new(store: SharedMetaStore, cluster: &str) -> Manifest {
        Manifest {
            store,
            root: format!("/dlog/{cluster}/"),
        }
    }

    pub fn store(&self) -> &SharedMetaStore {
        &self.store
    }

    /// `/dlog/<cluster>/`.
    pub fn root(&self) -> &str {
        &self.root
    }

    // ---- keys ----

    fn namespace_key(&self, ns: &Namespace) -> String {
        format!("{}ns/{ns}", self.root)
    }

    /// Beside `ns/<ns>`, not in it: a node of an earlier release that
    /// writes the namespace's settings back never erases the schema (and
    /// its field id history), as it would a field it does not know.
    fn payload_schema_key(&self, ns: &Namespace) -> String {
        format!("{}payload_schema/{ns}", self.root)
    }

    fn default_namespace_key(&self) -> String {
        format!("{}default_ns", self.root)
    }

    /// `/dlog/<cluster>/log/<ns>/<log>/`: every key of one log.
    pub fn log_prefix(&self, log: &LogName) -> String {
        format!("{}log/{}/{}/", self.root, log.namespace(), log.log())
    }

    fn meta_key(&self, log: &LogName) -> String {
        format!("{}meta", self.log_prefix(log))
    }

    fn id_key(&self, log: &LogName) -> String {
        format!("{}id", self.log_prefix(log))
    }

    fn epoch_key(&self, log: &LogName) -> String {
        format!("{}epoch", self.log_prefix(log))
    }

    fn next_segment_key(&self, log: &LogName) -> String {
        format!("{}next_segment", self.log_prefix(log))
    }

    /// Prefix of a log's segment keys.
    pub fn segments_prefix(&self, log: &LogName) -> String {
        format!("{}seg/", self.log_prefix(log))
    }

    fn segment_key(&self, log: &LogName, segment: u64) -> String {
        format!("{}{segment:020}", self.segments_prefix(log))
    }

    fn trim_key(&self, log: &LogName) -> String {
        format!("{}trim", self.log_prefix(log))
    }

    fn subscription_key(&self, log: &LogName, subscription: &str) -> String {
        format!("{}sub/{subscription}", self.log_prefix(log))
    }

    /// Prefix of every owner key.
    pub fn owners_prefix(&self) -> String {
        format!("{}owner/", self.root)
    }

    /// The log an owner key names.
    pub fn log_of_owner_key(&self, key: &str) -> Option<LogName> {
        let (ns, log) = key.strip_prefix(&self.owners_prefix())?.split_once('/')?;
        LogName::new(ns, log).ok()
    }

    fn owner_key(&self, log: &LogName) -> String {
        format!("{}owner/{}/{}", self.root, log.namespace(), log.log())
    }

    /// Prefix of the registrations of one role.
    pub fn nodes_prefix(&self, role: Role) -> String {
        format!("{}node/{}/", self.root, role.as_str())
    }

    fn log_id_counter_key(&self) -> String {
        format!("{}counter/log_id", self.root)
    }

    // ---- namespaces ----

    /// Writes a namespace's configuration, its payload schema included
    /// (none: the namespace's schema key is removed).
    pub async fn put_namespace(&self, ns: &Namespace, config: &NamespaceConfig) -> Result<()> {
        config
            .replication
            .validate()
            .map_err(Error::InvalidConfig)?;
        config.validate_retention().map_err(Error::InvalidConfig)?;
        let txn = Txn::new().and_then(self.namespace_writes(ns, config));
        self.store.txn(txn).await?;
        Ok(())
    }

    /// The writes of a namespace's configuration: the settings at
    /// `ns/<ns>`, and the payload schema at its own key. The settings keep
    /// a copy of the schema for nodes of the release before that key,
    /// which read and enforce it there ([`Manifest::namespace_versioned`]
    /// says which copy counts).
    fn namespace_writes(&self, ns: &Namespace, config: &NamespaceConfig) -> [TxnOp; 2] {
        let schema_key = self.payload_schema_key(ns);
        let schema = match &config.payload_schema {
            Some(schema) => TxnOp::put(&schema_key, encode_json(schema)),
            None => TxnOp::delete(&schema_key),
        };
        [
            TxnOp::put(self.namespace_key(ns), encode_json(config)),
            schema,
        ]
    }

    /// A namespace's configuration; when none was written, the cluster's
    /// default ([`Manifest::put_default_namespace`]), else the built-in one.
    /// Its payload schema is the namespace's own in either case.
    pub async fn namespace(&self, ns: &Namespace) -> Result<NamespaceConfig> {
        Ok(self.namespace_versioned(ns).await?.0)
    }

    /// A namespace's configuration as [`Manifest::namespace`] answers it,
    /// with the revisions its keys were read at (in one read), for
    /// [`Manifest::put_namespace_if`].
    pub async fn namespace_versioned(
        &self,
        ns: &Namespace,
    ) -> Result<(NamespaceConfig, NamespaceRevisions)> {
        let (key, schema_key) = (self.namespace_key(ns), self.payload_schema_key(ns));
        let read = Txn::new().and_then([TxnOp::get(&key), TxnOp::get(&schema_key)]);
        let mut gets = self.store.txn(read).await?.gets.into_iter();
        let (own, schema) = (gets.next().flatten(), gets.next().flatten());
        let mut config = match &own {
            Some(kv) => decode_json(kv)?,
            None => self.default_namespace().await?,
        };
        // The schema key, unless the settings were written after it with a
        // schema of their own: a node of the release before the key changed
        // the schema there (this release writes both in one transaction;
        // the release before typed payloads writes no schema at all). A
        // schema only inside the settings is that release's as well.
        let inline_is_newer = match (&own, &schema) {
            (Some(own), Some(key)) => {
                own.mod_revision > key.mod_revision && config.payload_schema.is_some()
            }
            _ => false,
        };
        match &schema {
            Some(_) if inline_is_newer => {}
            Some(kv) => config.payload_schema = Some(decode_json(kv)?),
            None if own.is_some() => {}
            None => config.payload_schema = None,
        }
        let revisions = NamespaceRevisions {
            settings: own.map(|kv| kv.mod_revision),
            payload_schema: schema.map(|kv| kv.mod_revision),
        };
        Ok((config, revisions))
    }

    /// Writes a namespace's configuration if its keys are still as read
    /// ([`Manifest::namespace_versioned`]). False when another write came
    /// first. A change decided on what was read (payload field ids handed
    /// out after the highest one there) is thus never lost to, nor mixed
    /// with, a concurrent one.
    pub async fn put_namespace_if(
        &self,
        ns: &Namespace,
        config: &NamespaceConfig,
        read: NamespaceRevisions,
    ) -> Result<bool> {
        config
            .replication
            .validate()
            .map_err(Error::InvalidConfig)?;
        config.validate_retention().map_err(Error::InvalidConfig)?;
        let as_read = |key: String, revision: Option<Revision>| match revision {
            Some(revision) => Compare::mod_revision_is(key, revision),
            None => Compare::absent(key),
        };
        let txn = Txn::new()
            .when([
                as_read(self.namespace_key(ns), read.settings),
                as_read(self.payload_schema_key(ns), read.payload_schema),
            ])
            .and_then(self.namespace_writes(ns, config));
        Ok(self.store.txn(txn).await?.succeeded)
    }

    /// Sets the configuration of namespaces that have none of their own
    /// (standalone mode sets replication 1/1/1 here).
    pub async fn put_default_namespace(&self, config: &NamespaceConfig) -> Result<()> {
        config
            .replication
            .validate()
            .map_err(Error::InvalidConfig)?;
        config.validate_retention().map_err(Error::InvalidConfig)?;
        self.store
            .put(&self.default_namespace_key(), encode_json(config))
            .await?;
        Ok(())
    }

    /// The configuration of namespaces that have none of their own.
    pub async fn default_namespace(&self) -> Result<NamespaceConfig> {
        match self.store.get(&self.default_namespace_key()).await? {
            Some(kv) => decode_json(&kv),
            None => Ok(NamespaceConfig::default()),
        }
    }

    /// Whether the namespace has a configuration of its own.
    pub async fn has_namespace(&self, ns: &Namespace) -> Result<bool> {
        Ok(self.store.get(&self.namespace_key(ns)).await?.is_some())
    }

    /// Namespaces with a configuration of their own, in name order.
    pub async fn configured_namespaces(&self) -> Result<Vec<Namespace>> {
        let prefix = format!("{}ns/", self.root);
        let range = self.store.range(&prefix, true).await?;
        let mut names: Vec<Namespace> = range
            .kvs
            .iter()
            .filter_map(|kv| kv.key.strip_prefix(&prefix))
            .filter_map(|name| Namespace::new(name).ok())
            .collect();
        names.sort();
        Ok(names)
    }

    /// Sets (or with `None` removes) a log's own configuration, which
    /// overrides its namespace's. Compared against the log's metadata as
    /// read, so a concurrent delete or end-of-stream is not overwritten.
    pub async fn put_log_config(
        &self,
        log: &LogName,
        config: Option<&NamespaceConfig>,
    ) -> Result<LogMeta> {
        if let Some(config) = config {
            config
                .replication
                .validate()
                .map_err(Error::InvalidConfig)?;
            config.validate_retention().map_err(Error::InvalidConfig)?;
        }
        loop {
            let current = self.log_versioned(log).await?;
            if current.value.state == LogState::Deleting {
                return Err(Error::LogNotFound(log.clone()));
            }
            let mut meta = current.value;
            meta.config = config.cloned();
            let key = self.meta_key(log);
            let txn = Txn::new()
                .when([Compare::mod_revision_is(&key, current.mod_revision)])
                .and_then([TxnOp::put(&key, encode_json(&meta))]);
            if self.store.txn(txn).await?.succeeded {
                return Ok(meta);
            }
        }
    }

    /// Watches every namespace configuration and every log's metadata (the
    /// keys that hold settings) from `start_revision`; other keys of the
    /// logs come too and are to be skipped ([`Manifest::settings_change`]).
    pub async fn watch_settings(&self, start_revision: Option<Revision>) -> Result<WatchStream> {
        Ok(self.store.watch(&self.root, start_revision).await?)
    }

    /// What a watched key's change means for settings: a namespace's
    /// configuration, the default one (every namespace without its own),
    /// or one log's metadata; `None` for any other key.
    pub fn settings_change(&self, key: &str) -> Option<SettingsChange> {
        let rest = key.strip_prefix(&self.root)?;
        if rest == "default_ns" {
            return Some(SettingsChange::Default);
        }
        if let Some(ns) =
            (rest.strip_prefix("ns/")).or_else(|| rest.strip_prefix("payload_schema/"))
        {
            return Namespace::new(ns).ok().map(SettingsChange::Namespace);
        }
        let name = rest.strip_prefix("log/")?.strip_suffix("/meta")?;
        name.parse().ok().map(SettingsChange::Log)
    }

    /// The configuration that applies to a log: its overrides, else its
    /// namespace's; the namespace-wide quotas and the payload schema are
    /// always the namespace's.
    pub async fn log_config(&self, log: &LogName) -> Result<NamespaceConfig> {
        let namespace = self.namespace(log.namespace()).await?;
        match self.log(log).await?.config {
            Some(mut config) => {
                // Namespace-wide quotas belong to the namespace.
                config.namespace_max_append_bytes_per_sec =
                    namespace.namespace_max_append_bytes_per_sec;
                config.namespace_max_append_records_per_sec =
                    namespace.namespace_max_append_records_per_sec;
                config.payload_schema = namespace.payload_schema;
                Ok(config)
            }
            None => Ok(namespace),
        }
    }

    // ---- logs ----

    /// The last log id handed out (0 before the first log). A log id at or
    /// below it that names no log belonged to a log that was purged.
    pub async fn last_log_id(&self) -> Result<u64> {
        match self.store.get(&self.log_id_counter_key()).await? {
            Some(kv) => decode_u64(&kv),
            None => Ok(0),
        }
    }

    /// Creates a log with a fresh, never reused log id.
    pub async fn create_log(&self, log: &LogName) -> Result<LogMeta> {
        let meta_key = self.meta_key(log);
        let counter_key = self.log_id_counter_key();
        loop {
            let counter = self.store.get(&counter_key).await?;
            let (last_id, counter_revision) = match &counter {
                Some(kv) => (decode_u64(kv)?, kv.mod_revision),
                None => (0, 0),
            };
            let meta = LogMeta {
                log_id: last_id + 1,
                created_at_ms: dlog_wire::now_ms(),
                state: LogState::Active,
                config: None,
                end_of_stream: None,
            };
            let response = self
                .store
                .txn(
                    Txn::new()
                        .when([
                            Compare::absent(&meta_key),
                            Compare::mod_revision_is(&counter_key, counter_revision),
                        ])
                        .and_then([
                            TxnOp::put(&counter_key, encode_u64(meta.log_id)),
                            TxnOp::put(&meta_key, encode_json(&meta)),
                            TxnOp::put(self.id_key(log), encode_u64(meta.log_id)),
                        ])
                        .or_else([TxnOp::get(&meta_key)]),
                )
                .await?;
            if response.succeeded {
                return Ok(meta);
            }
            if let Some(Some(existing)) = response.gets.first() {
                let existing: LogMeta = decode_json(existing)?;
                return Err(match existing.state {
                    LogState::Deleting => Error::LogDeleting(log.clone()),
                    LogState::Active => Error::LogExists(log.clone()),
                });
            }
            // Another log took the next id first: try the one after.
        }
    }

    /// A log's metadata, `LogNotFound` if absent.
    pub async fn log(&self, log: &LogName) -> Result<LogMeta> {
        Ok(self.log_versioned(log).await?.value)
    }

    async fn log_versioned(&self, log: &LogName) -> Result<Versioned<LogMeta>> {
        match self.store.get(&self.meta_key(log)).await? {
            Some(kv) => Ok(Versioned {
                value: decode_json(&kv)?,
                mod_revision: kv.mod_revision,
            }),
            None => Err(Error::LogNotFound(log.clone())),
        }
    }

    /// Full names of the active logs whose name starts with `prefix`, in order.
    pub async fn list_logs(&self, prefix: &str) -> Result<Vec<LogName>> {
        Ok(self
            .log_metas(prefix)
            .await?
            .into_iter()
            .filter(|(_, meta)| meta.state == LogState::Active)
            .map(|(name, _)| name)
            .collect())
    }

    /// Every log whose name starts with `prefix`, deleted ones included,
    /// with its metadata, in name order.
    pub async fn log_metas(&self, prefix: &str) -> Result<Vec<(LogName, LogMeta)>> {
        let logs_root = format!("{}log/", self.root);
        let range = self
            .store
            .range(&format!("{logs_root}{prefix}"), true)
            .await?;
        let mut logs = Vec::new();
        for kv in range.kvs {
            let Some(name) = kv
                .key
                .strip_prefix(&logs_root)
                .and_then(|rest| rest.strip_suffix("/meta"))
            else {
                continue;
            };
            if let Ok(name) = name.parse::<LogName>() {
                logs.push((name, decode_json(&kv)?));
            }
        }
        Ok(logs)
    }

    /// Marks a log deleted: it disappears from listings and refuses appends
    /// and reads; the compactor then removes its objects and calls
    /// [`Manifest::purge_log`]. In the same transaction the `id` key goes,
    /// which fences every owner of the log (and every compactor write) from
    /// then on, and so does the owner key, which tells the owner (whichever
    /// node runs it, [`Manifest::watch_owners`]) to stop.
    pub async fn delete_log(&self, log: &LogName) -> Result<LogMeta> {
        Ok(self.delete_log_with_segments(log).await?.0)
    }

    /// [`Manifest::delete_log`], returning also the log's segments as they
    /// were when it was deleted: every open segment the deleted log will
    /// ever have is among them (none can be created after the deletion,
    /// which removes the id key every creation compares, and none was
    /// created between this read and the deletion: compared too).
    pub async fn delete_log_with_segments(
        &self,
        log: &LogName,
    ) -> Result<(LogMeta, Vec<SegmentMeta>)> {
        loop {
            let snapshot = self.log_snapshot(log).await?;
            let mut meta = match snapshot.meta {
                Some(meta) if meta.state != LogState::Deleting => meta,
                _ => return Err(Error::LogNotFound(log.clone())),
            };
            meta.state = LogState::Deleting;
            let unchanged_since = |key: String| {
                Compare::new(
                    key,
                    CmpOp::Less,
                    CompareTarget::ModRevision(snapshot.revision + 1),
                )
            };
            let meta_key = self.meta_key(log);
            let response = self
                .store
                .txn(
                    Txn::new()
                        .when([
                            // Present (not purged and re-created meanwhile)...
                            Compare::new(&meta_key, CmpOp::Greater, CompareTarget::Version(0)),
                            // ...and as read, with no segment created since.
                            unchanged_since(meta_key.clone()),
                            unchanged_since(self.next_segment_key(log)),
                        ])
                        .and_then([
                            TxnOp::put(&meta_key, encode_json(&meta)),
                            TxnOp::delete(self.id_key(log)),
                            TxnOp::delete(self.owner_key(log)),
                            // A log re-created under the name starts on
                            // the placement rule, not on an old move.
                            TxnOp::delete(self.placement_key(log)),
                        ]),
                )
                .await?;
            if response.succeeded {
                return Ok((meta, snapshot.segments));
            }
        }
    }

    /// Removes every key of the deleted log `log_id` (after its data is
    /// gone), and records the purge (`purged/<log_id>`, see [`Purged`]).
    /// Compares the metadata it checked, so it never removes a log
    /// re-created under the same name meanwhile, nor one still active.
    /// False when there was nothing (left) to purge: already purged, by
    /// another compactor perhaps.
    pub async fn purge_log(&self, log: &LogName, log_id: u64) -> Result<bool> {
        let current = match self.log_versioned(log).await {
            Ok(current) => current,
            Err(Error::LogNotFound(_)) => return Ok(false),
            Err(err) => return Err(err),
        };
        if current.value.log_id != log_id || current.value.state != LogState::Deleting {
            return Ok(false);
        }
        let response = self
            .store
            .txn(
                Txn::new()
                    .when([Compare::mod_revision_is(
                        self.meta_key(log),
                        current.mod_revision,
                    )])
                    .and_then([
                        TxnOp::DeletePrefix {
                            prefix: self.log_prefix(log),
                        },
                        TxnOp::delete(self.owner_key(log)),
                        self.record_purge(log, log_id),
                    ]),
            )
            .await?;
        Ok(response.succeeded)
    }

    // ---- epochs and ownership ----

    /// The log's current writer epoch (0 before any owner).
    pub async fn epoch(&self, log: &LogName) -> Result<u64> {
        match self.store.get(&self.epoch_key(log)).await? {
            Some(kv) => decode_u64(&kv),
            None => Ok(0),
        }
    }

    fn epoch_is(&self, log: &LogName, epoch: u64) -> Compare {
        let key = self.epoch_key(log);
        if epoch == 0 {
            Compare::absent(key)
        } else {
            Compare::value_is(key, encode_u64(epoch))
        }
    }

    fn id_is(&self, log: &LogName, log_id: u64) -> Compare {
        Compare::value_is(self.id_key(log), encode_u64(log_id))
    }

    /// Moves the epoch of the live log `log_id` from `seen` to `seen + 1`;
    /// the caller then owns the new epoch. Fails with `StaleEpoch` if
    /// another claimant moved it first, `LogNotFound` if the log is
    /// deleted or is no longer `log_id`.
    pub async fn bump_epoch(&self, log: &LogName, log_id: LogId, seen: Epoch) -> Result<Fence> {
        Ok(self.take_epoch(log, log_id, seen).await?.0)
    }

    /// [`Manifest::bump_epoch`], also answering the log's metadata as it
    /// was when the epoch moved (the bump compares it): an end of stream
    /// the previous owner marked is in it, and that owner can mark none
    /// after the bump.
    pub async fn take_epoch(
        &self,
        log: &LogName,
        log_id: LogId,
        seen: Epoch,
    ) -> Result<(Fence, LogMeta)> {
        let (log_id, seen) = (log_id.0, seen.0);
        let meta = self.log_versioned(log).await?;
        if meta.value.log_id != log_id || meta.value.state != LogState::Active {
            return Err(Error::LogNotFound(log.clone()));
        }
        let next = seen + 1;
        let response = self
            .store
            .txn(
                Txn::new()
                    .when([
                        Compare::mod_revision_is(self.meta_key(log), meta.mod_revision),
                        self.epoch_is(log, seen),
                    ])
                    // The `id` key is written again here so that a log
                    // created before it existed gets it with its first owner.
                    .and_then([
                        TxnOp::put(self.epoch_key(log), encode_u64(next)),
                        TxnOp::put(self.id_key(log), encode_u64(log_id)),
                    ]),
            )
            .await?;
        if response.succeeded {
            let fence = Fence {
                log_id,
                epoch: next,
            };
            return Ok((fence, meta.value));
        }
        let now = self.log_versioned(log).await?;
        if now.value.log_id != log_id || now.value.state != LogState::Active {
            return Err(Error::LogNotFound(log.clone()));
        }
        Err(Error::StaleEpoch {
            log: log.clone(),
            mine: seen,
            current: self.epoch(log).await?,
        })
    }

    /// Runs an owner's transaction under its fence (log id and epoch); a
    /// failed compare is reported as `LogReplaced` when the log id is no
    /// longer live, `StaleEpoch` when the epoch moved, else as `otherwise`.
    async fn fenced(
        &self,
        log: &LogName,
        fence: Fence,
        txn: Txn,
        otherwise: impl FnOnce() -> Error,
    ) -> Result<()> {
        let txn = txn.when([
            self.id_is(log, fence.log_id),
            self.epoch_is(log, fence.epoch),
        ]);
        if self.store.txn(txn).await?.succeeded {
            return Ok(());
        }
        self.check_live(log, fence.log_id).await?;
        let current = self.epoch(log).await?;
        if current != fence.epoch {
            return Err(Error::StaleEpoch {
                log: log.clone(),
                mine: fence.epoch,
                current,
            });
        }
        Err(otherwise())
    }

    /// `LogReplaced` unless `log_id` is the log's live id (a deleted log has
    /// none). Work that reads a log's keys by name and then acts on what it
    /// read (deleting the objects a segment names) checks this after the
    /// read: what it read then belonged to `log_id`, which never returns.
    pub async fn check_live(&self, log: &LogName, log_id: u64) -> Result<()> {
        let live = match self.store.get(&self.id_key(log)).await? {
            Some(kv) => Some(decode_u64(&kv)?),
            None => self.add_missing_id(log, log_id).await?,
        };
        if live == Some(log_id) {
            Ok(())
        } else {
            Err(Error::LogReplaced {
                log: log.clone(),
                log_id,
            })
        }
    }

    /// A log created before the `id` key existed has none while it is
    /// active: writes it (compared on the metadata, so never for a log
    /// being deleted) and returns it. `None` for a deleted or absent log.
    async fn add_missing_id(&self, log: &LogName, log_id: u64) -> Result<Option<u64>> {
        let meta = match self.log_versioned(log).await {
            Ok(meta) => meta,
            Err(Error::LogNotFound(_)) => return Ok(None),
            Err(err) => return Err(err),
        };
        if meta.value.state != LogState::Active || meta.value.log_id != log_id {
            return Ok(None);
        }
        let id_key = self.id_key(log);
        let response = self
            .store
            .txn(
                Txn::new()
                    .when([
                        Compare::mod_revision_is(self.meta_key(log), meta.mod_revision),
                        Compare::absent(&id_key),
                    ])
                    .and_then([TxnOp::put(&id_key, encode_u64(log_id))]),
            )
            .await?;
        Ok(response.succeeded.then_some(log_id))
    }

    /// Runs a compactor's transaction on the live log `log_id` only: true
    /// when it succeeded, false when one of its own compares failed,
    /// `LogReplaced` when the log id is no longer live.
    async fn on_live_log(&self, log: &LogName, log_id: u64, txn: Txn) -> Result<bool> {
        let txn = txn.when([self.id_is(log, log_id)]);
        if self.store.txn(txn).await?.succeeded {
            return Ok(true);
        }
        self.check_live(log, log_id).await?;
        Ok(false)
    }

    /// Records `node` as the log's owner on `lease`. Succeeds when the key is
    /// free or already this node's, with the revision the key was last
    /// written at (a watched change of the key before it is older news);
    /// otherwise `OwnedBy` the current owner.
    pub async fn claim_owner(
        &self,
        log: &LogName,
        node: &NodeInfo,
        lease: LeaseId,
    ) -> Result<Revision> {
        let key = self.owner_key(log);
        let response = self
            .store
            .txn(
                Txn::new()
                    .when([Compare::absent(&key)])
                    .and_then([TxnOp::put_with_lease(&key, encode_json(node), lease)])
                    .or_else([TxnOp::get(&key)]),
            )
            .await?;
        if response.succeeded {
            return Ok(response.revision);
        }
        match response.gets.into_iter().next().flatten() {
            Some(kv) => {
                let owner: NodeInfo = decode_json(&kv)?;
                if owner.id == node.id && kv.lease == Some(lease) {
                    Ok(kv.mod_revision)
                } else if owner.id == node.id {
                    // Our own previous incarnation (killed, restarted with
                    // the same id) still holds it on its old lease: take it
                    // over now rather than waiting for that lease to expire.
                    // The epoch bump that follows fences the old one anyway.
                    let taken = self
                        .store
                        .txn(
                            Txn::new()
                                .when([Compare::mod_revision_is(&key, kv.mod_revision)])
                                .and_then([TxnOp::put_with_lease(&key, encode_json(node), lease)]),
                        )
                        .await?;
                    if taken.succeeded {
                        Ok(taken.revision)
                    } else {
                        Box::pin(self.claim_owner(log, node, lease)).await
                    }
                } else {
                    Err(Error::OwnedBy {
                        log: log.clone(),
                        owner: Box::new(owner),
                    })
                }
            }
            // Released between the compare and the read: try again.
            None => Box::pin(self.claim_owner(log, node, lease)).await,
        }
    }

    /// Watches every owner key from `start_revision`: an owner whose key is
    /// deleted (its log was deleted or purged, or it released it) or taken
    /// by another node must stop ([`Manifest::log_of_owner_key`] names the
    /// log of an event).
    pub async fn watch_owners(&self, start_revision: Option<Revision>) -> Result<WatchStream> {
        Ok(self
            .store
            .watch(&self.owners_prefix(), start_revision)
            .await?)
    }

    /// The owner key of `log`, if any: its holder and the lease it is on.
    pub async fn owner_lease(&self, log: &LogName) -> Result<Option<(NodeInfo, Option<LeaseId>)>> {
        match self.store.get(&self.owner_key(log)).await? {
            Some(kv) => Ok(Some((decode_json(&kv)?, kv.lease))),
            None => Ok(None),
        }
    }

    /// The current revision of the store (to watch from without a gap).
    pub async fn revision(&self) -> Result<Revision> {
        Ok(self
            .store
            .range(&self.log_id_counter_key(), false)
            .await?
            .revision)
    }

    /// Decodes the value of an owner key (from [`Manifest::watch_owners`]).
    pub fn decode_owner(kv: &KeyValue) -> Result<NodeInfo> {
        decode_json(kv)
    }

    /// The log's current owner, if any.
    pub async fn owner(&self, log: &LogName) -> Result<Option<NodeInfo>> {
        match self.store.get(&self.owner_key(log)).await? {
            Some(kv) => Ok(Some(decode_json(&kv)?)),
            None => Ok(None),
        }
    }

    /// Gives up ownership if `node_id` still holds it (on `lease`, when
    /// given: a process restarted under the same id holds it on another).
    pub async fn release_owner(
        &self,
        log: &LogName,
        node_id: &str,
        lease: Option<LeaseId>,
    ) -> Result<bool> {
        let key = self.owner_key(log);
        let Some(kv) = self.store.get(&key).await? else {
            return Ok(false);
        };
        let owner: NodeInfo = decode_json(&kv)?;
        if owner.id != node_id || lease.is_some_and(|lease| kv.lease != Some(lease)) {
            return Ok(false);
        }
        let response = self
            .store
            .txn(
                Txn::new()
                    .when([Compare::mod_revision_is(&key, kv.mod_revision)])
                    .and_then([TxnOp::delete(&key)]),
            )
            .await?;
        Ok(response.succeeded)
    }

    /// Marks the log ended at `end_offset`, under the owner's fence.
    pub async fn mark_end_of_stream(
        &self,
        log: &LogName,
        fence: Fence,
        end_offset: u64,
    ) -> Result<()> {
        let current = self.log_versioned(log).await?;
        let mut meta = current.value;
        meta.end_of_stream = Some(end_offset);
        let key = self.meta_key(log);
        let txn = Txn::new()
            .when([Compare::mod_revision_is(&key, current.mod_revision)])
            .and_then([TxnOp::put(&key, encode_json(&meta))]);
        self.fenced(log, fence, txn, || Error::LogDeleting(log.clone()))
            .await
    }

    // ---- segments ----

    /// Every segment of the log, by id, and the revision they were read at
    /// (watch from `revision + 1` to follow changes without a gap).
    pub async fn segments(&self, log: &LogName) -> Result<(Vec<SegmentMeta>, Revision)> {
        let range = self.store.range(&self.segments_prefix(log), true).await?;
        let segments = range
            .kvs
            .iter()
            .map(decode_json)
            .collect::<Result<Vec<SegmentMeta>>>()?;
        Ok((segments, range.revision))
    }

    /// A log's metadata (`None` if absent), segments (by id) and trim
    /// point, all read at one revision by one range over the log's keys,
    /// so they never mix two incarnations of a re-created log.
    pub async fn log_snapshot(&self, log: &LogName) -> Result<LogSnapshot> {
        let range = self.store.range(&self.log_prefix(log), true).await?;
        let (meta_key, trim_key) = (self.meta_key(log), self.trim_key(log));
        let segments_prefix = self.segments_prefix(log);
        let mut snapshot = LogSnapshot {
            meta: None,
            segments: Vec::new(),
            trim_point: 0,
            revision: range.revision,
        };
        for kv in &range.kvs {
            if kv.key == meta_key {
                snapshot.meta = Some(decode_json(kv)?);
            } else if kv.key == trim_key {
                snapshot.trim_point = decode_u64(kv)?;
            } else if kv.key.starts_with(&segments_prefix) {
                snapshot.segments.push(decode_json(kv)?);
            }
        }
        Ok(snapshot)
    }

    /// One segment with its revision, for compare-and-swap.
    pub async fn segment(&self, log: &LogName, segment: u64) -> Result<Versioned<SegmentMeta>> {
        match self.store.get(&self.segment_key(log, segment)).await? {
            Some(kv) => Ok(Versioned {
                value: decode_json(&kv)?,
                mod_revision: kv.mod_revision,
            }),
            None => Err(Error::SegmentNotFound {
                log: log.clone(),
                segment,
            }),
        }
    }

    /// Opens the next segment (ids are dense and increasing) under the
    /// owner's fence. `segment_id`, `epoch` and `state` of `template` are
    /// set here.
    pub async fn create_segment(
        &self,
        log: &LogName,
        fence: Fence,
        template: SegmentMeta,
    ) -> Result<SegmentMeta> {
        let counter_key = self.next_segment_key(log);
        loop {
            let counter = self.store.get(&counter_key).await?;
            let (next_id, counter_revision) = match &counter {
                Some(kv) => (decode_u64(kv)?, kv.mod_revision),
                None => (1, 0),
            };
            let segment = SegmentMeta {
                segment_id: next_id,
                epoch: fence.epoch,
                state: SegmentState::Open,
                ..template.clone()
            };
            let txn = Txn::new()
                .when([Compare::mod_revision_is(&counter_key, counter_revision)])
                .and_then([
                    TxnOp::put(&counter_key, encode_u64(next_id + 1)),
                    TxnOp::put(self.segment_key(log, next_id), encode_json(&segment)),
                ]);
            match self
                .fenced(log, fence, txn, || Error::SegmentChanged {
                    log: log.clone(),
                    segment: next_id,
                })
                .await
            {
                Ok(()) => return Ok(segment),
                Err(Error::SegmentChanged { .. }) => continue,
                Err(err) => return Err(err),
            }
        }
    }

    /// Seals an open segment under the owner's fence (the owner rolling it,
    /// or a new owner after recovery).
    pub async fn seal_segment(
        &self,
        log: &LogName,
        fence: Fence,
        segment: u64,
        seal: &SealInfo,
    ) -> Result<SegmentMeta> {
        self.seal_segment_with_ensemble(log, fence, segment, seal, None)
            .await
    }

    /// The zones of `ensemble`, replacing `segment`'s: a node that was in
    /// the segment's ensemble keeps its recorded zone, another has the zone
    /// of its cache node registration (`""` if it has none or is gone).
    /// Empty if the segment recorded no zones and no node has one.
    async fn zones_of(&self, segment: &SegmentMeta, ensemble: &[String]) -> Result<Vec<String>> {
        let registered = self.nodes(Role::Cache).await?;
        let zones: Vec<String> = ensemble
            .iter()
            .map(|node| {
                let recorded = segment
                    .ensemble
                    .iter()
                    .position(|n| n == node)
                    .and_then(|slot| segment.zones.get(slot));
                match recorded {
                    Some(zone) => zone.clone(),
                    None => registered
                        .iter()
                        .find(|n| n.id == *node)
                        .map_or_else(String::new, |n| n.zone.clone()),
                }
            })
            .collect();
        if segment.zones.is_empty() && zones.iter().all(String::is_empty) {
            return Ok(Vec::new());
        }
        Ok(zones)
    }

    /// [`Manifest::seal_segment`], recording `ensemble` (if given) as the
    /// nodes that hold the sealed segment: recovery's replacements for
    /// nodes that could not take its copies (with their zones).
    pub async fn seal_segment_with_ensemble(
        &self,
        log: &LogName,
        fence: Fence,
        segment: u64,
        seal: &SealInfo,
        ensemble: Option<Vec<String>>,
    ) -> Result<SegmentMeta> {
        let current = self.segment(log, segment).await?;
        if current.value.state != SegmentState::Open {
            return Err(Error::SegmentState {
                log: log.clone(),
                segment,
                expected: SegmentState::Open,
                actual: current.value.state,
            });
        }
        let (ensemble, zones) = match ensemble {
            Some(ensemble) if ensemble != current.value.ensemble => {
                let zones = self.zones_of(&current.value, &ensemble).await?;
                (ensemble, zones)
            }
            _ => (current.value.ensemble.clone(), current.value.zones.clone()),
        };
        let sealed = SegmentMeta {
            state: SegmentState::Sealed,
            ensemble,
            zones,
            end_offset: Some(seal.end_offset),
            last_entry_id: seal.last_entry_id,
            bytes: seal.bytes,
            min_timestamp_ms: seal.min_timestamp_ms,
            max_timestamp_ms: seal.max_timestamp_ms,
            min_txid: seal.min_txid,
            max_txid: seal.max_txid,
            ..current.value
        };
        let key = self.segment_key(log, segment);
        let txn = Txn::new()
            .when([Compare::mod_revision_is(&key, current.mod_revision)])
            .and_then([TxnOp::put(&key, encode_json(&sealed))]);
        self.fenced(log, fence, txn, || Error::SegmentChanged {
            log: log.clone(),
            segment,
        })
        .await?;
        Ok(sealed)
    }

    /// Records a sealed segment's object (compactor). Not epoch-fenced: the
    /// compactor is not the owner; the segment's revision and the live log
    /// id are the fence.
    pub async fn mark_offloaded(
        &self,
        log: &LogName,
        log_id: u64,
        segment: u64,
        object: ObjectInfo,
    ) -> Result<SegmentMeta> {
        let current = self.segment(log, segment).await?;
        if current.value.state != SegmentState::Sealed {
            return Err(Error::SegmentState {
                log: log.clone(),
                segment,
                expected: SegmentState::Sealed,
                actual: current.value.state,
            });
        }
        let offloaded = SegmentMeta {
            state: SegmentState::Offloaded,
            object: Some(object),
            ..current.value
        };
        let key = self.segment_key(log, segment);
        let txn = Txn::new()
            .when([Compare::mod_revision_is(&key, current.mod_revision)])
            .and_then([TxnOp::put(&key, encode_json(&offloaded))]);
        if !self.on_live_log(log, log_id, txn).await? {
            return Err(Error::SegmentChanged {
                log: log.clone(),
                segment,
            });
        }
        Ok(offloaded)
    }

    /// Records that the cache nodes dropped an offloaded segment of the
    /// live log `log_id`.
    pub async fn mark_cache_dropped(
        &self,
        log: &LogName,
        log_id: LogId,
        segment: SegmentId,
    ) -> Result<()> {
        self.update_segment(log, log_id, segment, |meta| SegmentMeta {
            cache_dropped: true,
            ..meta
        })
        .await
    }

    /// Records that the segment's file left its log's Iceberg table at
    /// `at_ms` (a segment of the live log `log_id`); the first record stays.
    pub async fn mark_table_removed(
        &self,
        log: &LogName,
        log_id: LogId,
        segment: SegmentId,
        at_ms: i64,
    ) -> Result<()> {
        self.update_segment(log, log_id, segment, |meta| SegmentMeta {
            table_removed_at_ms: meta.table_removed_at_ms.or(Some(at_ms)),
            ..meta
        })
        .await
    }

    /// Records that the segment's file in its log's Iceberg table was cut
    /// at `offset` (a trim point inside the segment of the live log
    /// `log_id`); the highest offset recorded stays.
    pub async fn mark_table_cut(
        &self,
        log: &LogName,
        log_id: LogId,
        segment: SegmentId,
        offset: u64,
    ) -> Result<()> {
        self.update_segment(log, log_id, segment, |meta| SegmentMeta {
            table_cut_offset: meta.table_cut_offset.max(Some(offset)),
            ..meta
        })
        .await
    }

    /// Records that the table backfill put the segment's file in its log's
    /// Iceberg table at `at_ms` (a segment of the live log `log_id`); the
    /// first record stays.
    pub async fn mark_table_backfilled(
        &self,
        log: &LogName,
        log_id: LogId,
        segment: SegmentId,
        at_ms: i64,
    ) -> Result<()> {
        self.update_segment(log, log_id, segment, |meta| SegmentMeta {
            table_backfilled_at_ms: meta.table_backfilled_at_ms.or(Some(at_ms)),
            ..meta
        })
        .await
    }

    /// Writes several segments of the live log `log_id` in one
    /// transaction, each compared with the revision it was read at: all
    /// are written or none (false when one changed meanwhile, or the log id
    /// is no longer live). A merge of segments' files records its start
    /// and its end on every segment of the merge at once this way.
    pub async fn rewrite_segments(
        &self,
        log: &LogName,
        log_id: LogId,
        changes: &[(Versioned<SegmentMeta>, SegmentMeta)],
    ) -> Result<bool> {
        let mut compares = Vec::with_capacity(changes.len());
        let mut puts = Vec::with_capacity(changes.len());
        for (read, changed) in changes {
            let key = self.segment_key(log, read.value.segment_id);
            compares.push(Compare::mod_revision_is(&key, read.mod_revision));
            puts.push(TxnOp::put(&key, encode_json(changed)));
        }
        let txn = Txn::new().when(compares).and_then(puts);
        match self.on_live_log(log, log_id.0, txn).await {
            Ok(written) => Ok(written),
            Err(Error::LogReplaced { .. }) => Ok(false),
            Err(err) => Err(err),
        }
    }

    /// Forgets a segment's retired object (deleted after its grace).
    pub async fn forget_retired_object(
        &self,
        log: &LogName,
        log_id: LogId,
        segment: SegmentId,
    ) -> Result<()> {
        self.update_segment(log, log_id, segment, |meta| SegmentMeta {
            retired_object: None,
            ..meta
        })
        .await
    }

    /// Rewrites a segment of the live log `log_id` as `change` makes it,
    /// if nothing changed it since it was read.
    async fn update_segment(
        &self,
        log: &LogName,
        log_id: LogId,
        segment: SegmentId,
        change: impl FnOnce(SegmentMeta) -> SegmentMeta,
    ) -> Result<()> {
        let (log_id, segment) = (log_id.0, segment.0);
        let current = self.segment(log, segment).await?;
        let changed = change(current.value);
        let key = self.segment_key(log, segment);
        let txn = Txn::new()
            .when([Compare::mod_revision_is(&key, current.mod_revision)])
            .and_then([TxnOp::put(&key, encode_json(&changed))]);
        if !self.on_live_log(log, log_id, txn).await? {
            return Err(Error::SegmentChanged {
                log: log.clone(),
                segment,
            });
        }
        Ok(())
    }

    /// Takes a work claim (`claim/<what>`) on `lease`: true when it is
    /// ours, false when another holder has it. Claims vanish with their
    /// holder's lease, so a dead worker's claims free themselves.
    pub async fn claim(&self, what: &str, holder: &str, lease: LeaseId) -> Result<bool> {
        let key = format!("{}claim/{what}", self.root);
        let response = self
            .store
            .txn(
                Txn::new()
                    .when([Compare::absent(&key)])
                    .and_then([TxnOp::put_with_lease(&key, holder.to_owned(), lease)])
                    .or_else([TxnOp::get(&key)]),
            )
            .await?;
        if response.succeeded {
            return Ok(true);
        }
        Ok(response
            .gets
            .into_iter()
            .flatten()
            .next()
            .is_some_and(|kv| kv.value == holder.as_bytes() && kv.lease == Some(lease)))
    }

    /// Gives a claim back, if `holder` still holds it: a holder whose
    /// lease expired (it was paused, say) must not remove the claim another
    /// holder took since.
    pub async fn release_claim(&self, what: &str, holder: &str) -> Result<()> {
        let key = format!("{}claim/{what}", self.root);
        self.store
            .txn(
                Txn::new()
                    .when([Compare::value_is(&key, holder.to_owned())])
                    .and_then([TxnOp::delete(&key)]),
            )
            .await?;
        Ok(())
    }

    /// Removes a segment's key (retention, after its data is deleted), if
    /// `log_id` is still the log's live id.
    pub async fn delete_segment(
        &self,
        log: &LogName,
        log_id: LogId,
        segment: SegmentId,
    ) -> Result<()> {
        let (log_id, segment) = (log_id.0, segment.0);
        let delete = || Txn::new().and_then([TxnOp::delete(self.segment_key(log, segment))]);
        // Its only compare is the log id: a second try is needed only when
        // the first added a missing `id` key.
        if !self.on_live_log(log, log_id, delete()).await? {
            self.on_live_log(log, log_id, delete()).await?;
        }
        Ok(())
    }

    /// Watches every key of a log from `start_revision`.
    pub async fn watch_log(
        &self,
        log: &LogName,
        start_revision: Option<Revision>,
    ) -> Result<WatchStream> {
        Ok(self
            .store
            .watch(&self.log_prefix(log), start_revision)
            .await?)
    }

    // ---- trim and subscriptions ----

    /// The first readable offset (0 when never trimmed).
    pub async fn trim_point(&self, log: &LogName) -> Result<u64> {
        match self.store.get(&self.trim_key(log)).await? {
            Some(kv) => decode_u64(&kv),
            None => Ok(0),
        }
    }

    /// Moves the trim point of the log now live under this name up to
    /// `offset` (an admin's trim). See [`Manifest::trim_log_id`].
    pub async fn trim(&self, log: &LogName, offset: u64) -> Result<u64> {
        let meta = self.log(log).await?;
        if meta.state == LogState::Deleting {
            return Err(Error::LogNotFound(log.clone()));
        }
        self.trim_log_id(log, LogId(meta.log_id), Offset(offset))
            .await
    }

    /// Moves the trim point of the live log `log_id` up to `offset`; it
    /// never moves down. Returns the trim point now in force; `LogReplaced`
    /// once `log_id` is deleted, so a compactor working from a stale view
    /// never trims a re-created log.
    pub async fn trim_log_id(&self, log: &LogName, log_id: LogId, offset: Offset) -> Result<u64> {
        let (log_id, offset) = (log_id.0, offset.0);
        let key = self.trim_key(log);
        loop {
            let current = self.store.get(&key).await?;
            let (point, revision) = match &current {
                Some(kv) => (decode_u64(kv)?, kv.mod_revision),
                None => (0, 0),
            };
            if offset <= point {
                self.check_live(log, log_id).await?;
                return Ok(point);
            }
            let txn = Txn::new()
                .when([Compare::mod_revision_is(&key, revision)])
                .and_then([TxnOp::put(&key, encode_u64(offset))]);
            if self.on_live_log(log, log_id, txn).await? {
                return Ok(offset);
            }
        }
    }

    /// Moves a subscription's committed offset up to `offset`; it never
    /// moves down, so a late or repeated commit cannot take progress back.
    /// Returns the committed offset now in force. The write compares the
    /// log id that was live when the commit started: a commit racing the
    /// log's deletion and purge fails instead of landing in (or being
    /// inherited by) a log re-created under the same name.
    pub async fn commit_subscription(&self, log: &LogName, name: &str, offset: u64) -> Result<u64> {
        Namespace::new(name).map_err(|_| {
            Error::InvalidConfig(format!(
                "invalid subscription name {name:?}: only A-Z a-z 0-9 . _ - are allowed"
            ))
        })?;
        let meta = self.log(log).await?;
        if meta.state == LogState::Deleting {
            return Err(Error::LogNotFound(log.clone()));
        }
        let key = self.subscription_key(log, name);
        loop {
            let current = self.store.get(&key).await?;
            let (committed, revision) = match &current {
                Some(kv) => (Some(decode_u64(kv)?), kv.mod_revision),
                None => (None, 0),
            };
            if let Some(committed) = committed
                && committed >= offset
            {
                self.check_live(log, meta.log_id).await?;
                return Ok(committed);
            }
            let txn = Txn::new()
                .when([Compare::mod_revision_is(&key, revision)])
                .and_then([TxnOp::put(&key, encode_u64(offset))]);
            if self.on_live_log(log, meta.log_id, txn).await? {
                return Ok(offset);
            }
        }
    }

    /// A subscription's committed offset, if any.
    pub async fn subscription(&self, log: &LogName, name: &str) -> Result<Option<u64>> {
        match self.store.get(&self.subscription_key(log, name)).await? {
            Some(kv) => Ok(Some(decode_u64(&kv)?)),
            None => Ok(None),
        }
    }

    /// Forgets a subscription of a live log (absent: nothing to do).
    pub async fn delete_subscription(&self, log: &LogName, name: &str) -> Result<()> {
        let meta = self.log(log).await?;
        if meta.state == LogState::Deleting {
            return Err(Error::LogNotFound(log.clone()));
        }
        self.store
            .txn(Txn::new().and_then([TxnOp::delete(self.subscription_key(log, name))]))
            .await?;
        Ok(())
    }

    /// Every subscription of a log and its committed offset, by name.
    pub async fn subscriptions(&self, log: &LogName) -> Result<Vec<(String, u64)>> {
        let prefix = self.subscription_key(log, "");
        let range = self.store.range(&prefix, true).await?;
        range
            .kvs
            .iter()
            .map(|kv| {
                let name = kv.key.strip_prefix(&prefix).unwrap_or(&kv.key).to_owned();
                Ok((name, decode_u64(kv)?))
            })
            .collect()
    }

    // ---- nodes ----

    /// Registers a node on its lease; the key vanishes when the lease does.
    pub async fn register_node(&self, role: Role, node: &NodeInfo, lease: LeaseId) -> Result<()> {
        let key = format!("{}{}", self.nodes_prefix(role), node.id);
        self.store
            .txn(Txn::new().and_then([TxnOp::put_with_lease(key, encode_json(node), lease)]))
            .await?;
        Ok(())
    }

    /// Live nodes of a role, by id.
    pub async fn nodes(&self, role: Role) -> Result<Vec<NodeInfo>> {
        let range = self.store.range(&self.nodes_prefix(role), true).await?;
        range.kvs.iter().map(decode_json).collect()
    }
}
