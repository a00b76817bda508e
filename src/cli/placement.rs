//! `dlog placement show|move`: where logs are owned (balanced ownership),
//! through `AdminService`.

use distributedlog::{Client, Placement};
use serde_json::json;

/// `dlog placement` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum PlacementCommand {
    /// Logs owned per live ingest node, and the logs moved by hand.
    Show {
        #[arg(long)]
        json: bool,
    },
    /// Move a log to an ingest node by hand (its owner hands it over), or
    /// back to the placement rule with --auto.
    Move {
        log: String,
        /// The ingest node's id.
        #[arg(required_unless_present = "auto")]
        node: Option<String>,
        /// Back to the placement rule.
        #[arg(long, conflicts_with = "node")]
        auto: bool,
    },
}

/// The JSON of `dlog placement show --json` (docs/cli.md).
fn placement_json(placement: &Placement) -> serde_json::Value {
    json!({
        "nodes": placement.nodes.iter().map(|n| json!({
            "id": n.id,
            "address": n.address,
            "zone": n.zone,
            "owned": n.owned,
            "misplaced": n.misplaced,
        })).collect::<Vec<_>>(),
        "moved": placement.moved.iter().map(|m| json!({
            "log": m.log,
            "node": m.node,
            "owner": m.owner,
        })).collect::<Vec<_>>(),
        "owned_elsewhere": placement.owned_elsewhere,
    })
}

pub async fn placement(client: &Client, command: PlacementCommand) -> anyhow::Result<()> {
    match command {
        PlacementCommand::Show { json } => {
            let placement = client.placement().await?;
            if json {
                println!("{}", placement_json(&placement));
                return Ok(());
            }
            let total: u64 = placement.nodes.iter().map(|n| n.owned).sum();
            println!(
                "{:<24} {:<10} {:>8} {:>6} {:>10}",
                "NODE", "ZONE", "OWNED", "SHARE", "MISPLACED"
            );
            for node in &placement.nodes {
                let share = if total == 0 {
                    0.0
                } else {
                    100.0 * node.owned as f64 / total as f64
                };
                let zone = if node.zone.is_empty() {
                    "-"
                } else {
                    &node.zone
                };
                println!(
                    "{:<24} {:<10} {:>8} {:>5.1}% {:>10}",
                    node.id, zone, node.owned, share, node.misplaced
                );
            }
            if placement.owned_elsewhere > 0 {
                println!(
                    "{} logs are owned by nodes no longer registered (until their lease ends)",
                    placement.owned_elsewhere
                );
            }
            for moved in &placement.moved {
                let owner = if moved.owner.is_empty() {
                    "none"
                } else {
                    &moved.owner
                };
                println!(
                    "moved by hand: {} -> {} (owner now: {owner})",
                    moved.log, moved.node
                );
            }
        }
        PlacementCommand::Move { log, node, auto } => {
            let node = if auto { None } else { node };
            let preferred = client.move_log(&log, node.as_deref()).await?;
            match node {
                Some(node) => println!("moved {log} to {node}; its owner hands it over"),
                None => {
                    println!("{log} follows the placement rule again: {preferred} should own it")
                }
            }
        }
    }
    Ok(())
}
