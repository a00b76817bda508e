//! `dlog append`: one record per stdin line, sent as sequential unary
//! `Append` calls of up to 1 000 records or 1 MiB each (the next batch goes
//! once the previous one is acknowledged); prints
//! `{"first_offset","last_offset","count"}`.
//!
//! Retries: the client retries a batch after a transient failure (timeout,
//! lost connection, owner change). Without `--expected-offset` such a retry
//! can write the batch twice, if the first attempt landed before the
//! failure (at least once). With `--expected-offset N`, every batch carries
//! the offset it must land at, so a batch is written at most once: a retry
//! of a batch that did land fails with `FAILED_PRECONDITION` naming the
//! log's actual next offset, and the command exits non-zero.

use std::io::BufRead;

use anyhow::{Context, bail};
use bytes::Bytes;
use distributedlog::Client;
use dlog_wire::record::Record;
use serde_json::json;

/// Records per append request.
const BATCH_RECORDS: usize = 1000;
/// Bytes per append request (under the 4 MiB limit).
const BATCH_BYTES: usize = 1024 * 1024;

fn txid_of(line: &str, number: usize) -> anyhow::Result<i64> {
    let value: serde_json::Value = serde_json::from_str(line).with_context(|| {
        format!("line {number}: --txid-from-field needs a JSON object per line")
    })?;
    match value.get("txid").and_then(serde_json::Value::as_i64) {
        Some(txid) => Ok(txid),
        None => bail!("line {number}: no integer \"txid\" field"),
    }
}

pub async fn append(
    client: &Client,
    log: &str,
    expected_offset: Option<u64>,
    txid_from_field: bool,
) -> anyhow::Result<()> {
    let stdin = std::io::stdin();
    let mut lines = stdin.lock();
    let mut first_offset = None;
    let mut last_offset = None;
    let mut count = 0u64;
    let mut expected = expected_offset;
    let mut number = 0usize;
    loop {
        let mut batch = Vec::new();
        let mut bytes = 0;
        let mut line = String::new();
        while batch.len() < BATCH_RECORDS && bytes < BATCH_BYTES {
            line.clear();
            if lines.read_line(&mut line).context("read stdin")? == 0 {
                break;
            }
            number += 1;
            let text = line.strip_suffix('\n').unwrap_or(&line);
            let text = text.strip_suffix('\r').unwrap_or(text);
            let mut record = Record::new(Bytes::copy_from_slice(text.as_bytes()));
            if txid_from_field {
                record.txid = Some(txid_of(text, number)?);
            }
            bytes += text.len();
            batch.push(record);
        }
        if batch.is_empty() {
            break;
        }
        let n = batch.len() as u64;
        let appended = client.append(log, batch, expected).await?;
        first_offset.get_or_insert(appended.first_offset);
        last_offset = Some(appended.last_offset);
        count += n;
        // Each later batch must follow the previous one exactly.
        expected = expected.map(|_| appended.last_offset + 1);
    }
    println!(
        "{}",
        json!({"first_offset": first_offset, "last_offset": last_offset, "count": count})
    );
    Ok(())
}
