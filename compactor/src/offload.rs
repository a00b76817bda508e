//! Offload of one sealed segment (ARCHITECTURE.md, "The compactor"), step by step:
//!
//! 1. claim `segment/<ns>/<log>/<segment>` on this compactor's lease (several
//!    compactors may run; a dead one's claims expire with its lease);
//! 2. read the entries from a replica, falling back to the others on error
//!    or CRC mismatch, up to the sealed last entry;
//! 3. encode the Parquet file (deterministic bytes), with a typed column
//!    per field of the namespace's payload schema as read now;
//! 4. upload with `PutMode::Create`, in one request ([`upload`]); if the
//!    object exists (a crashed earlier attempt), it must hold the same bytes;
//! 5. verify: read the object back and compare its CRC32C;
//! 6. with Iceberg tables on, append the file to the log's table, unless
//!    it is there already ([`crate::table`]);
//! 7. CAS the segment to `offloaded` with key, size, checksum and time.
//!
//! Dropping the segment from the cache nodes happens a grace period later
//! ([`crate::Compactor`]), so readers that listed the segment as sealed a
//! moment ago still find it in cache.
//!
//! | crash after step | state | the next compactor |
//! |---|---|---|
//! | 1 | claim on a dead lease | claims again once the lease expired |
//! | 2–3 | nothing written | starts over |
//! | 4 | object uploaded, segment still `sealed` | uploads again: `AlreadyExists` with the same bytes, then 5–6 |
//! | 5 | same as 4 | same as 4 |
//! | 6 (schema) | the table has the file's typed columns, not the file | as 4, then finds the columns there and appends the file |
//! | 6 | file in the table, segment still `sealed` | as 4, then finds the file in the table and does not append it again |
//! | 7 | segment `offloaded`, cache copy kept | drops it after the grace period |
//!
//! A payload schema changed between an attempt and the next one encodes
//! other typed columns: the object an earlier attempt left holds the same
//! records and is kept (`adopt_equal_object`), with the columns it has,
//! which its table append adds to the table if it lacks them.
//!
//! So no crash loses data (the cache copy goes only after the manifest
//! points at a verified object) and none duplicates rows (one object per
//! segment, at a key fixed by its offsets, appended to the table once).

use crate::failpoint;
use crate::series;
use crate::table::{LogTables, TableFile};
use bytes::Bytes;
use dlog_meta::cache_clients::CacheClients;
use dlog_meta::manifest::{Manifest, ObjectInfo, SegmentMeta};
use dlog_storage::objstore::ObjectStoreHandle;
use dlog_wire::codec::{self, Entry};
use dlog_wire::names::LogName;
use dlog_wire::payload_schema::PayloadSchema;
use dlog_wire::proto::{ReadEntriesRequest, SegmentRef};
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};

use crate::error::{Error, Result};
use dlog_storage::segment_file::{self, FileInfo, SegmentFile};

/// The largest roll size a namespace may set: its segments' files then
/// stay below S3's 5 GiB limit of one upload request ([`upload`]).
pub const MAX_SINGLE_UPLOAD_ROLL_BYTES: u64 = dlog_meta::manifest::MAX_ROLL_BYTES;

/// Reads every entry of a sealed segment from its replicas, in order.
pub async fn read_segment(
    caches: &CacheClients,
    log: &LogName,
    log_id: u64,
    segment: &SegmentMeta,
) -> Result<Vec<Entry>> {
    let fail = |reason: String| Error::Read {
        log: log.clone(),
        segment: segment.segment_id,
        reason,
    };
    let Some(last_entry) = segment.last_entry_id else {
        return Ok(Vec::new());
    };
    let reference = SegmentRef {
        log: log.to_string(),
        log_id,
        segment_id: segment.segment_id,
    };
    let mut entries: Vec<Entry> = Vec::new();
    let mut errors = Vec::new();
    'entries: while (entries.len() as u64) <= last_entry {
        let next = entries.len() as u64;
        let before = entries.len();
        for node in &segment.ensemble {
            let mut client = match caches.client(node).await {
                Ok(client) => client,
                Err(err) => {
                    errors.push(err.to_string());
                    continue;
                }
            };
            let request = ReadEntriesRequest {
                segment: Some(reference.clone()),
                from_entry: next,
                max_entries: 0,
                fence_epoch: None,
                sealed_last_entry: Some(last_entry),
            };
            let mut stream = match client.read_entries(request).await {
                Ok(response) => response.into_inner(),
                Err(status) => {
                    if status.code() == tonic::Code::Unavailable {
                        // A fresh connection next time (see drop_from_cache).
                        caches.suspect(node);
                    }
                    errors.push(format!("{node}: {}", status.message()));
                    continue;
                }
            };
            loop {
                match stream.message().await {
                    Ok(Some(message)) => match codec::decode_entry(message.entry) {
                        Ok(entry) if entry.header.entry_id == entries.len() as u64 => {
                            entries.push(entry)
                        }
                        Ok(entry) => {
                            errors.push(format!(
                                "{node}: entry {} out of order",
                                entry.header.entry_id
                            ));
                            break;
                        }
                        Err(err) => {
                            // A damaged copy: take this entry from another replica.
                            errors.push(format!("{node}: {err}"));
                            break;
                        }
                    },
                    Ok(None) => break,
                    Err(status) => {
                        errors.push(format!("{node}: {}", status.message()));
                        break;
                    }
                }
            }
            if entries.len() > before {
                continue 'entries;
            }
        }
        return Err(fail(format!(
            "no replica has entry {next} of {}: {}",
            last_entry + 1,
            errors.join("; ")
        )));
    }
    // The entries must tile the segment's offsets exactly.
    let mut offset = segment.start_offset;
    for entry in &entries {
        if entry.header.first_offset != offset {
            return Err(fail(format!(
                "entry {} starts at offset {}, expected {offset}",
                entry.header.entry_id, entry.header.first_offset
            )));
        }
        offset = entry.header.end_offset();
    }
    if Some(offset) != segment.end_offset {
        return Err(fail(format!(
            "entries end at offset {offset}, the segment at {:?}",
            segment.end_offset
        )));
    }
    Ok(entries)
}

/// The payload schema of the log's namespace in force now, for the typed
/// columns of a file written now ([`FileInfo::payload_schema`]).
pub(crate) async fn payload_schema(
    manifest: &Manifest,
    log: &LogName,
) -> Result<Option<PayloadSchema>> {
    let config = manifest.namespace(log.namespace()).await?;
    Ok(config.active_payload_schema().cloned())
}

/// Uploads a file at `key` so that a retry is harmless: in one
/// create-only request whatever its size (a multipart upload cannot be
/// create-only, and one completed late by an attempt paused past its
/// claim would replace the object another attempt recorded, with other
/// bytes when the two encoded differently: another release, or another
/// payload schema). An existing object must already hold exactly these
/// bytes. S3 takes up to 5 GiB in one request; a segment's file stays
/// below that, as segments roll at [`MAX_SINGLE_UPLOAD_ROLL_BYTES`] at
/// most (merged files: `merge_target_bytes`, capped the same), and the S3
/// store's request timeout is long enough for such a body
/// (`dlog_storage::objstore`). A file over [`MAX_SINGLE_REQUEST_BYTES`] (a
/// segment rolled before the cap, by a larger roll size) can only go up in
/// parts, after a check that nothing is at the key: that alone keeps the
/// risk above, so it is logged.
pub async fn upload(
    objects: &ObjectStoreHandle,
    key: &object_store::path::Path,
    file: &SegmentFile,
) -> Result<()> {
    let created = if file.bytes.len() as u64 > MAX_SINGLE_REQUEST_BYTES {
        tracing::warn!(%key, bytes = file.bytes.len(), "a file over 5 GiB goes up in parts, which cannot be create-only");
        upload_in_parts(objects, key, file).await
    } else {
        let options = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        (objects.store)
            .put_opts(key, PutPayload::from(file.bytes.clone()), options)
            .await
            .map(|_| ())
    };
    match created {
        Ok(()) => Ok(()),
        Err(object_store::Error::AlreadyExists { .. }) => {
            let existing = read_object(objects, key).await?;
            let crc = crc32c::crc32c(&existing);
            if crc == file.crc32c && existing.len() == file.bytes.len() {
                tracing::info!(%key, "object already uploaded by an earlier attempt");
                Ok(())
            } else {
                Err(Error::ObjectConflict {
                    key: key.to_string(),
                    size: existing.len() as u64,
                    crc,
                })
            }
        }
        Err(err) => Err(Error::object_store("upload", key)(err)),
    }
}

/// The most S3 takes in one upload request (5 GiB).
pub const MAX_SINGLE_REQUEST_BYTES: u64 = 5 * 1024 * 1024 * 1024;
const PART_SIZE: usize = 64 * 1024 * 1024;

/// A multipart upload at `key` if nothing is there yet (`AlreadyExists`
/// otherwise, which the caller compares).
async fn upload_in_parts(
    objects: &ObjectStoreHandle,
    key: &object_store::path::Path,
    file: &SegmentFile,
) -> object_store::Result<()> {
    match objects.store.head(key).await {
        Ok(_) => {
            return Err(object_store::Error::AlreadyExists {
                path: key.to_string(),
                source: "exists".into(),
            });
        }
        Err(object_store::Error::NotFound { .. }) => {}
        Err(err) => return Err(err),
    }
    let mut upload = objects.store.put_multipart(key).await?;
    for part in file.bytes.chunks(PART_SIZE) {
        upload
            .put_part(PutPayload::from(file.bytes.slice_ref(part)))
            .await?;
    }
    upload.complete().await.map(|_| ())
}

/// Runs CPU work (encoding, decoding) on tokio's blocking pool, off the
/// async workers; on the calling task when `inline` (see
/// [`crate::CompactorOptions::encode_inline`]).
pub(crate) async fn cpu_work<T: Send + 'static>(
    inline: bool,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, tokio::task::JoinError> {
    if inline {
        Ok(work())
    } else {
        tokio::task::spawn_blocking(work).await
    }
}

/// The object an earlier attempt left at `key` with other bytes than
/// `ours` is kept when it holds exactly the same records: written by code
/// of another format version or library release (an upgrade with an
/// offload in flight). Then it is the segment's file, described by its own
/// size and checksum, returned with whether it is in the current layout.
/// Other content is a conflict.
pub(crate) async fn adopt_equal_object(
    existing: Bytes,
    ours: SegmentFile,
    key: &object_store::path::Path,
    encode_inline: bool,
) -> Result<(SegmentFile, bool)> {
    let conflict = Error::ObjectConflict {
        key: key.to_string(),
        size: existing.len() as u64,
        crc: crc32c::crc32c(&existing),
    };
    // A layout this node cannot read (a later version, seen in a rollback)
    // is not adopted, even if the columns it knows decode the same.
    let version = segment_file::format_version(&existing);
    if version
        .as_deref()
        .is_some_and(|v| !segment_file::readable_version(v))
    {
        return Err(conflict);
    }
    let compare = {
        let (existing, ours) = (existing.clone(), ours.bytes.clone());
        move || match (
            segment_file::decode_file(existing),
            segment_file::decode_file(ours),
        ) {
            (Ok(theirs), Ok(mine)) => theirs == mine,
            _ => false,
        }
    };
    if !cpu_work(encode_inline, compare).await.unwrap_or(false) {
        return Err(conflict);
    }
    tracing::warn!(%key, "keeping the object an earlier attempt wrote in another layout: same records");
    let current_layout = version.as_deref() == Some(segment_file::FORMAT_VERSION);
    let kept = SegmentFile {
        crc32c: crc32c::crc32c(&existing),
        bytes: existing,
        rows: ours.rows,
        time_range_ms: ours.time_range_ms,
    };
    Ok((kept, current_layout))
}

/// Reads the object at `key` back and checks that it holds the bytes of
/// CRC32C `crc` (what was uploaded, not another writer's).
pub async fn verify_upload(
    objects: &ObjectStoreHandle,
    key: &object_store::path::Path,
    crc: u32,
) -> Result<()> {
    let stored = read_object(objects, key).await?;
    let stored_crc = crc32c::crc32c(&stored);
    if stored_crc != crc {
        return Err(Error::ObjectConflict {
            key: key.to_string(),
            size: stored.len() as u64,
            crc: stored_crc,
        });
    }
    Ok(())
}

/// The whole object a segment's manifest entry names, checked against the
/// CRC32C recorded there; a mismatch is the error `mismatch` makes of its
/// description. Returns the bytes and their CRC32C.
pub(crate) async fn read_recorded(
    objects: &ObjectStoreHandle,
    object: &ObjectInfo,
    mismatch: impl FnOnce(String) -> Error,
) -> Result<(Bytes, u32)> {
    let key = object_store::path::Path::from(object.key.as_str());
    let bytes = read_object(objects, &key).await?;
    let crc = crc32c::crc32c(&bytes);
    if crc != object.crc32c {
        return Err(mismatch(format!(
            "{key} has CRC32C {crc:#010x}, the manifest recorded {:#010x}",
            object.crc32c
        )));
    }
    Ok((bytes, crc))
}

/// The whole object at `key`.
pub async fn read_object(
    objects: &ObjectStoreHandle,
    key: &object_store::path::Path,
) -> Result<Bytes> {
    let object_error = |what: &'static str| Error::object_store(what, key);
    objects
        .store
        .get(key)
        .await
        .map_err(object_error("read"))?
        .bytes()
        .await
        .map_err(object_error("read"))
}

/// What an offload reads from and writes to.
#[derive(Debug, Clone, Copy)]
pub struct OffloadTo<'a> {
    pub manifest: &'a Manifest,
    pub caches: &'a CacheClients,
    pub objects: &'a ObjectStoreHandle,
    /// The logs' Iceberg tables, when they are on.
    pub tables: Option<&'a LogTables>,
}

/// Offloads one sealed segment (the caller holds its claim). Returns the
/// object's description as recorded in the manifest. `encode_inline`: see
/// [`crate::CompactorOptions::encode_inline`].
pub async fn offload_segment(
    to: OffloadTo<'_>,
    log: &LogName,
    log_id: u64,
    segment: &SegmentMeta,
    encode_inline: bool,
) -> Result<ObjectInfo> {
    let OffloadTo {
        manifest,
        caches,
        objects,
        tables,
    } = to;
    let started = std::time::Instant::now();
    let entries = read_segment(caches, log, log_id, segment).await?;
    failpoint::hit("offload.after_read");
    let end_offset = segment.end_offset.unwrap_or(segment.start_offset);
    let schema = payload_schema(manifest, log).await?;
    let (owned_log, segment_id, start_offset) =
        (log.clone(), segment.segment_id, segment.start_offset);
    let encode = move || {
        let info = FileInfo {
            log: &owned_log,
            segment_id,
            start_offset,
            end_offset,
            payload_schema: schema.as_ref(),
        };
        segment_file::encode_segment(&entries, &info)
    };
    let file = cpu_work(encode_inline, encode)
        .await
        .map_err(|err| Error::Incomplete {
            log: log.clone(),
            segment: segment_id,
            reason: format!("encoding task failed: {err}"),
        })??;
    let key = segment_file::object_key(
        &objects.prefix,
        log,
        log_id,
        segment.start_offset,
        end_offset,
    );
    // `current_layout`: whether the object is in the layout just encoded
    // (always, unless an earlier attempt's object was adopted).
    let (file, current_layout) = match upload(objects, &key, &file).await {
        Ok(()) => (file, true),
        Err(Error::ObjectConflict { .. }) => {
            let existing = read_object(objects, &key).await?;
            adopt_equal_object(existing, file, &key, encode_inline).await?
        }
        Err(err) => return Err(err),
    };
    failpoint::hit("offload.after_upload");
    verify_upload(objects, &key, file.crc32c).await?;
    failpoint::hit("offload.after_verify");
    // A file of an earlier layout (adopted above) has another schema than
    // the table's; it stays out of it.
    if let Some(tables) = tables.filter(|_| current_layout) {
        let started = std::time::Instant::now();
        let file = TableFile {
            key: &key,
            file: &file,
            segment_id,
            start_offset: segment.start_offset,
            end_offset,
            time_range_ms: file.time_range_ms,
        };
        // The trim point a table created by this append records at once.
        let trim = manifest.trim_point(log).await?;
        let appended = tables.append(log, log_id, trim, &file).await?;
        metrics::histogram!(series::TABLE_COMMIT_DURATION).record(started.elapsed());
        tracing::debug!(%log, segment = segment_id, ?appended, "appended to the log's table");
        failpoint::hit("offload.after_table_commit");
    }
    let object = ObjectInfo {
        key: key.to_string(),
        size: file.bytes.len() as u64,
        crc32c: file.crc32c,
        offloaded_at_ms: dlog_wire::now_ms(),
        merged: None,
    };
    manifest
        .mark_offloaded(log, log_id, segment.segment_id, object.clone())
        .await?;
    failpoint::hit("offload.after_manifest");
    metrics::histogram!(series::OFFLOAD_DURATION).record(started.elapsed());
    metrics::counter!(series::OFFLOADED_SEGMENTS).increment(1);
    metrics::counter!(series::PARQUET_WRITTEN_BYTES).increment(object.size);
    tracing::info!(
        %log,
        segment = segment.segment_id,
        key = %object.key,
        rows = file.rows,
        bytes = object.size,
        "offloaded segment"
    );
    Ok(object)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use dlog_storage::segment_file::{self, FileInfo, SegmentFile};
    use dlog_wire::codec::{Entry, EntryHeader, EntryRecord};
    use dlog_wire::names::LogName;
    use dlog_wire::record::Record;
    use parquet::arrow::ArrowWriter;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    use super::adopt_equal_object;
    use crate::error::Error;

    fn file(payloads: &[&str]) -> SegmentFile {
        let log: LogName = "ns/a".parse().unwrap();
        let entry = Entry {
            header: EntryHeader {
                log_id: 1,
                segment_id: 1,
                entry_id: 0,
                epoch: 1,
                first_offset: 0,
                lac: None,
                record_count: payloads.len() as u32,
            },
            records: (payloads.iter())
                .map(|p| EntryRecord {
                    timestamp_ms: 1_000,
                    record: Record::new(Bytes::from(p.to_string())),
                })
                .collect(),
        };
        let info = FileInfo {
            log: &log,
            segment_id: 1,
            start_offset: 0,
            end_offset: payloads.len() as u64,
            payload_schema: None,
        };
        segment_file::encode_segment(&[entry], &info).unwrap()
    }

    /// The same rows written by another writer (default properties, no
    /// dlog metadata): other bytes, same records.
    fn rewritten(bytes: &Bytes) -> Bytes {
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes.clone()).unwrap();
        let schema = reader.schema().clone();
        let mut out = Vec::new();
        let mut writer = ArrowWriter::try_new(&mut out, schema, None).unwrap();
        for batch in reader.build().unwrap() {
            writer.write(&batch.unwrap()).unwrap();
        }
        writer.close().unwrap();
        Bytes::from(out)
    }

    #[tokio::test]
    async fn an_object_with_the_same_records_in_another_layout_is_kept() {
        let key = object_store::path::Path::from("ns=ns/log=a/id=1/x.parquet");
        let ours = file(&["a", "b", "c"]);
        let existing = rewritten(&ours.bytes);
        assert_ne!(existing, ours.bytes);
        let (kept, current_layout) = adopt_equal_object(existing.clone(), ours.clone(), &key, true)
            .await
            .unwrap();
        assert_eq!(kept.bytes, existing);
        assert_eq!(kept.crc32c, crc32c::crc32c(&existing));
        assert_eq!(segment_file::format_version(&kept.bytes), None);
        assert!(
            !current_layout,
            "no dlog layout recorded: kept out of the table"
        );

        // Other records stay a conflict.
        let other = rewritten(&file(&["a", "b", "X"]).bytes);
        let err = adopt_equal_object(other, ours, &key, true)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::ObjectConflict { .. }), "{err}");
    }
}
