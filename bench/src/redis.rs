//! Redis as a `dlog bench` peer: `XADD bench-<stream> * p <payload>`, a
//! pipeline per append, over a small pool of connections, through the
//! `redis` crate.
//!
//! Equal durability needs a server with `appendonly yes` and `appendfsync
//! always` (Redis fsyncs the AOF before it sends the replies of a write);
//! [`RedisTarget::check_durability`] verifies it, and
//! `scripts/bench-peers.sh start-redis` starts such a server.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use redis::aio::MultiplexedConnection;
use tokio::sync::Mutex;

/// An append that takes longer than this fails (and its connection is
/// replaced): a peer that hangs must not hang the benchmark.
const TIMEOUT: Duration = Duration::from_secs(60);

/// A Redis server under test: `connections` connections; the appends of a
/// stream go on the stream's connection.
#[derive(Debug)]
pub struct RedisTarget {
    addr: String,
    client: redis::Client,
    /// `None`: the connection failed and is opened again on next use.
    pool: Vec<Mutex<Option<MultiplexedConnection>>>,
}

impl RedisTarget {
    /// Opens `connections` (at least 1) connections to `addr` (`HOST:PORT`).
    pub async fn connect(addr: &str, connections: usize) -> anyhow::Result<RedisTarget> {
        let client = redis::Client::open(format!("redis://{addr}/"))
            .with_context(|| format!("redis address {addr}"))?;
        let mut pool = Vec::new();
        for _ in 0..connections.max(1) {
            pool.push(Mutex::new(Some(open(&client, addr).await?)));
        }
        Ok(RedisTarget {
            addr: addr.to_owned(),
            client,
            pool,
        })
    }

    /// Appends each payload to the stream `bench-<stream>` with one `XADD`,
    /// all in one pipeline. Fails when any reply is an error (e.g. the key
    /// holds another type).
    pub async fn append(&self, stream: usize, payloads: &[Bytes]) -> anyhow::Result<()> {
        let key = format!("bench-{stream}");
        let mut pipe = redis::pipe();
        for payload in payloads {
            pipe.cmd("XADD")
                .arg(&key)
                .arg("*")
                .arg("p")
                .arg(payload.as_ref());
        }
        let ids: Vec<String> = self
            .query(stream, |mut conn| async move {
                pipe.query_async(&mut conn).await
            })
            .await
            .with_context(|| format!("redis XADD {key}"))?;
        if ids.len() != payloads.len() {
            bail!(
                "redis XADD {key}: {} entry ids for {} payloads",
                ids.len(),
                payloads.len()
            );
        }
        Ok(())
    }

    /// Checks that an acknowledged write was fsynced (`appendonly yes`,
    /// `appendfsync always`) and says so in one line.
    pub async fn check_durability(&self) -> anyhow::Result<String> {
        let appendonly = self.config_get("appendonly").await?;
        let appendfsync = self.config_get("appendfsync").await?;
        if appendonly != "yes" || appendfsync != "always" {
            bail!(
                "redis is not at equal durability: appendonly {appendonly}, appendfsync \
                 {appendfsync} (want yes and always; scripts/bench-peers.sh start-redis)"
            );
        }
        let info: String = self
            .query(0, |mut conn| async move {
                redis::cmd("INFO")
                    .arg("server")
                    .query_async(&mut conn)
                    .await
            })
            .await
            .context("redis INFO server")?;
        let version = info
            .lines()
            .find_map(|line| line.strip_prefix("redis_version:"))
            .unwrap_or("(unknown version)")
            .trim();
        Ok(format!(
            "redis {version}: appendonly yes, appendfsync always (AOF fsync before the reply)"
        ))
    }

    /// `CONFIG GET name`: the value.
    async fn config_get(&self, name: &str) -> anyhow::Result<String> {
        let name = name.to_owned();
        let mut values: HashMap<String, String> = self
            .query(0, |mut conn| {
                let name = name.clone();
                async move {
                    redis::cmd("CONFIG")
                        .arg("GET")
                        .arg(name)
                        .query_async(&mut conn)
                        .await
                }
            })
            .await
            .with_context(|| format!("redis CONFIG GET {name}"))?;
        values
            .remove(&name)
            .with_context(|| format!("redis CONFIG GET {name}: no such parameter"))
    }

    /// Runs `query` on the stream's connection, within [`TIMEOUT`]. A
    /// connection that broke or timed out is dropped and opened again next
    /// time; an error reply leaves it in use.
    async fn query<T, F>(
        &self,
        stream: usize,
        query: impl FnOnce(MultiplexedConnection) -> F,
    ) -> anyhow::Result<T>
    where
        F: Future<Output = redis::RedisResult<T>>,
    {
        let mut slot = self.pool[stream % self.pool.len()].lock().await;
        let conn = match &*slot {
            Some(conn) => conn.clone(),
            None => slot.insert(open(&self.client, &self.addr).await?).clone(),
        };
        // The connection multiplexes: the next append need not wait.
        drop(slot);
        match tokio::time::timeout(TIMEOUT, query(conn)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => {
                if err.is_io_error() || err.is_connection_dropped() || err.is_timeout() {
                    *self.pool[stream % self.pool.len()].lock().await = None;
                }
                Err(err.into())
            }
            Err(_) => {
                *self.pool[stream % self.pool.len()].lock().await = None;
                bail!("redis at {}: no reply within {TIMEOUT:?}", self.addr)
            }
        }
    }
}

async fn open(client: &redis::Client, addr: &str) -> anyhow::Result<MultiplexedConnection> {
    client
        .get_multiplexed_async_connection()
        .await
        .with_context(|| format!("connect to redis at {addr}"))
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::path::Path;
    use std::process::Command;

    use dlog_testkit::{Process, free_port, require_binary, wait_for_port};

    use super::*;

    /// Starts redis-server as `scripts/bench-peers.sh start-redis` does,
    /// with `fsync` as appendfsync; `None` when it is not installed.
    fn start_redis(dir: &Path, fsync: &str) -> Option<(Process, SocketAddr)> {
        let binary = require_binary("redis-server", &[], "run scripts/bench-peers.sh install")?;
        let port = free_port();
        let mut command = Command::new(binary);
        command
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .arg("--dir")
            .arg(dir)
            .args(["--appendonly", "yes", "--appendfsync", fsync])
            .args(["--save", "", "--daemonize", "no"]);
        let log = dir.join("redis.log");
        let mut server = Process::spawn("redis-server", command, &log).unwrap();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        assert!(
            wait_for_port(addr, Duration::from_secs(15)) && server.is_running(),
            "redis-server did not start: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        Some((server, addr))
    }

    /// Against a real redis-server; skipped when it is not installed.
    #[tokio::test]
    async fn appends_pipelines_to_a_real_redis() {
        let dir = tempfile::tempdir().unwrap();
        let Some((_server, addr)) = start_redis(dir.path(), "always") else {
            return;
        };

        let target = RedisTarget::connect(&addr.to_string(), 2).await.unwrap();
        let durability = target.check_durability().await.unwrap();
        eprintln!("durability: {durability}");
        assert!(durability.contains("appendfsync always"), "{durability}");
        for batch in 0..10 {
            let payloads: Vec<Bytes> = (0..10)
                .map(|i| Bytes::from(format!("payload {batch}-{i}")))
                .collect();
            target.append(3, &payloads).await.unwrap();
        }
        let len: u64 = target
            .query(3, |mut conn| async move {
                redis::cmd("XLEN")
                    .arg("bench-3")
                    .query_async(&mut conn)
                    .await
            })
            .await
            .unwrap();
        assert_eq!(len, 100, "XLEN");

        // An error reply fails the append (XADD on a key of another type).
        let _: () = target
            .query(4, |mut conn| async move {
                redis::cmd("SET")
                    .arg("bench-4")
                    .arg("x")
                    .query_async(&mut conn)
                    .await
            })
            .await
            .unwrap();
        let err = target.append(4, &[Bytes::from_static(b"p")]).await;
        let err = format!("{:#}", err.unwrap_err());
        assert!(err.contains("WRONGTYPE"), "{err}");
        // ... and the connection still works afterwards.
        target.append(3, &[Bytes::from_static(b"p")]).await.unwrap();
    }

    /// A server without `appendfsync always` is refused.
    #[tokio::test]
    async fn refuses_a_server_without_fsync_always() {
        let dir = tempfile::tempdir().unwrap();
        let Some((_server, addr)) = start_redis(dir.path(), "everysec") else {
            return;
        };
        let target = RedisTarget::connect(&addr.to_string(), 1).await.unwrap();
        let err = target.check_durability().await.unwrap_err().to_string();
        assert!(err.contains("appendfsync everysec"), "{err}");
    }
}
