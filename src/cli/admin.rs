//! `dlog logs …`, `dlog seal`, `dlog trim`, `dlog status`.

use distributedlog::{Client, LogInfo};
use serde_json::json;

use super::LogsCommand;
use super::settings::print_settings;
use anyhow::{Context, bail};

/// The JSON of `dlog logs info --json` (a contract: docs/cli.md).
pub fn info_json(info: &LogInfo) -> serde_json::Value {
    json!({
        "log": info.log,
        "first_offset": info.first_offset,
        "next_offset": info.next_offset,
        "records": info.records,
        "end_of_stream": info.end_of_stream,
        "segments": info.segments.iter().map(|s| json!({
            "id": s.segment_id,
            "state": s.state.as_str(),
            "start_offset": s.start_offset,
            "end_offset": s.end_offset,
            "object": s.object,
        })).collect::<Vec<_>>(),
    })
}

pub async fn logs(client: &Client, command: LogsCommand) -> anyhow::Result<()> {
    match command {
        LogsCommand::Create { log, settings } => {
            // Checked before the log exists, so bad flags create nothing.
            let change = settings.change()?;
            let info = client.create_log(&log).await?;
            println!("created {} (log id {})", info.log, info.log_id);
            if !change.is_empty() {
                let settings = client.configure_log(&log, &change, false).await.with_context(|| {
                    format!("{log} was created, but its settings were refused (change them with dlog logs config)")
                })?;
                print_settings(&settings, false);
            }
        }
        LogsCommand::Config {
            log,
            settings,
            inherit,
            json,
        } => {
            let change = settings.change()?;
            if change.is_empty() && !inherit {
                bail!(
                    "nothing to change: give a setting or --inherit (see dlog logs config --help)"
                );
            }
            let settings = client.configure_log(&log, &change, inherit).await?;
            print_settings(&settings, json);
        }
        LogsCommand::Delete { log } => {
            client.delete_log(&log).await?;
            println!("deleted {log}");
        }
        LogsCommand::List { prefix } => {
            // Page by page, printed as they come: any number of logs in
            // bounded memory and answers.
            let prefix = prefix.as_deref().unwrap_or("");
            let mut token = String::new();
            loop {
                let page = client.list_logs_page(prefix, 0, &token).await?;
                for log in &page.logs {
                    println!("{log}");
                }
                match page.next_page_token {
                    Some(next) => token = next,
                    None => break,
                }
            }
        }
        LogsCommand::Info { log, json } => {
            let info = client.get_log(&log).await?;
            if json {
                println!("{}", info_json(&info));
            } else {
                println!("log:          {}", info.log);
                println!("first offset: {}", info.first_offset);
                println!("next offset:  {}", info.next_offset);
                println!("records:      {}", info.records);
                if info.end_of_stream {
                    println!("end of stream");
                }
                println!("segments:");
                for s in &info.segments {
                    let end = s.end_offset.map_or("-".to_owned(), |e| e.to_string());
                    println!(
                        "  {:>6}  {:<9}  [{}, {})  {} bytes  {}",
                        s.segment_id,
                        s.state.as_str(),
                        s.start_offset,
                        end,
                        s.bytes,
                        s.object.as_deref().unwrap_or("")
                    );
                }
            }
        }
    }
    Ok(())
}

pub async fn seal(client: &Client, log: &str) -> anyhow::Result<()> {
    let sealed = client.seal(log).await?;
    println!(
        "{}",
        json!({"segment_id": sealed.segment_id, "end_offset": sealed.end_offset})
    );
    Ok(())
}

pub async fn trim(client: &Client, log: &str, before: u64) -> anyhow::Result<()> {
    let first_offset = client.trim(log, before).await?;
    println!("{}", json!({ "first_offset": first_offset }));
    Ok(())
}

pub async fn status(client: &Client, as_json: bool) -> anyhow::Result<()> {
    let status = client.status().await?;
    // Each process once, however many roles it registered.
    let mut addresses: Vec<&str> = status.nodes.iter().map(|n| n.address.as_str()).collect();
    addresses.sort();
    addresses.dedup();
    let checks = futures::future::join_all(addresses.iter().map(|a| node_health(client, a))).await;
    let health = |address: &str| {
        addresses
            .iter()
            .position(|a| *a == address)
            .map_or("unknown", |i| checks[i])
    };
    if as_json {
        let value = json!({
            "nodes": status.nodes.iter().map(|n| json!({
                "role": n.role, "id": n.id, "address": n.address,
                "health": health(&n.address),
            })).collect::<Vec<_>>(),
            "logs": status.logs,
            "segments": {
                "open": status.open_segments,
                "sealed": status.sealed_segments,
                "offloaded": status.offloaded_segments,
            },
            "offload_lag_bytes": status.offload_lag_bytes,
        });
        println!("{value}");
    } else {
        println!("nodes:");
        for n in &status.nodes {
            println!(
                "  {:<9} {:<24} {:<28} {}",
                n.role,
                n.id,
                n.address,
                health(&n.address)
            );
        }
        println!("logs: {}", status.logs);
        println!(
            "segments: {} open, {} sealed, {} offloaded",
            status.open_segments, status.sealed_segments, status.offloaded_segments
        );
        println!("offload lag: {} bytes", status.offload_lag_bytes);
    }
    Ok(())
}

/// A node's overall gRPC health (`grpc.health.v1`, service `""`):
/// `serving`, `not_serving` (draining), or `unreachable` when it does not
/// answer within 2 s.
async fn node_health(client: &Client, address: &str) -> &'static str {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;

    let check = async {
        let channel = client.node_channel(address).ok()?;
        let response = HealthClient::new(channel)
            .check(HealthCheckRequest::default())
            .await
            .ok()?;
        Some(response.into_inner().status)
    };
    match tokio::time::timeout(std::time::Duration::from_secs(2), check).await {
        Ok(Some(status)) if status == ServingStatus::Serving as i32 => "serving",
        Ok(Some(_)) => "not_serving",
        _ => "unreachable",
    }
}
