//! Command-line surface of `dlog`. The flags are a contract (docs/cli.md):
//! scripts depend on them, so they change only compatibly.

use std::path::PathBuf;

mod admin;
mod append;
mod placement;
mod progress;
mod read;
mod settings;
mod sub;
mod tokens;

use crate::config::{self, NodeConfig};
use crate::server::{ServeOptions, cancel_on_signals, serve, standalone};
use anyhow::{Context, bail};
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
    /// Client token (`dlog_<id>_<secret>`) for clusters that require one.
    /// Prefer DLOG_TOKEN or --token-file: a flag shows in `ps`.
    #[arg(long, global = true, env = "DLOG_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A file holding the client token (such as a node's root-token file).
    #[arg(long, global = true, conflicts_with = "token")]
    pub token_file: Option<PathBuf>,
    /// The cluster CA (PEM): clients check `https://` nodes against it;
    /// for `serve` and `standalone` it is the setting tls.ca.
    #[arg(long, global = true, env = "DLOG_TLS__CA")]
    pub tls_ca: Option<PathBuf>,
    /// Check node certificates against this name instead of the host of
    /// each endpoint (the setting tls.server_name).
    #[arg(long, global = true, env = "DLOG_TLS__SERVER_NAME")]
    pub tls_server_name: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// All roles in one process: embedded metastore, one cache node, file object store.
    Standalone {
        /// State directory [default: ./dlog-data].
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// gRPC address [default: 127.0.0.1:7070].
        #[arg(long)]
        listen: Option<String>,
        /// Serve Prometheus metrics on HOST:PORT (GET /metrics); off if not given.
        #[arg(long)]
        metrics_listen: Option<String>,
        /// Serve Kafka clients on HOST:PORT, or `off` [default: 127.0.0.1:9092].
        #[arg(long)]
        kafka_listen: Option<String>,
        #[command(flatten)]
        settings: SettingsFile,
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
        /// The node's availability zone (the setting zone): ensembles spread
        /// over the cache nodes' zones, readers prefer replicas in their own.
        #[arg(long)]
        zone: Option<String>,
        /// Serve Kafka clients on HOST:PORT (nodes with the reader role); off if not given.
        #[arg(long)]
        kafka_listen: Option<String>,
        #[command(flatten)]
        settings: SettingsFile,
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
    /// Client tokens: create, list, revoke (needs an admin token).
    Token {
        #[command(subcommand)]
        command: tokens::TokenCommand,
    },
    /// Where logs are owned: logs per ingest node; move a log by hand (needs admin).
    Placement {
        #[command(subcommand)]
        command: placement::PlacementCommand,
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
        /// (`payload`, `key`, `headers`, `txid`, `producer_time`; `dlog read --json` output).
        #[arg(long, value_enum, default_value = "text")]
        format: append::LineFormat,
        /// Add the header NAME=VALUE to every record; repeat for more. Kept in the order
        /// given (a name may repeat), after the headers of a JSON line.
        #[arg(long = "header", value_name = "NAME=VALUE", value_parser = append::parse_header)]
        headers: Vec<(String, bytes::Bytes)>,
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
        zone,
        kafka_listen,
        settings,
    } = args.command
    {
        let mut flags = Flags::default();
        if !roles.is_empty() {
            flags.set("roles", roles);
        }
        flags.set_some("metastore", metastore);
        flags.set_some("object_store", object_store);
        flags.set_some("listen", listen);
        flags.set_some("data_dir", data_dir);
        flags.set_some("node_id", node_id);
        flags.set_some("metrics_listen", metrics_listen);
        if reinit_cache {
            flags.set("reinit_cache", true);
        }
        flags.set_some("zone", zone);
        flags.set_some("kafka.listen", kafka_listen);
        settings.flags(&mut flags);
        flags.set_some("tls.ca", args.tls_ca.clone());
        flags.set_some("tls.server_name", args.tls_server_name.clone());
        let config = config::load(NodeConfig::default(), settings.config.as_deref(), &flags.0)?;
        if settings.print_config {
            print!("{}", config.to_toml()?);
            return Ok(());
        }
        let shutdown = CancellationToken::new();
        cancel_on_signals(shutdown.clone());
        let options = ServeOptions {
            config,
            single_node: false,
        };
        return serve(options, shutdown).await;
    }
    if let Command::Standalone {
        data_dir,
        listen,
        metrics_listen,
        kafka_listen,
        settings,
    } = args.command
    {
        let mut flags = Flags::default();
        flags.set_some("data_dir", data_dir);
        flags.set_some("listen", listen);
        flags.set_some("metrics_listen", metrics_listen);
        flags.set_some("kafka.listen", kafka_listen);
        settings.flags(&mut flags);
        flags.set_some("tls.ca", args.tls_ca.clone());
        flags.set_some("tls.server_name", args.tls_server_name.clone());
        let defaults = NodeConfig {
            data_dir: Some(PathBuf::from("./dlog-data")),
            listen: Some("127.0.0.1:7070".to_owned()),
            kafka: config::KafkaSection {
                listen: Some("127.0.0.1:9092".to_owned()),
                ..config::KafkaSection::default()
            },
            ..NodeConfig::default()
        };
        let config = config::load(defaults, settings.config.as_deref(), &flags.0)?;
        if !config.roles.is_empty()
            || config.metastore.is_some()
            || config.object_store.is_some()
            || config.node_id.is_some()
        {
            bail!(
                "dlog standalone sets roles, metastore, object_store and node_id itself; \
                 remove them from its settings (or run dlog serve)"
            );
        }
        if settings.print_config {
            print!("{}", config.to_toml()?);
            return Ok(());
        }
        let shutdown = CancellationToken::new();
        cancel_on_signals(shutdown.clone());
        return standalone(config, shutdown).await;
    }
    let mut client = Client::new(&args.endpoint);
    let token = match &args.token_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("read --token-file {}", path.display()))?,
        ),
        None => args.token.clone(),
    };
    if let Some(token) = &token {
        client = client.with_token(token)?;
    }
    if let Some(path) = &args.tls_ca {
        let ca =
            std::fs::read(path).with_context(|| format!("read --tls-ca {}", path.display()))?;
        client = client.with_tls(ca);
        if let Some(name) = &args.tls_server_name {
            client = client.with_tls_server_name(name);
        }
    }
    if let Some(read_endpoint) = &args.read_endpoint {
        client = client.with_read_endpoints(read_endpoint);
    }
    match args.command {
        Command::Logs { command } => admin::logs(&client, command).await,
        Command::Ns { command } => settings::ns(&client, command).await,
        Command::Token { command } => tokens::token(&client, command).await,
        Command::Placement { command } => placement::placement(&client, command).await,
        Command::Sub { command } => sub::sub(&client, command).await,
        Command::Append {
            log,
            expected_offset,
            txid_from_field,
            format,
            headers,
        } => {
            let headers = headers.into_iter().collect();
            append::append(
                &client,
                &log,
                expected_offset,
                txid_from_field,
                format,
                &headers,
            )
            .await
        }
        Command::Seal { log } => admin::seal(&client, &log).await,
        Command::Trim { log, before } => admin::trim(&client, &log, before).await,
        Command::Status { json } => admin::status(&client, json).await,
        Command::Standalone { .. } => unreachable!("handled above"),
        Command::Read(args) => read::read(&client, args).await,
        Command::Bench(bench) => dlog_bench::run(client, bench).await,
        Command::Serve { .. } => unreachable!("handled above"),
    }
}

/// `--config` and `--print-config` of the node commands.
#[derive(Debug, clap::Args)]
pub struct SettingsFile {
    /// TOML settings file (docs/configuration.md); the environment
    /// (`DLOG_<KEY>`, `DLOG_<SECTION>__<KEY>`) and flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Print the effective settings as TOML and exit.
    #[arg(long)]
    print_config: bool,
    /// Require client tokens (auth.tokens; docs/configuration.md).
    #[arg(long)]
    auth_tokens: bool,
    /// The node's certificate chain, PEM (tls.cert; with --tls-key and
    /// --tls-ca the node serves TLS only).
    #[arg(long)]
    tls_cert: Option<PathBuf>,
    /// The key of --tls-cert, PEM (tls.key).
    #[arg(long)]
    tls_key: Option<PathBuf>,
}

impl SettingsFile {
    /// The flags of this group that are settings.
    fn flags(&self, flags: &mut Flags) {
        if self.auth_tokens {
            flags.set("auth.tokens", true);
        }
        flags.set_some("tls.cert", self.tls_cert.clone());
        flags.set_some("tls.key", self.tls_key.clone());
    }
}

/// The flags given, as the top layer of the settings.
#[derive(Debug, Default)]
struct Flags(Vec<(&'static str, figment::value::Value)>);

impl Flags {
    fn set(&mut self, key: &'static str, value: impl serde::Serialize) {
        // Plain strings, paths, lists and booleans always convert.
        if let Ok(value) = figment::value::Value::serialize(value) {
            self.0.push((key, value));
        }
    }

    fn set_some(&mut self, key: &'static str, value: Option<impl serde::Serialize>) {
        if let Some(value) = value {
            self.set(key, value);
        }
    }
}
