//! Redis as a `dlog bench` peer: `XADD bench-<stream> * p <payload>`, a
//! pipeline per append, over a small pool of connections.
//!
//! The RESP protocol is small enough to speak by hand (commands are arrays
//! of bulk strings; replies are one of five types), which keeps the `redis`
//! crate out of the build. Equal durability needs a server with
//! `appendonly yes` and `appendfsync always` (Redis fsyncs the AOF before it
//! sends the replies of a write); [`RedisTarget::check_durability`] verifies
//! it, and `scripts/bench-peers.sh start-redis` starts such a server.

use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{Mutex, MutexGuard};

/// An append that takes longer than this fails (and its connection is
/// replaced): a peer that hangs must not hang the benchmark.
const TIMEOUT: Duration = Duration::from_secs(60);

/// A Redis server under test: `connections` connections, each carrying one
/// pipeline at a time.
#[derive(Debug)]
pub struct RedisTarget {
    addr: String,
    /// `None`: the connection failed and is opened again on next use.
    pool: Vec<Mutex<Option<Conn>>>,
}

impl RedisTarget {
    /// Opens `connections` (at least 1) connections to `addr` (`HOST:PORT`).
    pub async fn connect(addr: &str, connections: usize) -> anyhow::Result<RedisTarget> {
        let mut pool = Vec::new();
        for _ in 0..connections.max(1) {
            pool.push(Mutex::new(Some(Conn::open(addr).await?)));
        }
        Ok(RedisTarget {
            addr: addr.to_owned(),
            pool,
        })
    }

    /// Appends each payload to the stream `bench-<stream>` with one `XADD`,
    /// all in one pipeline: every command is written, then every reply read.
    /// Fails when any reply is not an entry id (e.g. an error reply).
    pub async fn append(&self, stream: usize, payloads: &[Bytes]) -> anyhow::Result<()> {
        let key = format!("bench-{stream}");
        let commands: Vec<Vec<&[u8]>> = payloads
            .iter()
            .map(|p| vec![&b"XADD"[..], key.as_bytes(), b"*", b"p", p])
            .collect();
        let replies = self.pipeline(stream, &commands).await?;
        for reply in replies {
            match reply {
                Reply::Bulk(Some(_)) => {}
                Reply::Error(message) => bail!("redis XADD {key}: {message}"),
                other => bail!("redis XADD {key}: expected an entry id, got {other:?}"),
            }
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
        let info = match self.command(&[b"INFO", b"server"]).await? {
            Reply::Bulk(Some(info)) => String::from_utf8_lossy(&info).into_owned(),
            other => bail!("redis INFO server: unexpected reply {other:?}"),
        };
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
        match self.command(&[b"CONFIG", b"GET", name.as_bytes()]).await? {
            Reply::Array(Some(items)) => match items.as_slice() {
                [_, Reply::Bulk(Some(value))] => Ok(String::from_utf8_lossy(value).into_owned()),
                _ => bail!("redis CONFIG GET {name}: unexpected reply {items:?}"),
            },
            Reply::Error(message) => bail!("redis CONFIG GET {name}: {message}"),
            other => bail!("redis CONFIG GET {name}: unexpected reply {other:?}"),
        }
    }

    /// One command on the first connection; its reply (an error reply too).
    async fn command(&self, args: &[&[u8]]) -> anyhow::Result<Reply> {
        let mut replies = self.pipeline(0, &[args.to_vec()]).await?;
        Ok(replies.remove(0))
    }

    /// Sends `commands` in one pipeline on a connection (the stream's own
    /// when it is free, else any free one, else waits for the stream's) and
    /// returns their replies in order. On an I/O or protocol error, or after
    /// [`TIMEOUT`], the connection is dropped and opened again next time.
    async fn pipeline(&self, stream: usize, commands: &[Vec<&[u8]>]) -> anyhow::Result<Vec<Reply>> {
        let mut slot = self.slot(stream).await;
        if slot.is_none() {
            *slot = Some(Conn::open(&self.addr).await?);
        }
        let conn = slot.as_mut().expect("opened above");
        let result = tokio::time::timeout(TIMEOUT, conn.pipeline(commands)).await;
        match result {
            Ok(Ok(replies)) => Ok(replies),
            Ok(Err(err)) => {
                *slot = None;
                Err(err)
            }
            Err(_) => {
                *slot = None;
                bail!("redis at {}: no reply within {TIMEOUT:?}", self.addr)
            }
        }
    }

    async fn slot(&self, stream: usize) -> MutexGuard<'_, Option<Conn>> {
        let n = self.pool.len();
        for i in 0..n {
            if let Ok(slot) = self.pool[(stream + i) % n].try_lock() {
                return slot;
            }
        }
        self.pool[stream % n].lock().await
    }
}

/// A RESP reply.
#[derive(Debug)]
#[allow(
    dead_code,
    reason = "the values of unexpected replies show in errors, via Debug"
)]
enum Reply {
    Simple(String),
    Error(String),
    Integer(i64),
    /// `None`: the null bulk string.
    Bulk(Option<Vec<u8>>),
    /// `None`: the null array.
    Array(Option<Vec<Reply>>),
}

#[derive(Debug)]
struct Conn {
    reader: BufReader<OwnedReadHalf>,
    writer: BufWriter<OwnedWriteHalf>,
}

impl Conn {
    async fn open(addr: &str) -> anyhow::Result<Conn> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connect to redis at {addr}"))?;
        stream.set_nodelay(true)?;
        let (read, write) = stream.into_split();
        Ok(Conn {
            reader: BufReader::new(read),
            writer: BufWriter::new(write),
        })
    }

    async fn pipeline(&mut self, commands: &[Vec<&[u8]>]) -> anyhow::Result<Vec<Reply>> {
        for args in commands {
            self.writer
                .write_all(format!("*{}\r\n", args.len()).as_bytes())
                .await?;
            for arg in args {
                self.writer
                    .write_all(format!("${}\r\n", arg.len()).as_bytes())
                    .await?;
                self.writer.write_all(arg).await?;
                self.writer.write_all(b"\r\n").await?;
            }
        }
        self.writer.flush().await?;
        let mut replies = Vec::with_capacity(commands.len());
        for _ in commands {
            replies.push(self.read_reply().await?);
        }
        Ok(replies)
    }

    async fn read_reply(&mut self) -> anyhow::Result<Reply> {
        let mut line = String::new();
        if self.reader.read_line(&mut line).await? == 0 {
            bail!("redis closed the connection");
        }
        let line = line
            .strip_suffix("\r\n")
            .with_context(|| format!("redis: unterminated reply line {line:?}"))?;
        let (kind, rest) = line
            .split_at_checked(1)
            .context("redis: empty reply line")?;
        let length = || -> anyhow::Result<i64> {
            rest.parse()
                .with_context(|| format!("redis: bad length in {line:?}"))
        };
        Ok(match kind {
            "+" => Reply::Simple(rest.to_owned()),
            "-" => Reply::Error(rest.to_owned()),
            ":" => Reply::Integer(length()?),
            "$" => match usize::try_from(length()?) {
                Err(_) => Reply::Bulk(None),
                Ok(len) => {
                    let mut data = vec![0; len + 2];
                    self.reader.read_exact(&mut data).await?;
                    if !data.ends_with(b"\r\n") {
                        bail!("redis: bulk string of {len} bytes not followed by CRLF");
                    }
                    data.truncate(len);
                    Reply::Bulk(Some(data))
                }
            },
            "*" => match usize::try_from(length()?) {
                Err(_) => Reply::Array(None),
                Ok(len) => {
                    let mut items = Vec::with_capacity(len);
                    for _ in 0..len {
                        items.push(Box::pin(self.read_reply()).await?);
                    }
                    Reply::Array(Some(items))
                }
            },
            _ => bail!("redis: unknown reply type in {line:?}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::path::Path;
    use std::process::Command;

    use dlog_infra::testkit::{Process, free_port, require_binary, wait_for_port};

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
        let len = target.command(&[b"XLEN", b"bench-3"]).await.unwrap();
        assert!(matches!(len, Reply::Integer(100)), "XLEN: {len:?}");

        // An error reply fails the append (XADD on a key of another type).
        target.command(&[b"SET", b"bench-4", b"x"]).await.unwrap();
        let err = target.append(4, &[Bytes::from_static(b"p")]).await;
        assert!(err.unwrap_err().to_string().contains("WRONGTYPE"));
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
