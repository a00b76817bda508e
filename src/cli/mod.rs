//! Command-line surface of `dlog`. The flags are a contract (docs/cli.md):
//! scripts depend on them, so they change only compatibly.

use std::path::PathBuf;

mod admin;
mod append;
mod read;
mod settings;
mod sub;

use crate::server::{ServeOptions, cancel_on_signals, serve, standalone};
use clap::{Parser, Subcommand};
use distributedlog::Client;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
#[command(
    name = "dlog",
    version,
    about = "distributedlog: a replicated log tiered on object storage"
)]
pub struct Args {
    /// Endpoint(s) of nodes serving the public API, comma-separated.
    #[arg(
        long,
        global = true,
        env = "DLOG_ENDPOINT",
        default_value = "http://127.0.0.1:7070"
    )]
    pub endpoint: String,
    /// Endpoint(s) of reader nodes, for `read` (and the reads of `bench`).
    /// Default: the --endpoint. In a cluster ingest nodes serve writes and
    /// reader nodes serve reads, so give both.
    #[arg(long, global = true, env = "DLOG_READ_ENDPOINT")]
    pub read_endpoint: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// All roles in one process: embedded metastore, one cache node, file object store.
    Standalone {
        #[arg(long, default_value = "./dlog-data")]
        data_dir: PathBuf,
        #[arg(long, default_value = "127.0.0.1:7070")]
        listen: String,
        /// Serve Prometheus metrics on HOST:PORT (GET /metrics); off if not given.
        #[arg(long)]
        metrics_listen: Option<String>,
    },
    /// Run one or more roles of a cluster.
    Serve {
        /// Comma-separated: ingest, cache, compactor, reader.
        #[arg(long, value_delimiter = ',')]
        roles: Vec<String>,
        /// etcd://HOST:PORT[,HOST:PORT..][/CLUSTER] or embedded://DIR.
        #[arg(long)]
        metastore: Option<String>,
        /// s3://BUCKET[/PREFIX], file:///DIR or memory://.
        #[arg(long)]
        object_store: Option<String>,
        #[arg(long)]
        listen: Option<String>,
        #[arg(long)]
        data_dir: Option<PathBuf>,
        #[arg(long)]
        node_id: Option<String>,
        /// Serve Prometheus metrics on HOST:PORT (GET /metrics); off if not given.
        #[arg(long)]
        metrics_listen: Option<String>,
        /// Cache role: rejoin under a registered --node-id whose data is
        /// gone (an empty --data-dir). The node then never answers for
        /// segments created before this start.
        #[arg(long)]
        reinit_cache: bool,
        /// TOML file with the same keys; flags win.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Create, delete, list and inspect logs; change a log's own settings.
    Logs {
        #[command(subcommand)]
        command: LogsCommand,
    },
    /// Subscriptions: consumers' stored positions in a log.
    Sub {
        #[command(subcommand)]
        command: sub::SubCommand,
    },
    /// Namespaces: settings (retention, roll policy, replication, quota) for their logs.
    Ns {
        #[command(subcommand)]
        command: settings::NsCommand,
    },
    /// Append one record per stdin line.
    Append {
        log: String,
        #[arg(long)]
        expected_offset: Option<u64>,
        /// Take each record's txid from its "txid" JSON field.
        #[arg(long, conflicts_with = "format")]
        txid_from_field: bool,
        /// `text`: each line is a payload; `json`: each line is a record
        /// (`payload`, `key`, `headers`, `txid`; `dlog read --json` output).
        #[arg(long, value_enum, default_value = "text")]
        format: append::LineFormat,
    },
    /// Read records: payloads one per line, from the earliest record unless told otherwise.
    Read(read::ReadArgs),
    /// Delete records below an offset.
    Trim {
        log: String,
        #[arg(long)]
        before: u64,
    },
    /// Force-roll the open segment.
    Seal { log: String },
    /// Load generator with latency histograms (durable appends, tailing, reads; peers too).
    Bench(dlog_bench::BenchArgs),
    /// Nodes, logs and segments by state.
    Status {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum LogsCommand {
    /// Create a log; settings flags give it settings of its own.
    Create {
        log: String,
        #[command(flatten)]
        settings: settings::SettingsArgs,
    },
    /// Change a log's own settings (only the flags given), or with
    /// --inherit go back to its namespace's; applied at once.
    Config {
        log: String,
        #[command(flatten)]
        settings: settings::SettingsArgs,
        #[arg(long, conflicts_with_all = ["retention", "retention_bytes", "roll_bytes", "roll_records", "roll_age", "replication", "quota_bytes_per_sec"])]
        inherit: bool,
        /// Print the settings in force as JSON.
        #[arg(long)]
        json: bool,
    },
    Delete {
        log: String,
    },
    List {
        prefix: Option<String>,
    },
    Info {
        log: String,
        #[arg(long)]
        json: bool,
    },
}

/// Runs a parsed command.
pub async fn run(args: Args) -> anyhow::Result<()> {
    if let Command::Serve {
        roles,
        metastore,
        object_store,
        listen,
        data_dir,
        node_id,
        metrics_listen,
        reinit_cache,
        config,
    } = args.command
    {
        let flags = ServeOptions {
            roles,
            metastore,
            object_store,
            listen,
            data_dir,
            node_id,
            metrics_listen,
            reinit_cache,
            single_node: false,
        };
        let options = match config {
            Some(path) => flags.or(ServeOptions::from_file(&path)?),
            None => flags,
        };
        let shutdown = CancellationToken::new();
        cancel_on_signals(shutdown.clone());
        return serve(options, shutdown).await;
    }
    if let Command::Standalone {
        data_dir,
        listen,
        metrics_listen,
    } = &args.command
    {
        let shutdown = CancellationToken::new();
        cancel_on_signals(shutdown.clone());
        return standalone(data_dir, listen, metrics_listen.clone(), shutdown).await;
    }
    let mut client = Client::new(&args.endpoint);
    if let Some(read_endpoint) = &args.read_endpoint {
        client = client.with_read_endpoints(read_endpoint);
    }
    match args.command {
        Command::Logs { command } => admin::logs(&client, command).await,
        Command::Ns { command } => settings::ns(&client, command).await,
        Command::Sub { command } => sub::sub(&client, command).await,
        Command::Append {
            log,
            expected_offset,
            txid_from_field,
            format,
        } => append::append(&client, &log, expected_offset, txid_from_field, format).await,
        Command::Seal { log } => admin::seal(&client, &log).await,
        Command::Trim { log, before } => admin::trim(&client, &log, before).await,
        Command::Status { json } => admin::status(&client, json).await,
        Command::Standalone { .. } => unreachable!("handled above"),
        Command::Read(args) => read::read(&client, args).await,
        Command::Bench(bench) => dlog_bench::run(client, bench).await,
        Command::Serve { .. } => unreachable!("handled above"),
    }
}
