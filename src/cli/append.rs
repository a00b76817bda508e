//! `dlog append`: one record per stdin line, sent as sequential unary
//! `Append` calls of up to 1 000 records or 1 MiB each (the next batch goes
//! once the previous one is acknowledged); prints
//! `{"first_offset","last_offset","count"}`. `--header NAME=VALUE` (repeated)
//! adds headers to every record, in the order given, after a JSON line's own.
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
use dlog_wire::record::{Headers, Record};
use serde::{Deserialize, Deserializer};
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
    /// Each line is a JSON object: `payload` (or `payload_b64`; `null`
    /// for a null payload), and optionally `key` (or `key_b64`), `headers`
    /// (a list of `{"name", "value"}` or `{"name", "value_b64"}`, kept in
    /// order), `txid` and `producer_time` (RFC 3339); other fields (those
    /// `dlog read --json` prints, such as `offset`) are ignored, so its
    /// output can be appended again. The older form of headers, an object
    /// of strings with `headers_b64` beside it, is still taken.
    Json,
}

/// A record of one `--format json` line.
#[derive(Debug, Deserialize)]
struct JsonLine {
    /// Absent: `None`; `null`: `Some(None)`, a null payload.
    #[serde(default, deserialize_with = "present")]
    payload: Option<Option<String>>,
    payload_b64: Option<String>,
    key: Option<String>,
    key_b64: Option<String>,
    headers: Option<JsonHeaders>,
    headers_b64: Option<BTreeMap<String, String>>,
    txid: Option<i64>,
    producer_time: Option<String>,
}

/// A field that is there, `null` or not: `Some` of its value.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    field: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(field).map(Some)
}

/// The `headers` of a JSON line.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum JsonHeaders {
    /// What `dlog read --json` prints: in order, a name may repeat.
    List(Vec<JsonHeader>),
    /// The older form: one value per name (with `headers_b64` for values
    /// that are not text).
    Object(BTreeMap<String, String>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonHeader {
    name: String,
    value: Option<String>,
    value_b64: Option<String>,
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
    let key = match (line.key, line.key_b64) {
        (Some(key), None) => Some(Bytes::from(key)),
        (None, Some(encoded)) => Some(base64(&encoded, "key_b64", number)?),
        (None, None) => None,
        (Some(_), Some(_)) => bail!("line {number}: both \"key\" and \"key_b64\""),
    };
    let (payload, null_payload) = match (line.payload, line.payload_b64) {
        (Some(Some(payload)), None) => (Bytes::from(payload), false),
        (Some(None), None) => (Bytes::new(), true),
        (None, Some(encoded)) => (base64(&encoded, "payload_b64", number)?, false),
        (None, None) => bail!("line {number}: no \"payload\" (or \"payload_b64\")"),
        (Some(_), Some(_)) => bail!("line {number}: both \"payload\" and \"payload_b64\""),
    };
    let headers = json_headers(line.headers, line.headers_b64, number)?;
    let producer_time_ms = match &line.producer_time {
        Some(time) => Some(
            super::read::parse_rfc3339("producer_time", time)
                .map_err(|err| anyhow::anyhow!("line {number}: {err}"))?,
        ),
        None => None,
    };
    Ok(Record {
        payload,
        null_payload,
        key,
        headers,
        txid: line.txid,
        producer_time_ms,
    })
}

/// The headers of a JSON line, in either form.
fn json_headers(
    headers: Option<JsonHeaders>,
    headers_b64: Option<BTreeMap<String, String>>,
    number: usize,
) -> anyhow::Result<Headers> {
    let mut out = Headers::new();
    let object = match headers {
        Some(JsonHeaders::List(list)) => {
            if headers_b64.is_some() {
                bail!(
                    "line {number}: \"headers_b64\" goes with headers as an object; \
                     in a list, give a header's \"value_b64\""
                );
            }
            for (i, header) in list.into_iter().enumerate() {
                let value = match (header.value, header.value_b64) {
                    (Some(value), None) => Bytes::from(value),
                    (None, Some(encoded)) => {
                        base64(&encoded, &format!("headers[{i}].value_b64"), number)?
                    }
                    _ => bail!(
                        "line {number}: headers[{i}] needs one of \"value\" and \"value_b64\""
                    ),
                };
                out.push(header.name, value);
            }
            return Ok(out);
        }
        Some(JsonHeaders::Object(object)) => object,
        None => BTreeMap::new(),
    };
    let b64 = headers_b64.unwrap_or_default();
    if let Some(name) = object.keys().find(|name| b64.contains_key(*name)) {
        bail!("line {number}: header {name:?} is in both headers and headers_b64");
    }
    out.extend(object);
    for (name, encoded) in b64 {
        let value = base64(&encoded, &format!("headers_b64.{name}"), number)?;
        out.push(name, value);
    }
    Ok(out)
}

/// A `--header` flag: `NAME=VALUE` (the value may hold `=`; it may be
/// empty). The error is what clap shows after naming the flag and value.
pub fn parse_header(flag: &str) -> Result<(String, Bytes), String> {
    match flag.split_once('=') {
        Some((name, value)) => Ok((name.to_owned(), Bytes::copy_from_slice(value.as_bytes()))),
        None => Err("expected NAME=VALUE, e.g. trace=abc".to_owned()),
    }
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
    headers: &Headers,
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
            let mut record = match format {
                LineFormat::Json => json_record(text, number)?,
                LineFormat::Text => {
                    let mut record = Record::new(Bytes::copy_from_slice(text.as_bytes()));
                    if txid_from_field {
                        record.txid = Some(txid_of(text, number)?);
                    }
                    record
                }
            };
            record.headers.extend(headers.iter().cloned());
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

    /// What `dlog read --json` prints comes back as the same record:
    /// headers in order with a repeated name, a null payload, a producer time.
    #[test]
    fn read_json_lines_append_back_as_the_same_records() {
        use distributedlog::StoredRecord;
        let mut original = Record::null();
        original.key = Some(Bytes::from("k"));
        original.producer_time_ms = Some(1_600_000_000_123);
        original.headers.push("z", "1");
        original.headers.push("a", Bytes::from_static(&[0xff, 0]));
        original.headers.push("z", "2");
        let line = super::super::read::json_line(&StoredRecord {
            offset: 3,
            timestamp_ms: 1_700_000_000_000,
            record: original.clone(),
        });
        assert_eq!(json_record(&line, 1).unwrap(), original);
        let empty = json_record(r#"{"payload":"","headers":[]}"#, 1).unwrap();
        assert_eq!(empty, Record::new(""), "empty, not null");
    }

    #[test]
    fn header_flags_are_name_equals_value() {
        assert_eq!(
            parse_header("a=b=c").unwrap(),
            ("a".to_owned(), Bytes::from("b=c"))
        );
        assert_eq!(parse_header("e=").unwrap(), ("e".to_owned(), Bytes::new()));
        assert_eq!(
            parse_header("novalue").unwrap_err(),
            "expected NAME=VALUE, e.g. trace=abc"
        );
    }

    #[test]
    fn bad_json_lines_name_the_line_and_the_problem() {
        let err = |line: &str| json_record(line, 3).unwrap_err().to_string();
        assert!(err("not json").contains("line 3: expected a JSON object"));
        assert!(err(r#"{"key":"k"}"#).contains("line 3: no \"payload\""));
        assert!(err(r#"{"payload_b64":"!!"}"#).contains("line 3: payload_b64 is not base64"));
        assert!(err(r#"{"payload":"a","payload_b64":"YQ=="}"#).contains("both"));
        assert!(err(r#"{"payload":null,"payload_b64":"YQ=="}"#).contains("both"));
        assert!(
            err(r#"{"payload":"a","headers":[{"name":"h"}]}"#)
                .contains(r#"line 3: headers[0] needs one of "value" and "value_b64""#)
        );
        assert!(
            err(r#"{"payload":"a","headers":[],"headers_b64":{"b":"AA=="}}"#)
                .contains("headers_b64")
        );
        assert!(
            err(r#"{"payload":"a","producer_time":"soon"}"#)
                .contains("line 3: producer_time \"soon\" is not an RFC 3339 time")
        );
    }
}
