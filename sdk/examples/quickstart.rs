//! Writes to and reads from a distributedlog node through the SDK alone.
//!
//! ```text
//! dlog standalone --data-dir /tmp/dlog &                      # a node on 127.0.0.1:7070
//! cargo run -p distributedlog --example quickstart -- http://127.0.0.1:7070 demo/quickstart
//! ```
//!
//! Creates the log (or continues an existing one), writes 100 records with a
//! [`LogWriter`](distributedlog::LogWriter), reads them back with a
//! [`LogReader`](distributedlog::LogReader) and checks that each came back
//! in order with its payload. Prints one line per step; exits non-zero on
//! any failure.

use distributedlog::{Client, ErrorKind, ReadOptions, Record, Start, WriterOptions};
use futures::TryStreamExt;

const RECORDS: u64 = 100;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let endpoint = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:7070".to_owned());
    let log = args.next().unwrap_or_else(|| "demo/quickstart".to_owned());
    let client = Client::new(&endpoint);

    // Create the log; a second run continues it.
    match client.create_log(&log).await {
        Ok(info) => println!("created {} (log id {})", info.log, info.log_id),
        Err(err) if err.kind() == ErrorKind::AlreadyExists => println!("{log} exists"),
        Err(err) => return Err(err.into()),
    }
    let start = client.get_log(&log).await?.next_offset;

    // Write: the writer batches in order, each record exactly once.
    let writer = client.writer(&log, WriterOptions::default());
    let mut pending = Vec::new();
    for i in 0..RECORDS {
        pending.push(writer.write(Record::new(format!("record {i}"))));
    }
    let mut offsets = Vec::new();
    for write in pending {
        offsets.push(write.await?);
    }
    writer.close().await?;
    let expected: Vec<u64> = (start..start + RECORDS).collect();
    if offsets != expected {
        return Err(format!("offsets {offsets:?}, expected {expected:?}").into());
    }
    println!(
        "wrote {RECORDS} records at offsets {start}..{}",
        start + RECORDS
    );

    // Read them back from where the writes began.
    let options = ReadOptions {
        limit: Some(RECORDS),
        follow: false,
        ..ReadOptions::default()
    };
    let records: Vec<_> = client
        .reader(&log, Start::Offset(start), options)
        .try_collect()
        .await?;
    for (i, stored) in (0..RECORDS).zip(&records) {
        let want = format!("record {i}");
        if stored.offset != start + i || stored.record.payload != want.as_bytes() {
            return Err(format!(
                "offset {}: {:?}, expected {want:?}",
                stored.offset, stored.record.payload
            )
            .into());
        }
    }
    if records.len() as u64 != RECORDS {
        return Err(format!("read {} records, expected {RECORDS}", records.len()).into());
    }
    println!("read {RECORDS} records back in order");

    let info = client.get_log(&log).await?;
    println!(
        "{log}: next offset {}, {} segment(s)",
        info.next_offset,
        info.segments.len()
    );
    Ok(())
}
