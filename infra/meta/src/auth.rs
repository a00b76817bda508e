//! Client tokens with scopes, as S2 access tokens: a token names a prefix
//! of full log names (`ns-a/`: the logs of namespace `ns-a`; empty: every
//! log and the whole cluster) and the operations it allows ([`Op`]).
//!
//! - A token is `dlog_<id>_<secret>`; the manifest keeps the SHA-256 of the
//!   secret only ([`TokenRecord`]), so a copy of the manifest grants
//!   nothing.
//! - [`TokenTable`] is a node's view of the tokens, kept current by a watch
//!   of their keys (and a full reload every minute): a revoked token stops
//!   working within the watch's delay.
//! - The node's transport turns the `authorization: Bearer …` header of
//!   every request into a [`Grant`] in the request's extensions
//!   ([`TokenTable::grant`]); each service method then checks the grant
//!   against what it does and to which log ([`check`]). A request without
//!   a grant (authentication off, or an in-process caller) is allowed; a
//!   node refuses to start with authentication off while the cluster has
//!   tokens, so no node of such a cluster serves without checks.
//!
//! Answers: no token or an unknown one → `UNAUTHENTICATED`; a token
//! without the operation or the log in its scope → `PERMISSION_DENIED`.
//!
//! Crash safety: tokens are written with one create-if-absent transaction
//! and removed with one delete; a node that dies in between has changed
//! nothing else. The root token's file is written before the token exists
//! ([`bootstrap_root_token`]).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tonic::metadata::MetadataMap;

use dlog_wire::names::LogName;

use crate::manifest::{Manifest, TokenRecord};

/// What a request does, for scopes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `Append`, `AppendSession`.
    Append,
    /// Reads, tails, log info and listings, subscriptions.
    Read,
    /// `Trim`, `MarkEndOfStream`, `SealLog`.
    Trim,
    /// Creating and deleting logs, settings, status, tokens.
    Admin,
}

impl Op {
    pub const ALL: [Op; 4] = [Op::Append, Op::Read, Op::Trim, Op::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Op::Append => "append",
            Op::Read => "read",
            Op::Trim => "trim",
            Op::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Op {
    type Err = String;

    fn from_str(text: &str) -> Result<Op, String> {
        Op::ALL
            .into_iter()
            .find(|op| op.as_str() == text)
            .ok_or_else(|| {
                format!("unknown operation {text:?}: expected append, read, trim or admin")
            })
    }
}

/// The id of the token a node creates when token authentication is on and
/// no token exists yet: every operation, every log.
pub const ROOT_TOKEN_ID: &str = "root";

/// How often a node reads every token again besides following the watch.
const FULL_RELOAD: Duration = Duration::from_secs(60);

/// A new token: what to store, and the token to hand out once.
#[derive(Clone)]
pub struct NewToken {
    pub record: TokenRecord,
    /// `dlog_<id>_<secret>`: shown once, never stored.
    pub token: String,
}

impl std::fmt::Debug for NewToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        f.debug_struct("NewToken")
            .field("id", &self.record.id)
            .finish_non_exhaustive()
    }
}

/// Makes a token with a random secret (and a random id unless given).
pub fn new_token(
    id: Option<&str>,
    prefix: &str,
    ops: &[Op],
    description: &str,
) -> Result<NewToken, Status> {
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let mut bytes = [0u8; 38];
    aws_lc_rs::rand::SecureRandom::fill(&rng, &mut bytes)
        .map_err(|_| Status::internal("no random bytes for a token"))?;
    let id = match id {
        Some(id) => id.to_owned(),
        None => hex(&bytes[..6]),
    };
    let secret = hex(&bytes[6..]);
    Ok(NewToken {
        record: TokenRecord {
            id: id.clone(),
            secret_sha256: sha256_hex(&secret),
            prefix: prefix.to_owned(),
            ops: ops.iter().map(|op| op.as_str().to_owned()).collect(),
            description: description.to_owned(),
            created_at_ms: dlog_wire::now_ms(),
        },
        token: format!("dlog_{id}_{secret}"),
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256_hex(secret: &str) -> String {
    hex(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, secret.as_bytes()).as_ref())
}

/// Compares two digests in constant time.
fn same_secret(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// Splits `dlog_<id>_<secret>`.
fn parse_token(token: &str) -> Option<(&str, &str)> {
    let rest = token.strip_prefix("dlog_")?;
    let (id, secret) = rest.split_once('_')?;
    (!id.is_empty() && !secret.is_empty()).then_some((id, secret))
}

/// A node's view of the tokens.
#[derive(Debug, Default)]
pub struct TokenTable {
    tokens: RwLock<HashMap<String, TokenRecord>>,
}

/// Who a request comes from, as its transport saw it.
#[derive(Clone)]
pub enum Grant {
    /// A token of the table, checked again at each use (a stream outlives
    /// a revocation by no more than its next message). `secret_sha256`
    /// pins the token itself: a new token under the same id (a root token
    /// made again) is not this one.
    Token {
        id: String,
        secret_sha256: String,
        table: Arc<TokenTable>,
    },
    /// No usable token; the reason, given as `UNAUTHENTICATED` to any
    /// method that needs one.
    Refused(String),
}

impl std::fmt::Debug for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Grant::Token { id, .. } => write!(f, "Grant::Token({id})"),
            Grant::Refused(reason) => write!(f, "Grant::Refused({reason:?})"),
        }
    }
}

impl TokenTable {
    /// Loads the tokens and keeps them current until `stop`.
    pub async fn watched(
        manifest: Manifest,
        stop: CancellationToken,
    ) -> crate::manifest::Result<Arc<TokenTable>> {
        let table = Arc::new(TokenTable::default());
        let revision = table.reload(&manifest).await?;
        tokio::spawn(keep_current(table.clone(), manifest, revision, stop));
        Ok(table)
    }

    async fn reload(&self, manifest: &Manifest) -> crate::manifest::Result<i64> {
        let (tokens, revision) = manifest.tokens().await?;
        let tokens = tokens.into_iter().map(|t| (t.id.clone(), t)).collect();
        *self.tokens.write().unwrap_or_else(|p| p.into_inner()) = tokens;
        Ok(revision)
    }

    /// The grant for a request's metadata (its `authorization` header).
    pub fn grant(self: &Arc<Self>, metadata: &MetadataMap) -> Grant {
        let Some(value) = metadata.get("authorization") else {
            return Grant::Refused(
                "no token: send `authorization: Bearer dlog_…` (dlog --token, DLOG_TOKEN)".into(),
            );
        };
        let token = value.to_str().ok().and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
        let Some((id, secret)) = token.and_then(parse_token) else {
            return Grant::Refused("the authorization header holds no dlog token".into());
        };
        let presented = sha256_hex(secret);
        let tokens = self.tokens.read().unwrap_or_else(|p| p.into_inner());
        match tokens.get(id) {
            Some(record) if same_secret(&record.secret_sha256, &presented) => Grant::Token {
                id: id.to_owned(),
                secret_sha256: presented,
                table: self.clone(),
            },
            // One answer for an unknown id and a wrong secret.
            _ => Grant::Refused("unknown or revoked token".into()),
        }
    }
}

impl Grant {
    /// The token's record as it is now; `UNAUTHENTICATED` when refused or
    /// revoked since.
    fn record(&self) -> Result<TokenRecord, Status> {
        match self {
            Grant::Refused(reason) => Err(Status::unauthenticated(reason.clone())),
            Grant::Token {
                id,
                secret_sha256,
                table,
            } => {
                let tokens = table.tokens.read().unwrap_or_else(|p| p.into_inner());
                match tokens.get(id) {
                    Some(record) if same_secret(&record.secret_sha256, secret_sha256) => {
                        Ok(record.clone())
                    }
                    _ => Err(Status::unauthenticated(format!("token {id} was revoked"))),
                }
            }
        }
    }

    /// Whether the grant allows `op` on `name`: a full log name (`ns/log`),
    /// a namespace as `ns/`, or `""` for the whole cluster.
    pub fn check(&self, op: Op, name: &str) -> Result<(), Status> {
        allows(&self.record()?, op, name)
    }

    /// Whether the grant allows any of `ops` on `name`.
    pub fn check_any(&self, ops: &[Op], name: &str) -> Result<(), Status> {
        let record = self.record()?;
        let mut refusal = Status::permission_denied("no operation to allow");
        for op in ops {
            match allows(&record, *op, name) {
                Ok(()) => return Ok(()),
                Err(err) => refusal = err,
            }
        }
        Err(refusal)
    }

    /// Whether this grant may make a token for `ops` under `prefix`: it
    /// must itself hold admin and each of the ops over that prefix.
    pub fn check_delegation(&self, ops: &[Op], prefix: &str) -> Result<(), Status> {
        let record = self.record()?;
        allows(&record, Op::Admin, prefix)?;
        for op in ops {
            allows(&record, *op, prefix)?;
        }
        Ok(())
    }

    /// Waits (at most `within`) until this node's table holds token `id`:
    /// a token created through this node then works at once on it (other
    /// nodes learn it from their watch within moments).
    pub async fn until_known(&self, id: &str, within: Duration) {
        let Grant::Token { table, .. } = self else {
            return;
        };
        let deadline = tokio::time::Instant::now() + within;
        while !table
            .tokens
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(id)
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The prefix of the names a listing may show, read once: `None` shows
    /// nothing (refused, or revoked since), `Some("")` everything.
    pub fn listing_prefix(&self) -> Option<String> {
        self.record().ok().map(|record| record.prefix)
    }
}

/// Whether `record` allows `op` on `name`.
fn allows(record: &TokenRecord, op: Op, name: &str) -> Result<(), Status> {
    let id = &record.id;
    if !record.ops.iter().any(|o| o == op.as_str()) {
        return Err(Status::permission_denied(format!(
            "token {id} does not allow {} (it allows {})",
            op.as_str(),
            record.ops.join(", ")
        )));
    }
    if !name.starts_with(&record.prefix) {
        let what = if name.is_empty() {
            "the whole cluster"
        } else {
            name
        };
        return Err(Status::permission_denied(format!(
            "token {id} does not reach {what} (its scope is {:?})",
            record.prefix
        )));
    }
    Ok(())
}

/// Checks the grant a request carries (none: allowed).
pub fn authorize<T>(request: &tonic::Request<T>, op: Op, name: &str) -> Result<(), Status> {
    check(&grant_of(request), op, name)
}

/// The grant a request carries, to check once its body is decoded (or
/// for each message of a stream).
pub fn grant_of<T>(request: &tonic::Request<T>) -> Option<Grant> {
    request.extensions().get::<Grant>().cloned()
}

/// Checks a grant taken with [`grant_of`] (none: allowed).
pub fn check(grant: &Option<Grant>, op: Op, name: &str) -> Result<(), Status> {
    match grant {
        Some(grant) => grant.check(op, name),
        None => Ok(()),
    }
}

/// The log a request names (`name`), parsed, once `grant` allows `op` on
/// it.
pub fn log_for(grant: &Option<Grant>, op: Op, name: &str) -> Result<LogName, Status> {
    let log = LogName::from_request(name)?;
    check(grant, op, &log.to_string())?;
    Ok(log)
}

/// A listing's filter ([`listing_scope`]), once `grant` allows `op` on
/// the scope it shows.
pub fn listing(grant: &Option<Grant>, op: Op) -> Result<Option<Option<String>>, Status> {
    let scope = listing_scope(grant);
    if let (Some(grant), Some(scope)) = (grant, &scope) {
        grant.check(op, scope.as_deref().unwrap_or(""))?;
    }
    Ok(scope)
}

/// [`Grant::check_any`] on a grant taken with [`grant_of`].
pub fn check_any(grant: &Option<Grant>, ops: &[Op], name: &str) -> Result<(), Status> {
    match grant {
        Some(grant) => grant.check_any(ops, name),
        None => Ok(()),
    }
}

/// The listing filter of a request, read once: `None` (no grant) shows
/// every name, else [`Grant::listing_prefix`].
pub fn listing_scope(grant: &Option<Grant>) -> Option<Option<String>> {
    grant.as_ref().map(Grant::listing_prefix)
}

/// Whether a listing with `scope` ([`listing_scope`]) shows `name`.
pub fn visible(scope: &Option<Option<String>>, name: &str) -> bool {
    match scope {
        None => true,
        Some(None) => false,
        Some(Some(prefix)) => name.starts_with(prefix.as_str()),
    }
}

/// Reloads the table at every change of the token keys, and every
/// [`FULL_RELOAD`], until `stop`.
async fn keep_current(
    table: Arc<TokenTable>,
    manifest: Manifest,
    mut revision: i64,
    stop: CancellationToken,
) {
    loop {
        match manifest.watch_tokens(Some(revision + 1)).await {
            Ok(mut events) => {
                let mut refresh = tokio::time::interval(FULL_RELOAD);
                refresh.tick().await;
                loop {
                    let event = tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = refresh.tick() => None,
                        event = events.next() => match event {
                            Some(event) => Some(event),
                            None => break,
                        },
                    };
                    if let Some(Err(err)) = &event {
                        tracing::warn!("the token watch ended: {err:#}");
                        break;
                    }
                    match table.reload(&manifest).await {
                        Ok(read_at) => revision = revision.max(read_at),
                        Err(err) => {
                            tracing::warn!("reading the tokens: {err:#}");
                            break;
                        }
                    }
                }
            }
            Err(err) => tracing::warn!("watching the tokens: {err:#}"),
        }
        // A broken watch: wait, read everything again, watch from there.
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        match table.reload(&manifest).await {
            Ok(read_at) => revision = read_at,
            Err(err) => tracing::warn!("reading the tokens: {err:#}"),
        }
    }
}

/// With token authentication on and no token yet, creates the root token
/// (every operation, every log) and writes it to `file` (mode 0600).
/// Nodes starting together race on one create-if-absent; only the winner
/// keeps its file. `None` when a token existed already.
///
/// Crash safety: the file is written (and synced) before the token is
/// created, so a crash between the two leaves a file naming a token the
/// cluster does not have (the next start makes another), never a root
/// token that no one holds.
pub async fn bootstrap_root_token(
    manifest: &Manifest,
    file: &std::path::Path,
) -> Result<Option<std::path::PathBuf>, BootstrapError> {
    let (tokens, _) = manifest.tokens().await?;
    if !tokens.is_empty() {
        return Ok(None);
    }
    let new = new_token(Some(ROOT_TOKEN_ID), "", &Op::ALL, "created at first start")?;
    write_secret(file, &new.token)?;
    if !manifest.create_token(&new.record).await? {
        // Another node's root token won the race.
        let _ = std::fs::remove_file(file);
        return Ok(None);
    }
    Ok(Some(file.to_owned()))
}

/// Writes `token` to `file` (mode 0600, whatever was there before) through
/// a temporary file and a rename.
fn write_secret(file: &std::path::Path, token: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let temporary = file.with_extension("new");
    let _ = std::fs::remove_file(&temporary);
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temporary)?;
    writeln!(out, "{token}")?;
    out.sync_all()?;
    std::fs::rename(&temporary, file)
}

/// Errors of [`bootstrap_root_token`].
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error(transparent)]
    Manifest(#[from] crate::manifest::Error),
    #[error("make the root token: {}", .0.message())]
    Token(#[from] Status),
    #[error("write the root token: {0}")]
    Io(#[from] std::io::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table_with(records: &[&TokenRecord]) -> Arc<TokenTable> {
        let table = Arc::new(TokenTable::default());
        let mut tokens = table.tokens.write().unwrap();
        for record in records {
            tokens.insert(record.id.clone(), (*record).clone());
        }
        drop(tokens);
        table
    }

    fn bearer(token: &str) -> MetadataMap {
        let mut metadata = MetadataMap::new();
        metadata.insert("authorization", format!("Bearer {token}").parse().unwrap());
        metadata
    }

    #[test]
    fn a_token_reaches_its_scope_and_nothing_else() {
        let new = new_token(None, "ns-a/", &[Op::Read], "reader of ns-a").unwrap();
        assert!(!new.token.contains(&new.record.secret_sha256));
        assert!(
            !format!("{new:?}").contains(&new.token),
            "Debug shows the secret"
        );
        let table = table_with(&[&new.record]);
        let grant = table.grant(&bearer(&new.token));
        grant.check(Op::Read, "ns-a/x").unwrap();
        let other = grant.check(Op::Read, "ns-b/x").unwrap_err();
        assert_eq!(other.code(), tonic::Code::PermissionDenied, "{other:?}");
        let op = grant.check(Op::Append, "ns-a/x").unwrap_err();
        assert_eq!(op.code(), tonic::Code::PermissionDenied);
        assert!(
            grant.check(Op::Read, "").is_err(),
            "a scoped token reached the cluster"
        );
        grant.check_any(&[Op::Append, Op::Read], "ns-a/x").unwrap();
        assert_eq!(grant.listing_prefix().as_deref(), Some("ns-a/"));

        // No header, a wrong secret, a malformed token: unauthenticated.
        for metadata in [
            MetadataMap::new(),
            bearer(&format!("dlog_{}_{}", new.record.id, "00")),
            bearer("not-a-token"),
        ] {
            let err = table
                .grant(&metadata)
                .check(Op::Read, "ns-a/x")
                .unwrap_err();
            assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
        }
    }

    #[test]
    fn a_token_delegates_only_what_it_holds() {
        let admin = new_token(None, "ns-a/", &[Op::Admin, Op::Read], "").unwrap();
        let table = table_with(&[&admin.record]);
        let grant = table.grant(&bearer(&admin.token));
        grant.check_delegation(&[Op::Read], "ns-a/x").unwrap();
        assert!(grant.check_delegation(&[Op::Append], "ns-a/").is_err());
        assert!(grant.check_delegation(&[Op::Read], "").is_err());
        assert!(grant.check_delegation(&[Op::Read], "ns-b/").is_err());
    }

    #[test]
    fn a_revoked_or_replaced_token_stops_at_its_next_use() {
        let new = new_token(None, "ns-a/", &[Op::Read], "").unwrap();
        let table = table_with(&[&new.record]);
        let grant = table.grant(&bearer(&new.token));
        // A new token under the same id is not the old one.
        let again = new_token(Some(&new.record.id), "", &Op::ALL, "").unwrap();
        table
            .tokens
            .write()
            .unwrap()
            .insert(again.record.id.clone(), again.record);
        let err = grant.check(Op::Read, "ns-a/x").unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
        assert_eq!(grant.listing_prefix(), None, "a revoked grant lists names");
        let scope = listing_scope(&Some(grant));
        assert!(!visible(&scope, "ns-a/x"));
        assert!(visible(&None, "ns-b/x"), "no grant (auth off) hides names");
    }

    #[test]
    fn operations_parse_and_print() {
        for op in Op::ALL {
            assert_eq!(op.as_str().parse::<Op>().unwrap(), op);
        }
        assert!("delete".parse::<Op>().is_err());
    }
}
