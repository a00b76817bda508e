//! `dlog sub list|get|commit|delete`: a log's subscriptions, the stored
//! positions of its consumers (served by reader nodes: `--read-endpoint`
//! in a cluster).

use distributedlog::Client;
use serde_json::json;

/// `dlog sub` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum SubCommand {
    /// Every subscription of a log and its committed offset.
    List {
        log: String,
        #[arg(long)]
        json: bool,
    },
    /// A subscription's committed offset (the next one its consumer reads).
    Get { log: String, subscription: String },
    /// Commit OFFSET (the next offset to read); a commit never moves back.
    Commit {
        log: String,
        subscription: String,
        offset: u64,
    },
    /// Forget a subscription.
    Delete { log: String, subscription: String },
}

pub async fn sub(client: &Client, command: SubCommand) -> anyhow::Result<()> {
    match command {
        SubCommand::List { log, json } => {
            let subscriptions = client.subscriptions(&log).await?;
            if json {
                let list: Vec<_> = subscriptions
                    .iter()
                    .map(|(name, offset)| json!({"subscription": name, "offset": offset}))
                    .collect();
                println!("{}", serde_json::Value::Array(list));
            } else {
                for (name, offset) in subscriptions {
                    println!("{name}\t{offset}");
                }
            }
        }
        SubCommand::Get { log, subscription } => {
            match client.subscription(&log, &subscription).await? {
                Some(offset) => println!("{offset}"),
                None => anyhow::bail!("log {log} has no subscription {subscription:?}"),
            }
        }
        SubCommand::Commit {
            log,
            subscription,
            offset,
        } => {
            client
                .commit_subscription(&log, &subscription, offset)
                .await?;
            let now = client.subscription(&log, &subscription).await?;
            println!("{}", now.unwrap_or(offset));
        }
        SubCommand::Delete { log, subscription } => {
            client.delete_subscription(&log, &subscription).await?;
            println!("deleted subscription {subscription} of {log}");
        }
    }
    Ok(())
}
