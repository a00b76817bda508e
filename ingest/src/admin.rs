//! The `AdminService` of ingest nodes: namespace and log settings
//! (retention, roll policy, replication, quota) read and changed through
//! the API, in a cluster and in standalone alike. A change is checked,
//! written to the manifest, and reaches running owners through their
//! settings watch ([`crate::node`]); the compactor reads retention at each
//! pass.
//!
//! Refused with `INVALID_ARGUMENT` and the reason: A > W, W > E, E above
//! the live cache nodes, a zero retention or quota, roll limits below
//! 1 MiB, 100 records or 1 s, a payload schema that is not one or that
//! changes a field's type.
//!
//! A namespace's change is decided on its configuration as read and
//! written only if that is still the one there (compare-and-swap, tried
//! again on the newer one otherwise), so two concurrent changes never hand
//! out one payload field id twice.

use std::sync::Arc;

use dlog_meta::auth::{self, Op};
use dlog_meta::manifest::{MAX_ROLL_BYTES, NamespaceConfig, NamespaceRevisions, Replication};
use dlog_wire::names::{LogName, Namespace};
use dlog_wire::payload_schema::PayloadSchema;
use dlog_wire::proto::admin_service_server::{AdminService, AdminServiceServer};
use dlog_wire::proto::{self as pb};
use tonic::{Request, Response, Status};

use crate::node::IngestNode;

/// The gRPC face of settings administration.
#[derive(Debug, Clone)]
pub struct AdminServer {
    node: Arc<IngestNode>,
}

impl AdminServer {
    pub fn new(node: Arc<IngestNode>) -> AdminServer {
        AdminServer { node }
    }

    pub fn into_service(self) -> AdminServiceServer<AdminServer> {
        AdminServiceServer::new(self)
    }

    /// Checks `config` as a whole, then against the cache tier: an ensemble
    /// larger than the live cache nodes could never be placed.
    async fn check(&self, config: &NamespaceConfig) -> Result<(), Status> {
        check_settings(config).map_err(Status::invalid_argument)?;
        let live = self.node.live_cache_nodes().await.map_err(to_status)?;
        let ensemble = config.replication.ensemble as usize;
        if ensemble > live {
            return Err(Status::invalid_argument(format!(
                "replication {}: ensemble {ensemble} is larger than the {live} live cache nodes",
                replication_text(&config.replication)
            )));
        }
        Ok(())
    }

    /// Writes `current` with `change` applied, once checked, if the
    /// namespace's keys are still as read (`revisions`); `None` when
    /// another write came first (decide again on it).
    async fn put_changed(
        &self,
        ns: &Namespace,
        current: NamespaceConfig,
        revisions: NamespaceRevisions,
        change: &pb::SettingsChange,
    ) -> Result<Option<NamespaceConfig>, Status> {
        let config = apply_payload_schema(apply(current, change), change)
            .map_err(Status::invalid_argument)?;
        self.check(&config).await?;
        let manifest = self.node.manifest();
        let written =
            (manifest.put_namespace_if(ns, &config, revisions).await).map_err(to_status)?;
        Ok(written.then_some(config))
    }

    async fn namespace_response(&self, ns: &Namespace) -> Result<pb::NamespaceResponse, Status> {
        let manifest = self.node.manifest();
        let config = manifest.namespace(ns).await.map_err(to_status)?;
        let own = manifest.has_namespace(ns).await.map_err(to_status)?;
        Ok(pb::NamespaceResponse {
            namespace: ns.to_string(),
            settings: Some(settings(&config)),
            own,
        })
    }

    async fn log_response(&self, log: &LogName) -> Result<pb::LogSettingsResponse, Status> {
        let meta = self.node.manifest().log(log).await.map_err(to_status)?;
        // In force: with the namespace-wide quotas of its namespace.
        let config = self
            .node
            .manifest()
            .log_config(log)
            .await
            .map_err(to_status)?;
        Ok(pb::LogSettingsResponse {
            log: log.to_string(),
            settings: Some(settings(&config)),
            own: meta.config.is_some(),
        })
    }
}

fn to_status(err: impl dlog_wire::error::Classify + std::error::Error) -> Status {
    dlog_wire::error::to_status(&err)
}

fn replication_text(r: &Replication) -> String {
    format!("{}/{}/{}", r.ensemble, r.write_quorum, r.ack_quorum)
}

/// The smallest roll limits accepted.
pub const MIN_ROLL_BYTES: u64 = 1024 * 1024;
pub const MIN_ROLL_RECORDS: u64 = 100;
pub const MIN_ROLL_AGE_MS: u64 = 1_000;

/// Checks settings on their own: replication, retention, and limits that
/// would stop a log or flood the manifest (roll limits below the minimums
/// roll after every few entries; a zero quota refuses every append).
pub fn check_settings(config: &NamespaceConfig) -> Result<(), String> {
    config.replication.validate()?;
    config.validate_retention()?;
    // A segment costs manifest keys and a seal: rolling after every few
    // entries would grow the manifest without bound and slow every write.
    let roll = &config.roll;
    for (name, value, least) in [
        ("roll_max_bytes", roll.max_bytes, MIN_ROLL_BYTES),
        ("roll_max_records", roll.max_records, MIN_ROLL_RECORDS),
        ("roll_max_age_ms", roll.max_age_ms, MIN_ROLL_AGE_MS),
    ] {
        if value < least {
            return Err(format!("{name} {value} must be at least {least}"));
        }
    }
    if roll.max_bytes > MAX_ROLL_BYTES {
        return Err(format!(
            "roll_max_bytes {} must be at most {MAX_ROLL_BYTES} (a segment's file is uploaded in one request)",
            roll.max_bytes
        ));
    }
    for (name, quota) in [
        ("max_append_bytes_per_sec", config.max_append_bytes_per_sec),
        (
            "max_append_records_per_sec",
            config.max_append_records_per_sec,
        ),
        (
            "namespace_max_append_bytes_per_sec",
            config.namespace_max_append_bytes_per_sec,
        ),
        (
            "namespace_max_append_records_per_sec",
            config.namespace_max_append_records_per_sec,
        ),
    ] {
        if quota == Some(0) {
            return Err(format!(
                "{name} 0 would refuse every append (clear it for no quota)"
            ));
        }
    }
    Ok(())
}

/// `config` with `change` applied.
pub fn apply(mut config: NamespaceConfig, change: &pb::SettingsChange) -> NamespaceConfig {
    let set = |target: &mut Option<u64>, value: Option<u64>, clear: bool| {
        if clear {
            *target = None;
        } else if value.is_some() {
            *target = value;
        }
    };
    set(
        &mut config.retention_ms,
        change.retention_ms,
        change.clear_retention_ms,
    );
    set(
        &mut config.retention_bytes,
        change.retention_bytes,
        change.clear_retention_bytes,
    );
    set(
        &mut config.max_append_bytes_per_sec,
        change.max_append_bytes_per_sec,
        change.clear_max_append_bytes_per_sec,
    );
    set(
        &mut config.max_append_records_per_sec,
        change.max_append_records_per_sec,
        change.clear_max_append_records_per_sec,
    );
    set(
        &mut config.namespace_max_append_bytes_per_sec,
        change.namespace_max_append_bytes_per_sec,
        change.clear_namespace_max_append_bytes_per_sec,
    );
    set(
        &mut config.namespace_max_append_records_per_sec,
        change.namespace_max_append_records_per_sec,
        change.clear_namespace_max_append_records_per_sec,
    );
    let roll = &mut config.roll;
    // A roll size stored before the cap is brought under it by any change
    // (owners roll there already); a change that asks for more is refused.
    roll.max_bytes = change
        .roll_max_bytes
        .unwrap_or(roll.max_bytes.min(MAX_ROLL_BYTES));
    roll.max_records = change.roll_max_records.unwrap_or(roll.max_records);
    roll.max_age_ms = change.roll_max_age_ms.unwrap_or(roll.max_age_ms);
    let replication = &mut config.replication;
    replication.ensemble = change.ensemble.unwrap_or(replication.ensemble);
    replication.write_quorum = change.write_quorum.unwrap_or(replication.write_quorum);
    replication.ack_quorum = change.ack_quorum.unwrap_or(replication.ack_quorum);
    config
}

/// `config` with the payload schema `change` declares or clears: fields
/// named again keep their ids ([`PayloadSchema::declare`]).
pub fn apply_payload_schema(
    mut config: NamespaceConfig,
    change: &pb::SettingsChange,
) -> Result<NamespaceConfig, String> {
    match (&change.payload_schema, change.clear_payload_schema) {
        (Some(_), true) => {
            return Err("a payload schema and its clearing in one change: give one".to_owned());
        }
        (Some(document), false) => {
            let declared = PayloadSchema::declare(document, config.payload_schema.as_ref())?;
            config.payload_schema = Some(declared);
        }
        (None, true) => config.payload_schema = config.payload_schema.map(|s| s.cleared()),
        (None, false) => {}
    }
    Ok(config)
}

/// The wire form of settings in force.
pub fn settings(config: &NamespaceConfig) -> pb::Settings {
    pb::Settings {
        retention_ms: config.retention_ms,
        retention_bytes: config.retention_bytes,
        roll_max_bytes: config.roll.max_bytes,
        roll_max_records: config.roll.max_records,
        roll_max_age_ms: config.roll.max_age_ms,
        ensemble: config.replication.ensemble,
        write_quorum: config.replication.write_quorum,
        ack_quorum: config.replication.ack_quorum,
        max_append_bytes_per_sec: config.max_append_bytes_per_sec,
        max_append_records_per_sec: config.max_append_records_per_sec,
        namespace_max_append_bytes_per_sec: config.namespace_max_append_bytes_per_sec,
        namespace_max_append_records_per_sec: config.namespace_max_append_records_per_sec,
        payload_schema: (config.active_payload_schema())
            .map(|schema| serde_json::to_string(schema).expect("a schema serializes")),
    }
}

/// Refuses namespace-wide settings in a log's change: they belong to the
/// namespace, whose logs share them.
fn check_log_change(change: &pb::SettingsChange) -> Result<(), Status> {
    let namespace_wide = change.namespace_max_append_bytes_per_sec.is_some()
        || change.namespace_max_append_records_per_sec.is_some()
        || change.clear_namespace_max_append_bytes_per_sec
        || change.clear_namespace_max_append_records_per_sec;
    if namespace_wide {
        return Err(Status::invalid_argument(
            "namespace quotas are set on the namespace (ConfigureNamespace), not on a log",
        ));
    }
    if change.payload_schema.is_some() || change.clear_payload_schema {
        return Err(Status::invalid_argument(
            "payload schemas are set on the namespace (ConfigureNamespace), not on a log",
        ));
    }
    Ok(())
}

fn namespace_of(name: &str) -> Result<Namespace, Status> {
    Namespace::new(name).map_err(|err| Status::invalid_argument(err.to_string()))
}

#[tonic::async_trait]
impl AdminService for AdminServer {
    async fn create_namespace(
        &self,
        request: Request<pb::ConfigureNamespaceRequest>,
    ) -> Result<Response<pb::NamespaceResponse>, Status> {
        let grant = auth::grant_of(&request);
        let request = request.into_inner();
        let ns = namespace_of(&request.namespace)?;
        auth::check(&grant, Op::Admin, &format!("{ns}/"))?;
        let manifest = self.node.manifest();
        let change = request.change.unwrap_or_default();
        loop {
            // The cluster's default settings, with the namespace's own
            // payload schema if it has one.
            let (base, revisions) = manifest.namespace_versioned(&ns).await.map_err(to_status)?;
            if revisions.settings.is_some() {
                return Err(Status::already_exists(format!(
                    "namespace {ns} already has settings (change them with ConfigureNamespace)"
                )));
            }
            // Only if it still has none: a concurrent create wins once.
            if let Some(config) = self.put_changed(&ns, base, revisions, &change).await? {
                tracing::info!(%ns, ?config, "namespace created");
                break;
            }
        }
        Ok(Response::new(self.namespace_response(&ns).await?))
    }

    async fn configure_namespace(
        &self,
        request: Request<pb::ConfigureNamespaceRequest>,
    ) -> Result<Response<pb::NamespaceResponse>, Status> {
        let grant = auth::grant_of(&request);
        let request = request.into_inner();
        let ns = namespace_of(&request.namespace)?;
        auth::check(&grant, Op::Admin, &format!("{ns}/"))?;
        let manifest = self.node.manifest();
        let change = request.change.unwrap_or_default();
        loop {
            let (current, revisions) =
                manifest.namespace_versioned(&ns).await.map_err(to_status)?;
            if let Some(config) = self.put_changed(&ns, current, revisions, &change).await? {
                tracing::info!(%ns, ?config, "namespace settings changed");
                break;
            }
        }
        Ok(Response::new(self.namespace_response(&ns).await?))
    }

    async fn get_namespace(
        &self,
        request: Request<pb::GetNamespaceRequest>,
    ) -> Result<Response<pb::NamespaceResponse>, Status> {
        let grant = auth::grant_of(&request);
        let ns = namespace_of(&request.into_inner().namespace)?;
        auth::check(&grant, Op::Admin, &format!("{ns}/"))?;
        Ok(Response::new(self.namespace_response(&ns).await?))
    }

    async fn list_namespaces(
        &self,
        request: Request<pb::ListNamespacesRequest>,
    ) -> Result<Response<pb::ListNamespacesResponse>, Status> {
        let grant = auth::grant_of(&request);
        let scope = auth::listing(&grant, Op::Admin)?;
        let manifest = self.node.manifest();
        let mut names: Vec<String> = manifest
            .configured_namespaces()
            .await
            .map_err(to_status)?
            .iter()
            .map(ToString::to_string)
            .collect();
        for log in manifest.list_logs("").await.map_err(to_status)? {
            names.push(log.namespace().to_string());
        }
        names.retain(|ns| auth::visible(&scope, &format!("{ns}/")));
        names.sort();
        names.dedup();
        Ok(Response::new(pb::ListNamespacesResponse {
            namespaces: names,
        }))
    }

    async fn configure_log(
        &self,
        request: Request<pb::ConfigureLogRequest>,
    ) -> Result<Response<pb::LogSettingsResponse>, Status> {
        let grant = auth::grant_of(&request);
        let request = request.into_inner();
        let log = auth::log_for(&grant, Op::Admin, &request.log)?;
        let manifest = self.node.manifest();
        if request.inherit {
            manifest
                .put_log_config(&log, None)
                .await
                .map_err(to_status)?;
        } else {
            let change = request.change.unwrap_or_default();
            check_log_change(&change)?;
            let current = manifest.log_config(&log).await.map_err(to_status)?;
            let mut config = apply(current, &change);
            self.check(&config).await?;
            // The namespace's, which the log's settings always take.
            config.payload_schema = None;
            manifest
                .put_log_config(&log, Some(&config))
                .await
                .map_err(to_status)?;
        }
        tracing::info!(%log, inherit = request.inherit, "log settings changed");
        Ok(Response::new(self.log_response(&log).await?))
    }

    async fn get_log_settings(
        &self,
        request: Request<pb::GetLogSettingsRequest>,
    ) -> Result<Response<pb::LogSettingsResponse>, Status> {
        let grant = auth::grant_of(&request);
        let log = auth::log_for(&grant, Op::Read, &request.into_inner().log)?;
        Ok(Response::new(self.log_response(&log).await?))
    }

    async fn create_token(
        &self,
        request: Request<pb::CreateTokenRequest>,
    ) -> Result<Response<pb::CreateTokenResponse>, Status> {
        let grant = auth::grant_of(&request);
        let request = request.into_inner();
        let mut ops = Vec::new();
        for op in &request.ops {
            let op: Op = op.parse().map_err(Status::invalid_argument)?;
            if !ops.contains(&op) {
                ops.push(op);
            }
        }
        if ops.is_empty() {
            return Err(Status::invalid_argument(
                "a token needs at least one operation: append, read, trim or admin",
            ));
        }
        check_prefix(&request.prefix)?;
        // A token makes tokens only within what it holds itself.
        if let Some(grant) = &grant {
            grant.check_delegation(&ops, &request.prefix)?;
        }
        let new = auth::new_token(None, &request.prefix, &ops, &request.description)?;
        let created = self
            .node
            .manifest()
            .create_token(&new.record)
            .await
            .map_err(to_status)?;
        if !created {
            return Err(Status::aborted(
                "token id taken by another token: try again",
            ));
        }
        tracing::info!(id = %new.record.id, prefix = ?new.record.prefix, ops = ?new.record.ops, "token created");
        if let Some(grant) = &grant {
            grant
                .until_known(&new.record.id, std::time::Duration::from_secs(2))
                .await;
        }
        Ok(Response::new(pb::CreateTokenResponse {
            info: Some(token_info(new.record)),
            token: new.token,
        }))
    }

    async fn list_tokens(
        &self,
        request: Request<pb::ListTokensRequest>,
    ) -> Result<Response<pb::ListTokensResponse>, Status> {
        auth::authorize(&request, Op::Admin, "")?;
        let (tokens, _) = self.node.manifest().tokens().await.map_err(to_status)?;
        Ok(Response::new(pb::ListTokensResponse {
            tokens: tokens.into_iter().map(token_info).collect(),
        }))
    }

    async fn revoke_token(
        &self,
        request: Request<pb::RevokeTokenRequest>,
    ) -> Result<Response<pb::RevokeTokenResponse>, Status> {
        auth::authorize(&request, Op::Admin, "")?;
        let id = request.into_inner().id;
        // The last token that can make tokens stays: without it no one
        // could manage tokens again.
        let (tokens, _) = self.node.manifest().tokens().await.map_err(to_status)?;
        let cluster_admin = |t: &dlog_meta::manifest::TokenRecord| {
            t.prefix.is_empty() && t.ops.iter().any(|o| o == "admin")
        };
        if tokens.iter().any(|t| t.id == id && cluster_admin(t))
            && tokens.iter().filter(|t| cluster_admin(t)).count() == 1
        {
            return Err(Status::failed_precondition(format!(
                "token {id} is the last one with admin over the whole cluster: create another first"
            )));
        }
        if !self
            .node
            .manifest()
            .revoke_token(&id)
            .await
            .map_err(to_status)?
        {
            return Err(Status::not_found(format!("no token {id:?}")));
        }
        tracing::info!(id = ?id, "token revoked");
        Ok(Response::new(pb::RevokeTokenResponse {}))
    }

    async fn get_placement(
        &self,
        request: Request<pb::GetPlacementRequest>,
    ) -> Result<Response<pb::GetPlacementResponse>, Status> {
        auth::authorize(&request, Op::Admin, "")?;
        let report = self.node.placement_report().await.map_err(to_status)?;
        Ok(Response::new(report))
    }

    async fn move_log(
        &self,
        request: Request<pb::MoveLogRequest>,
    ) -> Result<Response<pb::MoveLogResponse>, Status> {
        let grant = auth::grant_of(&request);
        let request = request.into_inner();
        let log = auth::log_for(&grant, Op::Admin, &request.log)?;
        let node = (!request.node.is_empty()).then_some(request.node.as_str());
        let preferred = self.node.move_log(&log, node).await.map_err(to_status)?;
        Ok(Response::new(pb::MoveLogResponse { preferred }))
    }
}

/// A token's scope: empty (everything), a namespace prefix, or a log
/// prefix, in name characters only (and `/`).
fn check_prefix(prefix: &str) -> Result<(), Status> {
    let ok = prefix.len() <= 257
        && prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'))
        && prefix.matches('/').count() <= 1;
    if ok {
        Ok(())
    } else {
        Err(Status::invalid_argument(format!(
            "token prefix {prefix:?}: expected the start of NS/LOG (letters, digits, . _ - and one /)"
        )))
    }
}

fn token_info(record: dlog_meta::manifest::TokenRecord) -> pb::TokenInfo {
    pb::TokenInfo {
        id: record.id,
        prefix: record.prefix,
        ops: record.ops,
        description: record.description,
        created_at_ms: record.created_at_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_roll_size_stored_before_the_cap_is_brought_under_it_by_any_change() {
        let mut stored = NamespaceConfig::default();
        stored.roll.max_bytes = 4 * MAX_ROLL_BYTES;
        let change = pb::SettingsChange {
            retention_ms: Some(60_000),
            ..Default::default()
        };
        let changed = apply(stored, &change);
        assert_eq!(changed.roll.max_bytes, MAX_ROLL_BYTES);
        assert!(check_settings(&changed).is_ok());
    }

    #[test]
    fn a_change_sets_only_what_it_names_and_clears_on_request() {
        let base = NamespaceConfig {
            retention_ms: Some(1_000),
            retention_bytes: Some(5_000),
            ..NamespaceConfig::default()
        };
        let changed = apply(
            base.clone(),
            &pb::SettingsChange {
                retention_ms: Some(2_000),
                clear_retention_bytes: true,
                ack_quorum: Some(3),
                roll_max_age_ms: Some(60_000),
                ..Default::default()
            },
        );
        assert_eq!(changed.retention_ms, Some(2_000));
        assert_eq!(changed.retention_bytes, None);
        assert_eq!(changed.replication.ack_quorum, 3);
        assert_eq!(
            changed.replication.ensemble, base.replication.ensemble,
            "unchanged"
        );
        assert_eq!(changed.roll.max_age_ms, 60_000);
        assert_eq!(changed.roll.max_bytes, base.roll.max_bytes, "unchanged");
    }

    #[test]
    fn settings_that_would_stop_a_log_are_refused_with_the_reason() {
        let with = |change: pb::SettingsChange| {
            check_settings(&apply(NamespaceConfig::default(), &change)).unwrap_err()
        };
        let err = with(pb::SettingsChange {
            ack_quorum: Some(3),
            write_quorum: Some(2),
            ..Default::default()
        });
        assert!(err.contains("write quorum >= ack quorum"), "{err}");
        let err = with(pb::SettingsChange {
            ensemble: Some(2),
            ..Default::default()
        });
        assert!(err.contains("ensemble >= write quorum"), "{err}");
        let err = with(pb::SettingsChange {
            retention_ms: Some(0),
            ..Default::default()
        });
        assert!(err.contains("retention_ms 0"), "{err}");
        let err = with(pb::SettingsChange {
            retention_bytes: Some(0),
            ..Default::default()
        });
        assert!(err.contains("retention_bytes 0"), "{err}");
        let err = with(pb::SettingsChange {
            roll_max_records: Some(0),
            ..Default::default()
        });
        assert!(
            err.contains("roll_max_records 0 must be at least 100"),
            "{err}"
        );
        // A segment's file goes up in one request (S3: at most 5 GiB).
        let err = with(pb::SettingsChange {
            roll_max_bytes: Some(MAX_ROLL_BYTES + 1),
            ..Default::default()
        });
        assert!(
            err.contains("roll_max_bytes 1073741825 must be at most"),
            "{err}"
        );
        let err = with(pb::SettingsChange {
            max_append_bytes_per_sec: Some(0),
            ..Default::default()
        });
        assert!(err.contains("max_append_bytes_per_sec 0"), "{err}");
    }

    #[test]
    fn quotas_are_set_and_cleared_and_namespace_ones_stay_off_logs() {
        let change = pb::SettingsChange {
            max_append_records_per_sec: Some(500),
            namespace_max_append_bytes_per_sec: Some(1 << 20),
            ..Default::default()
        };
        let config = apply(NamespaceConfig::default(), &change);
        assert_eq!(config.max_append_records_per_sec, Some(500));
        assert_eq!(config.namespace_max_append_bytes_per_sec, Some(1 << 20));
        let cleared = apply(
            config,
            &pb::SettingsChange {
                clear_namespace_max_append_bytes_per_sec: true,
                ..Default::default()
            },
        );
        assert_eq!(cleared.namespace_max_append_bytes_per_sec, None);
        assert_eq!(cleared.max_append_records_per_sec, Some(500));
        let err = check_log_change(&change).unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().contains("set on the namespace"), "{err:?}");
        let err = check_settings(&NamespaceConfig {
            namespace_max_append_records_per_sec: Some(0),
            ..Default::default()
        })
        .unwrap_err();
        assert!(
            err.contains("namespace_max_append_records_per_sec 0"),
            "{err}"
        );
    }

    /// A schema is declared, changed with its ids kept, refused when a
    /// field's type changes (naming it) or when it comes with its own
    /// clearing, and cleared with its ids kept taken; settings show it in
    /// force as JSON with the ids; a log's change may not carry one.
    #[test]
    fn payload_schemas_are_declared_changed_and_cleared_on_namespaces_only() {
        let change = |document: &str| pb::SettingsChange {
            payload_schema: Some(document.to_owned()),
            ..pb::SettingsChange::default()
        };
        let first = apply_payload_schema(
            NamespaceConfig::default(),
            &change(
                r#"{"fields":[{"name":"user","type":"string"},{"name":"amount","type":"int64"}]}"#,
            ),
        )
        .unwrap();
        let shown = settings(&first).payload_schema.unwrap();
        assert_eq!(
            shown,
            r#"{"fields":[{"name":"user","type":"string","id":1000},{"name":"amount","type":"int64","id":1001}]}"#
        );
        let second = apply_payload_schema(
            first.clone(),
            &change(r#"{"fields":[{"name":"region","type":"string"},{"name":"amount","type":"int64"}]}"#),
        )
        .unwrap();
        let schema = second.active_payload_schema().unwrap();
        let ids: Vec<i32> = schema.fields.iter().map(|f| f.id).collect();
        assert_eq!((ids, schema.removed[0].id), (vec![1002, 1001], 1000));
        let err = apply_payload_schema(
            second.clone(),
            &change(r#"{"fields":[{"name":"amount","type":"double"}]}"#),
        )
        .unwrap_err();
        assert!(
            err.contains(r#"field "amount": its type is int64"#),
            "{err}"
        );
        let both = pb::SettingsChange {
            clear_payload_schema: true,
            ..change(r#"{"fields":[{"name":"a","type":"string"}]}"#)
        };
        assert!(apply_payload_schema(second.clone(), &both).is_err());
        let clear = pb::SettingsChange {
            clear_payload_schema: true,
            ..pb::SettingsChange::default()
        };
        let cleared = apply_payload_schema(second, &clear).unwrap();
        assert!(cleared.active_payload_schema().is_none());
        assert_eq!(settings(&cleared).payload_schema, None);
        assert_eq!(cleared.payload_schema.as_ref().unwrap().removed.len(), 3);
        // Other settings changes leave the schema as it is.
        let unchanged = apply_payload_schema(first.clone(), &pb::SettingsChange::default());
        assert_eq!(unchanged.unwrap(), first);
        let err = check_log_change(&change(r#"{"fields":[]}"#)).unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().contains("set on the namespace"), "{err:?}");
    }
}
