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

use std::collections::BTreeMap;
use std::io::BufRead;

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use distributedlog::Client;
use dlog_wire::record::Record;
use serde_json::json;

use super::progress::Progress;

/// Records per append request.
const BATCH_RECORDS: usize = 1000;
/// Bytes per append request (under the 4 MiB limit).
const BATCH_BYTES: usize = 1024 * 1024;

/// How stdin lines become records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LineFormat {
    /// Each line is a record's payload.
    Text,
    /// Each line is a JSON object: `payload` (or `payload_b64`), and
    /// optionally `key` (or `key_b64`), `headers` (or `headers_b64`, an
    /// object of strings) and `txid`; other fields (those `dlog read
    /// --json` prints, such as `offset`) are ignored, so its output can be
    /// appended again.
    Json,
}

/// A record of one `--format json` line.
#[derive(Debug, serde::Deserialize)]
struct JsonLine {
    payload: Option<String>,
    payload_b64: Option<String>,
    key: Option<String>,
    key_b64: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    headers_b64: BTreeMap<String, String>,
    txid: Option<i64>,
}

fn base64(text: &str, field: &str, number: usize) -> anyhow::Result<Bytes> {
    BASE64
        .decode(text)
        .map(Bytes::from)
        .with_context(|| format!("line {number}: {field} is not base64"))
}

/// The record of a `--format json` line.
fn json_record(text: &str, number: usize) -> anyhow::Result<Record> {
    let line: JsonLine = serde_json::from_str(text)
        .with_context(|| format!("line {number}: expected a JSON object with a payload"))?;
    let payload = match (line.payload, line.payload_b64) {
        (Some(payload), None) => Bytes::from(payload),
        (None, Some(encoded)) => base64(&encoded, "payload_b64", number)?,
        (None, None) => bail!("line {number}: no \"payload\" (or \"payload_b64\")"),
        (Some(_), Some(_)) => bail!("line {number}: both \"payload\" and \"payload_b64\""),
    };
    let key = match (line.key, line.key_b64) {
        (Some(key), None) => Some(Bytes::from(key)),
        (None, Some(encoded)) => Some(base64(&encoded, "key_b64", number)?),
        (None, None) => None,
        (Some(_), Some(_)) => bail!("line {number}: both \"key\" and \"key_b64\""),
    };
    let mut headers: BTreeMap<String, Bytes> = line
        .headers
        .into_iter()
        .map(|(name, value)| (name, Bytes::from(value)))
        .collect();
    for (name, encoded) in line.headers_b64 {
        let value = base64(&encoded, &format!("headers_b64.{name}"), number)?;
        if headers.insert(name.clone(), value).is_some() {
            bail!("line {number}: header {name:?} is in both headers and headers_b64");
        }
    }
    Ok(Record {
        payload,
        key,
        headers,
        txid: line.txid,
    })
}

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
    format: LineFormat,
) -> anyhow::Result<()> {
    let stdin = std::io::stdin();
    let mut lines = stdin.lock();
    let mut first_offset = None;
    let mut last_offset = None;
    let mut count = 0u64;
    let mut expected = expected_offset;
    let mut number = 0usize;
    let mut progress = Progress::new("appended", false);
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
            let record = match format {
                LineFormat::Json => json_record(text, number)?,
                LineFormat::Text => {
                    let mut record = Record::new(Bytes::copy_from_slice(text.as_bytes()));
                    if txid_from_field {
                        record.txid = Some(txid_of(text, number)?);
                    }
                    record
                }
            };
            bytes += record.size();
            batch.push(record);
        }
        if batch.is_empty() {
            break;
        }
        let n = batch.len() as u64;
        let appended = client.append(log, batch, expected).await?;
        progress.add(n, bytes as u64);
        first_offset.get_or_insert(appended.first_offset);
        last_offset = Some(appended.last_offset);
        count += n;
        // Each later batch must follow the previous one exactly.
        expected = expected.map(|_| appended.last_offset + 1);
    }
    progress.finish();
    println!(
        "{}",
        json!({"first_offset": first_offset, "last_offset": last_offset, "count": count})
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_become_records() {
        let record = json_record(
            r#"{"offset":7,"payload":"hi","key":"k","headers":{"h":"v"},"headers_b64":{"b":"AAE="},"txid":42}"#,
            1,
        )
        .unwrap();
        assert_eq!(record.payload, Bytes::from("hi"));
        assert_eq!(record.key, Some(Bytes::from("k")));
        assert_eq!(record.headers["h"], Bytes::from("v"));
        assert_eq!(record.headers["b"], Bytes::from(vec![0u8, 1]));
        assert_eq!(record.txid, Some(42));
        let binary = json_record(r#"{"payload_b64":"/wA="}"#, 2).unwrap();
        assert_eq!(binary.payload, Bytes::from(vec![0xffu8, 0]));
        assert_eq!(binary.key, None);
    }

    #[test]
    fn bad_json_lines_name_the_line_and_the_problem() {
        let err = |line: &str| json_record(line, 3).unwrap_err().to_string();
        assert!(err("not json").contains("line 3: expected a JSON object"));
        assert!(err(r#"{"key":"k"}"#).contains("line 3: no \"payload\""));
        assert!(err(r#"{"payload_b64":"!!"}"#).contains("line 3: payload_b64 is not base64"));
        assert!(err(r#"{"payload":"a","payload_b64":"YQ=="}"#).contains("both"));
    }
}
