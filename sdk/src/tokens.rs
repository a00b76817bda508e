//! Client tokens through `AdminService`: [`Client::create_token`],
//! [`Client::list_tokens`], [`Client::revoke_token`]. Each needs a token
//! with `admin` over the whole cluster; give it with
//! [`Client::with_token`].

use dlog_wire::proto as pb;

use crate::client::{Client, Result};

/// A token as the cluster knows it (never its secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    /// The token's public id (`dlog_<id>_…`); what `revoke_token` takes.
    pub id: String,
    /// Logs whose full name starts with this; empty: everything.
    pub prefix: String,
    /// `append`, `read`, `trim`, `admin`.
    pub ops: Vec<String>,
    /// What its creator said it is for.
    pub description: String,
    /// When it was created, in milliseconds since the Unix epoch.
    pub created_at_ms: i64,
}

impl From<pb::TokenInfo> for TokenInfo {
    fn from(info: pb::TokenInfo) -> TokenInfo {
        TokenInfo {
            id: info.id,
            prefix: info.prefix,
            ops: info.ops,
            description: info.description,
            created_at_ms: info.created_at_ms,
        }
    }
}

impl Client {
    /// Creates a token reaching logs under `prefix` for `ops`; returns it
    /// (`dlog_<id>_<secret>`, shown this once) and its description.
    pub async fn create_token(
        &self,
        prefix: &str,
        ops: &[&str],
        description: &str,
    ) -> Result<(String, TokenInfo)> {
        let request = pb::CreateTokenRequest {
            prefix: prefix.to_owned(),
            ops: ops.iter().map(|op| (*op).to_owned()).collect(),
            description: description.to_owned(),
        };
        self.admin_call(move |mut c| {
            let request = request.clone();
            Box::pin(async move {
                let created = c.create_token(request).await?.into_inner();
                Ok((
                    created.token,
                    TokenInfo::from(created.info.unwrap_or_default()),
                ))
            })
        })
        .await
    }

    /// Every token, by id.
    pub async fn list_tokens(&self) -> Result<Vec<TokenInfo>> {
        self.admin_call(|mut c| {
            Box::pin(async move {
                let tokens = c.list_tokens(pb::ListTokensRequest {}).await?.into_inner();
                Ok(tokens.tokens.into_iter().map(TokenInfo::from).collect())
            })
        })
        .await
    }

    /// Revokes the token `id`: every node refuses it within seconds.
    pub async fn revoke_token(&self, id: &str) -> Result<()> {
        let request = pb::RevokeTokenRequest { id: id.to_owned() };
        self.admin_call(move |mut c| {
            let request = request.clone();
            Box::pin(async move {
                c.revoke_token(request).await?;
                Ok(())
            })
        })
        .await
    }
}
