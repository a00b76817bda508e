//! `dlog read`: prints records, payloads one per line or one JSON object
//! per record (`--json`, a contract: docs/cli.md).

use std::io::{self, Write};

use super::progress::Progress;
use anyhow::{Context, anyhow, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use chrono::{DateTime, SecondsFormat};
use distributedlog::{Client, ReadOptions, Start, StoredRecord};
use futures::{FutureExt, StreamExt};
use serde::Serialize;

/// What `dlog read` was asked.
#[derive(Debug, clap::Args)]
pub struct ReadArgs {
    /// The log, NS/LOG.
    pub log: String,
    /// Start at this offset.
    #[arg(long, value_name = "OFFSET", conflicts_with_all = ["from_time", "from_txid", "from_tail"])]
    pub from: Option<u64>,
    /// Start at the first record stored at or after this RFC 3339 time (e.g. 2024-05-01T12:00:00Z).
    #[arg(long, value_name = "RFC3339", conflicts_with_all = ["from_txid", "from_tail"])]
    pub from_time: Option<String>,
    /// Start at the first record with a txid at or above X.
    #[arg(
        long,
        value_name = "X",
        allow_negative_numbers = true,
        conflicts_with = "from_tail"
    )]
    pub from_txid: Option<i64>,
    /// Start at the tail: only records appended from now on (with --follow,
    /// like `tail -f` without the history).
    #[arg(long)]
    pub from_tail: bool,
    /// Stop after N records.
    #[arg(long, value_name = "N")]
    pub limit: Option<u64>,
    /// Keep reading records as they are appended.
    #[arg(long)]
    pub follow: bool,
    /// One JSON object per record: {"offset","timestamp","producer_time","txid","key","headers",
    /// "payload"}; times as RFC 3339 UTC with milliseconds; headers a list of {"name","value"}
    /// in order; a null payload is null; a key, payload or header value that is not UTF-8 comes
    /// base64-encoded as "key_b64" / "payload_b64" / "value_b64" instead.
    #[arg(long)]
    pub json: bool,
}

/// Milliseconds since the epoch of an RFC 3339 time
/// (`2024-05-01T12:00:00Z`, `2024-05-01T14:00:00.250+02:00`); `what` names
/// the text in the error.
pub fn parse_rfc3339(what: &str, text: &str) -> anyhow::Result<i64> {
    match DateTime::parse_from_rfc3339(text.trim()) {
        Ok(time) => Ok(time.timestamp_millis()),
        Err(err) => bail!(
            "{what} {text:?} is not an RFC 3339 time ({err}); \
             expected e.g. 2024-05-01T12:00:00Z"
        ),
    }
}

/// The `--from-time` of `dlog read`, in milliseconds since the epoch.
pub fn parse_time(text: &str) -> anyhow::Result<i64> {
    parse_rfc3339("--from-time", text)
}

/// A timestamp as RFC 3339 in UTC with milliseconds
/// (`2024-05-01T12:00:00.250Z`); out of range, the number of milliseconds.
pub fn format_time(ms: i64) -> String {
    match DateTime::from_timestamp_millis(ms) {
        Some(time) => time.to_rfc3339_opts(SecondsFormat::Millis, true),
        None => ms.to_string(),
    }
}

/// One record of `--json`: bytes as UTF-8 text when they are, else base64
/// under the `_b64` name. An absent key, a null payload and a missing
/// producer time are `null`; `headers` is left out when there are none.
#[derive(Debug, Serialize)]
struct JsonRecord<'a> {
    offset: u64,
    timestamp: String,
    producer_time: Option<String>,
    txid: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<Option<&'a str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key_b64: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    headers: Vec<JsonHeader<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<Option<&'a str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload_b64: Option<String>,
}

/// One header of `--json`, in the record's order: `{"name","value"}`, or
/// `{"name","value_b64"}` for a value that is not UTF-8.
#[derive(Debug, Serialize)]
struct JsonHeader<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value_b64: Option<String>,
}

/// `bytes` as text when they are UTF-8 (first), else base64 (second).
fn text_or_base64(bytes: &[u8]) -> (Option<&str>, Option<String>) {
    match std::str::from_utf8(bytes) {
        Ok(text) => (Some(text), None),
        Err(_) => (None, Some(BASE64.encode(bytes))),
    }
}

/// The `--json` line of a record (without the newline).
pub fn json_line(stored: &StoredRecord) -> String {
    let record = &stored.record;
    let (key, key_b64) = match record.key.as_deref().map(text_or_base64) {
        None => (Some(None), None),
        Some((text, base64)) => (text.map(Some), base64),
    };
    let (payload, payload_b64) = match record.nullable_payload().map(|p| text_or_base64(p)) {
        None => (Some(None), None),
        Some((text, base64)) => (text.map(Some), base64),
    };
    let headers = (record.headers.iter())
        .map(|(name, value)| {
            let (value, value_b64) = text_or_base64(value);
            JsonHeader {
                name,
                value,
                value_b64,
            }
        })
        .collect();
    let line = JsonRecord {
        offset: stored.offset,
        timestamp: format_time(stored.timestamp_ms),
        producer_time: record.producer_time_ms.map(format_time),
        txid: record.txid,
        key,
        key_b64,
        headers,
        payload,
        payload_b64,
    };
    // Serializing strings and numbers cannot fail.
    serde_json::to_string(&line).unwrap_or_default()
}

fn start_of(args: &ReadArgs) -> anyhow::Result<Start> {
    Ok(match (&args.from, &args.from_time, &args.from_txid) {
        (Some(offset), _, _) => Start::Offset(*offset),
        (_, Some(time), _) => Start::Timestamp(parse_time(time)?),
        (_, _, Some(txid)) => Start::Txid(*txid),
        _ if args.from_tail => Start::Tail,
        _ => Start::Earliest,
    })
}

pub async fn read(client: &Client, args: ReadArgs) -> anyhow::Result<()> {
    let start = start_of(&args)?;
    let options = ReadOptions {
        limit: args.limit,
        follow: args.follow,
        ..ReadOptions::default()
    };
    let stdout = io::stdout().lock();
    let mut out = io::BufWriter::with_capacity(64 * 1024, stdout);
    match print_records(client, &args, start, options, &mut out).await {
        Err(Failure::Output(err)) if err.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        Err(Failure::Output(err)) => Err(err).context("write to stdout"),
        Err(Failure::Read(err)) => {
            // Show what was read before the error; when no one reads any
            // more, the error does not matter either.
            match out.flush() {
                Ok(()) => Err(err),
                Err(out) if out.kind() == io::ErrorKind::BrokenPipe => Ok(()),
                Err(out) => Err(out).context("write to stdout"),
            }
        }
        Ok(()) => Ok(()),
    }
}

enum Failure {
    Output(io::Error),
    Read(anyhow::Error),
}

impl From<io::Error> for Failure {
    fn from(err: io::Error) -> Self {
        Failure::Output(err)
    }
}

async fn print_records(
    client: &Client,
    args: &ReadArgs,
    start: Start,
    options: ReadOptions,
    out: &mut impl Write,
) -> Result<(), Failure> {
    let mut reader = client.reader(&args.log, start, options);
    let mut progress = Progress::new("read", true);
    loop {
        // Flush whenever the next record is not there yet: a follower sees
        // each record at once, a catch-up read writes in large blocks.
        let next = match reader.next().now_or_never() {
            Some(next) => next,
            None => {
                out.flush()?;
                reader.next().await
            }
        };
        let stored = match next {
            Some(Ok(stored)) => stored,
            Some(Err(err)) if err.code() == tonic::Code::Unimplemented => {
                return Err(Failure::Read(anyhow!(
                    "read {}: the endpoint serves no reads (an ingest node?); \
                     give a reader node with --read-endpoint or DLOG_READ_ENDPOINT",
                    args.log
                )));
            }
            Some(Err(err)) => {
                // One line on stderr, whatever the server's message holds.
                let message = err.to_string().replace(['\r', '\n'], " ");
                return Err(Failure::Read(anyhow!("read {}: {message}", args.log)));
            }
            None => break,
        };
        progress.add(1, stored.record.size() as u64);
        if args.json {
            out.write_all(json_line(&stored).as_bytes())?;
        } else {
            out.write_all(&stored.record.payload)?;
        }
        out.write_all(b"\n")?;
    }
    out.flush()?;
    progress.finish();
    Ok(())
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use distributedlog::Record;

    use super::*;

    fn stored(payload: &[u8], key: Option<&[u8]>, txid: Option<i64>) -> StoredRecord {
        StoredRecord {
            offset: 42,
            timestamp_ms: 1_714_564_800_250,
            record: Record {
                payload: Bytes::copy_from_slice(payload),
                key: key.map(Bytes::copy_from_slice),
                txid,
                ..Record::default()
            },
        }
    }

    #[test]
    fn json_of_text_records() {
        assert_eq!(
            json_line(&stored(b"hello \"world\"", Some(b"k1"), Some(7))),
            r#"{"offset":42,"timestamp":"2024-05-01T12:00:00.250Z","producer_time":null,"txid":7,"key":"k1","payload":"hello \"world\""}"#
        );
        assert_eq!(
            json_line(&stored(b"", None, None)),
            r#"{"offset":42,"timestamp":"2024-05-01T12:00:00.250Z","producer_time":null,"txid":null,"key":null,"payload":""}"#
        );
    }

    /// Headers in their order with a repeated name (a binary value under
    /// `value_b64`), a null payload, and the producer's time.
    #[test]
    fn json_of_ordered_headers_null_payloads_and_producer_times() {
        let mut record = stored(b"", Some(b"k"), None);
        record.record.null_payload = true;
        record.record.producer_time_ms = Some(1_600_000_000_123);
        record.record.headers.push("z", "1");
        record.record.headers.push("a", Bytes::from_static(&[0xff]));
        record.record.headers.push("z", "2");
        assert_eq!(
            json_line(&record),
            concat!(
                r#"{"offset":42,"timestamp":"2024-05-01T12:00:00.250Z","#,
                r#""producer_time":"2020-09-13T12:26:40.123Z","txid":null,"key":"k","#,
                r#""headers":[{"name":"z","value":"1"},{"name":"a","value_b64":"/w=="},"#,
                r#"{"name":"z","value":"2"}],"payload":null}"#
            )
        );
    }

    #[test]
    fn json_of_binary_records_is_base64() {
        let line = json_line(&stored(&[0xff, 0x00, 0x01], Some(&[0xc3, 0x28]), None));
        assert_eq!(
            line,
            r#"{"offset":42,"timestamp":"2024-05-01T12:00:00.250Z","producer_time":null,"txid":null,"key_b64":"wyg=","payload_b64":"/wAB"}"#
        );
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert!(value.get("payload").is_none());
        assert!(value.get("key").is_none());
        // UTF-8 beyond ASCII stays text.
        let line = json_line(&stored("grüße ✓".as_bytes(), None, None));
        assert!(line.contains(r#""payload":"grüße ✓""#), "{line}");
    }

    #[test]
    fn parses_rfc3339_times() {
        assert_eq!(parse_time("1970-01-01T00:00:00Z").unwrap(), 0);
        assert_eq!(
            parse_time("2024-05-01T12:00:00.250Z").unwrap(),
            1_714_564_800_250
        );
        assert_eq!(
            parse_time("2024-05-01T14:00:00.250+02:00").unwrap(),
            1_714_564_800_250
        );
        assert_eq!(
            parse_time(" 2024-05-01t12:00:00.250z ").unwrap(),
            1_714_564_800_250
        );
        for bad in [
            "",
            "yesterday",
            "2024-05-01",
            "2024-05-01T12:00:00",
            "1714564800",
        ] {
            let err = parse_time(bad).unwrap_err().to_string();
            assert!(err.starts_with("--from-time"), "{err}");
            assert!(!err.contains('\n'), "{err}");
        }
    }

    #[test]
    fn formats_times_in_utc_with_milliseconds() {
        assert_eq!(format_time(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_time(1_714_564_800_250), "2024-05-01T12:00:00.250Z");
        assert_eq!(format_time(i64::MAX), i64::MAX.to_string());
    }

    #[test]
    fn start_positions() {
        let args = |from, from_time: Option<&str>, from_txid| ReadArgs {
            log: "a/b".into(),
            from,
            from_time: from_time.map(str::to_owned),
            from_txid,
            from_tail: false,
            limit: None,
            follow: false,
            json: false,
        };
        assert_eq!(start_of(&args(None, None, None)).unwrap(), Start::Earliest);
        assert_eq!(
            start_of(&args(Some(5), None, None)).unwrap(),
            Start::Offset(5)
        );
        assert_eq!(
            start_of(&args(None, None, Some(-3))).unwrap(),
            Start::Txid(-3)
        );
        assert_eq!(
            start_of(&args(None, Some("1970-01-01T00:00:01Z"), None)).unwrap(),
            Start::Timestamp(1_000)
        );
        assert!(start_of(&args(None, Some("soon"), None)).is_err());
        let tail = ReadArgs {
            from_tail: true,
            ..args(None, None, None)
        };
        assert_eq!(start_of(&tail).unwrap(), Start::Tail);
    }

    #[test]
    fn from_tail_conflicts_with_other_starts() {
        use clap::Parser;
        #[derive(Debug, clap::Parser)]
        struct Cli {
            #[command(flatten)]
            read: ReadArgs,
        }
        assert!(Cli::try_parse_from(["read", "a/b", "--from-tail"]).is_ok());
        for other in [["--from", "3"], ["--from-txid", "3"], ["--from-time", "x"]] {
            let args = ["read", "a/b", "--from-tail", other[0], other[1]];
            assert!(Cli::try_parse_from(args).is_err(), "{args:?}");
        }
    }
}
