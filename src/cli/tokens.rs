//! `dlog token create|list|revoke`: client tokens through `AdminService`.

use distributedlog::{Client, TokenInfo};
use serde_json::json;

/// `dlog token` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum TokenCommand {
    /// Create a token; prints it once (it is not stored, only its hash).
    Create {
        /// Logs it reaches: full names starting with this (`ns-a/`: the
        /// logs of namespace ns-a); empty for everything.
        #[arg(long, default_value = "")]
        prefix: String,
        /// Operations, comma-separated: append, read, trim, admin.
        #[arg(long, value_delimiter = ',', required = true)]
        ops: Vec<String>,
        #[arg(long, default_value = "")]
        description: String,
        #[arg(long)]
        json: bool,
    },
    /// Every token (ids and scopes, never secrets).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by id: every node refuses it within seconds.
    Revoke { id: String },
}

fn info_json(info: &TokenInfo) -> serde_json::Value {
    json!({
        "id": info.id,
        "prefix": info.prefix,
        "ops": info.ops,
        "description": info.description,
        "created_at_ms": info.created_at_ms,
    })
}

pub async fn token(client: &Client, command: TokenCommand) -> anyhow::Result<()> {
    match command {
        TokenCommand::Create {
            prefix,
            ops,
            description,
            json,
        } => {
            let ops: Vec<&str> = ops.iter().map(|op| op.trim()).collect();
            let (token, info) = client.create_token(&prefix, &ops, &description).await?;
            if json {
                let mut value = info_json(&info);
                value["token"] = json!(token);
                println!("{value}");
            } else {
                println!("{token}");
            }
        }
        TokenCommand::List { json } => {
            for info in client.list_tokens().await? {
                if json {
                    println!("{}", info_json(&info));
                } else {
                    // The description is anyone's text: quoted and escaped.
                    println!(
                        "{:<14} {:<24} {:<24} {:?}",
                        info.id,
                        format!("{:?}", info.prefix),
                        info.ops.join(","),
                        info.description
                    );
                }
            }
        }
        TokenCommand::Revoke { id } => {
            client.revoke_token(&id).await?;
            println!("revoked {id}");
        }
    }
    Ok(())
}
