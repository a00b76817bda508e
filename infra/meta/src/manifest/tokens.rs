//! Client access tokens: `tokens/<id>` → [`TokenRecord`]. A token is
//! stored by the SHA-256 of its secret only; the secret itself is shown
//! once, when the token is created. Every node with token authentication
//! on watches these keys, so a revoked token stops working within seconds.

use serde::{Deserialize, Serialize};

use super::{Manifest, Result, decode_json, encode_json};
use crate::metastore::{Compare, Revision, Txn, TxnOp, WatchStream};

/// One token as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Public id (the part of the token before the secret).
    pub id: String,
    /// Hex SHA-256 of the secret.
    pub secret_sha256: String,
    /// The token reaches logs whose full name (`ns/log`) starts with this;
    /// empty: every log and the whole cluster.
    pub prefix: String,
    /// Operations it allows: `append`, `read`, `trim`, `admin`.
    pub ops: Vec<String>,
    pub description: String,
    pub created_at_ms: i64,
}

impl Manifest {
    pub fn tokens_prefix(&self) -> String {
        format!("{}tokens/", self.root)
    }

    fn token_key(&self, id: &str) -> String {
        format!("{}{id}", self.tokens_prefix())
    }

    /// Stores a new token; `false` when its id is taken.
    pub async fn create_token(&self, token: &TokenRecord) -> Result<bool> {
        let key = self.token_key(&token.id);
        let response = self
            .store
            .txn(
                Txn::new()
                    .when([Compare::absent(&key)])
                    .and_then([TxnOp::put(&key, encode_json(token))]),
            )
            .await?;
        Ok(response.succeeded)
    }

    /// Every token, by id, and the revision they were read at (to watch
    /// from).
    pub async fn tokens(&self) -> Result<(Vec<TokenRecord>, Revision)> {
        let range = self.store.range(&self.tokens_prefix(), true).await?;
        let mut tokens = Vec::with_capacity(range.kvs.len());
        for kv in &range.kvs {
            match decode_json::<TokenRecord>(kv) {
                Ok(token) => tokens.push(token),
                Err(err) => tracing::warn!(key = kv.key, "a token record does not decode: {err}"),
            }
        }
        Ok((tokens, range.revision))
    }

    /// Deletes a token; `false` when there was none.
    pub async fn revoke_token(&self, id: &str) -> Result<bool> {
        Ok(self.store.delete(&self.token_key(id)).await?)
    }

    /// Changes of the token keys from `start_revision` on.
    pub async fn watch_tokens(&self, start_revision: Option<Revision>) -> Result<WatchStream> {
        Ok(self
            .store
            .watch(&self.tokens_prefix(), start_revision)
            .await?)
    }
}
