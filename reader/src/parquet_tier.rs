//! Reads of offloaded segments from their Parquet files on object storage.
//!
//! An object is checked whole against the manifest's size and CRC32C
//! before its footer is first used on this node (a damaged file is
//! `DATA_LOSS`, never wrong rows). Footers (with the page index) and
//! decoded row groups are cached with
//! moka and shared by every read on this node; concurrent misses make one
//! fetch. Row groups are chosen by their statistics: a read from offset X
//! (or txid X, or time T) skips every row group whose maximum is below it.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures::FutureExt;
use futures::future::BoxFuture;
use object_store::{ObjectStore, ObjectStoreExt};

use dlog_meta::manifest::ObjectInfo;
use dlog_storage::objstore::ObjectStoreHandle;
use dlog_storage::segment_file::{decode_batch, record_columns};
use dlog_wire::record::StoredRecord;
use futures::TryStreamExt;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
use parquet::arrow::async_reader::{AsyncFileReader, ParquetRecordBatchStreamBuilder};
use parquet::basic::{LogicalType, TimeUnit};
use parquet::errors::ParquetError;
use parquet::file::metadata::{PageIndexPolicy, ParquetMetaData, ParquetMetaDataReader};
use parquet::file::statistics::Statistics;

use crate::error::{Error, Result};
use crate::series;

/// A column readers position by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Column {
    Offset,
    Timestamp,
    Txid,
}

impl Column {
    fn index(self) -> usize {
        // The order of `segment_file::schema()`.
        match self {
            Column::Offset => 0,
            Column::Timestamp => 1,
            Column::Txid => 2,
        }
    }
}

/// The object-storage side of the read path.
#[derive(Debug)]
pub struct ParquetTier {
    objects: ObjectStoreHandle,
    footers: moka::future::Cache<String, Arc<ParquetMetaData>>,
    row_groups: moka::future::Cache<(String, usize), Arc<Vec<StoredRecord>>>,
}

impl ParquetTier {
    /// `cache_bytes`: capacity of the decoded row-group cache.
    pub fn new(objects: ObjectStoreHandle, cache_bytes: u64) -> ParquetTier {
        let row_groups = moka::future::Cache::builder()
            .max_capacity(cache_bytes)
            .weigher(|_, rows: &Arc<Vec<StoredRecord>>| {
                let bytes: usize = rows.iter().map(|r| r.record.size() + 48).sum();
                u32::try_from(bytes).unwrap_or(u32::MAX)
            })
            .build();
        ParquetTier {
            objects,
            footers: moka::future::Cache::new(10_000),
            row_groups,
        }
    }

    fn reader(&self, object: &ObjectInfo) -> ObjectReader {
        ObjectReader {
            store: self.objects.store.clone(),
            path: object.key.as_str().into(),
            size: object.size,
        }
    }

    /// The file's footer and page index, once the whole object was found
    /// to be the one offloaded (size and CRC32C of the manifest).
    pub async fn metadata(&self, object: &ObjectInfo) -> Result<Arc<ParquetMetaData>> {
        let load = async {
            self.verify(object).await?;
            let mut reader = self.reader(object);
            let options =
                ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Optional);
            let metadata = ArrowReaderMetadata::load_async(&mut reader, options)
                .await
                .map(|metadata| metadata.metadata().clone())
                .map_err(|source| Error::Parquet {
                    key: object.key.clone(),
                    source,
                })?;
            dlog_storage::segment_file::check_format_version(
                metadata.file_metadata().key_value_metadata(),
            )
            .map_err(|reason| Error::CorruptObject {
                key: object.key.to_string(),
                reason,
            })?;
            Ok(metadata)
        };
        self.footers
            .try_get_with(object.key.clone(), load)
            .await
            .map_err(Error::Shared)
    }

    /// Streams the whole object through CRC32C (memory: one chunk) and
    /// compares size and checksum with the manifest. Parquet page CRCs are
    /// not written by this Parquet writer, and zstd stores incompressible
    /// data raw, so without this a damaged file can decode to wrong rows.
    /// Costs one full GET per object per reader node while its footer is
    /// cached.
    async fn verify(&self, object: &ObjectInfo) -> Result<()> {
        let object_error = |source| Error::Object {
            key: object.key.clone(),
            source,
        };
        let path = object.key.as_str().into();
        let mut chunks = self
            .objects
            .store
            .get(&path)
            .await
            .map_err(object_error)?
            .into_stream();
        let (mut crc, mut size) = (0u32, 0u64);
        while let Some(chunk) = chunks.try_next().await.map_err(object_error)? {
            crc = crc32c::crc32c_append(crc, &chunk);
            size += chunk.len() as u64;
        }
        if size != object.size || crc != object.crc32c {
            return Err(Error::CorruptObject {
                key: object.key.clone(),
                reason: format!(
                    "{size} bytes with CRC32C {crc:#010x}, the manifest says {} bytes with {:#010x}",
                    object.size, object.crc32c
                ),
            });
        }
        Ok(())
    }

    /// Row groups that may hold a value ≥ `from` in `column`, in order.
    pub async fn row_groups_from(
        &self,
        object: &ObjectInfo,
        column: Column,
        from: i64,
    ) -> Result<Vec<usize>> {
        let metadata = self.metadata(object).await?;
        // Times are µs in format version 3 files, ms before; `from` is ms.
        let from = match metadata
            .file_metadata()
            .schema_descr()
            .column(column.index())
            .logical_type_ref()
        {
            Some(LogicalType::Timestamp {
                unit: TimeUnit::MICROS,
                ..
            }) => from.saturating_mul(dlog_storage::segment_file::MICROS),
            _ => from,
        };
        Ok((0..metadata.num_row_groups())
            .filter(|&i| {
                match metadata.row_group(i).column(column.index()).statistics() {
                    Some(Statistics::Int64(stats)) => {
                        stats.max_opt().is_none_or(|&max| max >= from)
                    }
                    // No statistics (e.g. all txids null): cannot prune.
                    _ => true,
                }
            })
            .collect())
    }

    /// The records of one row group, decoded.
    pub async fn row_group(
        &self,
        object: &ObjectInfo,
        index: usize,
    ) -> Result<Arc<Vec<StoredRecord>>> {
        let metadata = self.metadata(object).await?;
        let missed = std::sync::atomic::AtomicBool::new(false);
        let load = async {
            missed.store(true, std::sync::atomic::Ordering::Relaxed);
            let parquet = |source| Error::Parquet {
                key: object.key.clone(),
                source,
            };
            let options =
                ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Optional);
            let metadata = ArrowReaderMetadata::try_new(metadata, options).map_err(parquet)?;
            let builder =
                ParquetRecordBatchStreamBuilder::new_with_metadata(self.reader(object), metadata);
            // The record columns only: typed payload columns are for engines.
            let columns = record_columns(builder.parquet_schema());
            let stream = (builder.with_projection(columns))
                .with_row_groups(vec![index])
                .build()
                .map_err(parquet)?;
            let batches: Vec<_> = stream.try_collect().await.map_err(parquet)?;
            let mut records = Vec::new();
            for batch in &batches {
                records.extend(decode_batch(batch)?);
            }
            Ok(Arc::new(records))
        };
        let found = self
            .row_groups
            .try_get_with((object.key.clone(), index), load)
            .await
            .map_err(Error::Shared);
        series::count_lookup("parquet", missed.into_inner());
        found
    }
}

/// Byte ranges of one object, for the Parquet reader. The size comes from
/// the manifest, so the footer is one ranged GET.
#[derive(Debug, Clone)]
struct ObjectReader {
    store: Arc<dyn ObjectStore>,
    path: object_store::path::Path,
    size: u64,
}

fn external(err: object_store::Error) -> ParquetError {
    ParquetError::External(Box::new(err))
}

impl AsyncFileReader for ObjectReader {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        async move {
            self.store
                .get_range(&self.path, range)
                .await
                .map_err(external)
        }
        .boxed()
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<Range<u64>>,
    ) -> BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        async move {
            self.store
                .get_ranges(&self.path, &ranges)
                .await
                .map_err(external)
        }
        .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        _options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        async move {
            let size = self.size;
            let metadata = ParquetMetaDataReader::new()
                .with_page_index_policy(PageIndexPolicy::Optional)
                .load_and_finish(self, size)
                .await?;
            Ok(Arc::new(metadata))
        }
        .boxed()
    }
}
