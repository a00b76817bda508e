//! What `dlog bench` appends to: distributedlog or a peer.

use anyhow::{Context, bail};
use bytes::Bytes;

use super::nats::NatsTarget;
use super::redis::RedisTarget;
use super::{BenchArgs, log_name};
use distributedlog::{Client, Record};

/// A system under test.
pub enum Target {
    Dlog { client: Client, logs: Vec<String> },
    Redis(RedisTarget),
    Nats(NatsTarget),
    Etcd(Box<etcd_client::Client>),
}

impl Target {
    /// Connects (for dlog: creates the bench logs when missing).
    pub async fn connect(url: &str, client: &Client, args: &BenchArgs) -> anyhow::Result<Target> {
        let connections = args.logs.clamp(1, 16);
        if url == "dlog" {
            let logs: Vec<String> = (0..args.logs).map(|i| log_name(args, i)).collect();
            if args.workload != super::Workload::Read {
                for log in &logs {
                    match client.create_log(log).await {
                        Ok(_) => {}
                        Err(err) if err.code() == tonic::Code::AlreadyExists => {}
                        Err(err) => return Err(err).with_context(|| format!("create {log}")),
                    }
                }
            }
            return Ok(Target::Dlog {
                client: client.clone(),
                logs,
            });
        }
        if let Some(addr) = url.strip_prefix("redis://") {
            return Ok(Target::Redis(
                RedisTarget::connect(addr, connections).await?,
            ));
        }
        if let Some(addr) = url.strip_prefix("nats://") {
            return Ok(Target::Nats(NatsTarget::connect(addr, connections).await?));
        }
        if let Some(addr) = url.strip_prefix("etcd://") {
            let client = etcd_client::Client::connect([addr], None)
                .await
                .with_context(|| format!("connect to etcd at {addr}"))?;
            return Ok(Target::Etcd(Box::new(client)));
        }
        bail!(
            "unknown --target {url:?}: expected dlog, redis://HOST:PORT, nats://HOST:PORT or etcd://HOST:PORT"
        )
    }

    /// One line on how durable an acknowledged append is.
    pub async fn durability(&self) -> anyhow::Result<String> {
        match self {
            Target::Dlog { .. } => Ok("fdatasync on the ack quorum before the ack".to_owned()),
            Target::Redis(redis) => redis.check_durability().await,
            Target::Nats(nats) => nats.check_durability().await,
            Target::Etcd(_) => Ok("etcd: WAL fsync before the commit".to_owned()),
        }
    }

    /// Appends `payloads` to stream `log` as one append (one pipeline).
    pub async fn append(&self, log: usize, payloads: Vec<Bytes>) -> anyhow::Result<()> {
        match self {
            Target::Dlog { client, logs } => {
                let records = payloads.into_iter().map(Record::new).collect();
                client.append(&logs[log], records, None).await?;
                Ok(())
            }
            Target::Redis(redis) => redis.append(log, &payloads).await,
            Target::Nats(nats) => nats.append(log, &payloads).await,
            Target::Etcd(client) => {
                let puts = payloads.into_iter().enumerate().map(|(i, payload)| {
                    let mut kv = client.kv_client();
                    async move {
                        let key = format!("bench/{log}/{}-{i}", super::now_micros());
                        kv.put(key, payload.to_vec(), None).await
                    }
                });
                futures::future::try_join_all(puts).await?;
                Ok(())
            }
        }
    }
}
