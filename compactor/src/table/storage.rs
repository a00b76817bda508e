//! Iceberg's file access over the project's object store: the table's
//! metadata, manifest lists and manifests are written and read through
//! the same `object_store` client (credentials, endpoint, fsync of
//! `file://`) as the Parquet files, instead of a second client stack.
//!
//! An Iceberg location is `<root>/<key>`, where `<root>` is the store's URL
//! without the cluster prefix ([`ObjectStoreHandle::root`]: `s3://BUCKET`
//! or `file:///DIR`); the key is the object's path in the store. A location
//! under another root is refused, never mapped somewhere else.
//!
//! Iceberg asks storages to be serializable (to ship them to other
//! processes); this one holds a live client, so it refuses to be.

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use dlog_storage::objstore::ObjectStoreHandle;
use futures::StreamExt;
use futures::stream::BoxStream;
use iceberg::io::{
    FileMetadata, FileRead, FileWrite, InputFile, OutputFile, Storage, StorageConfig,
    StorageFactory,
};
use iceberg::{Error, ErrorKind, Result};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

/// The storage of every table: the cluster's object store.
#[derive(Debug, Clone)]
pub struct ObjectStorage {
    objects: ObjectStoreHandle,
}

impl ObjectStorage {
    pub fn new(objects: ObjectStoreHandle) -> ObjectStorage {
        ObjectStorage { objects }
    }

    /// The store's key of an Iceberg location.
    fn key(&self, location: &str) -> Result<Path> {
        let root = &self.objects.root;
        location
            .strip_prefix(root)
            .and_then(|rest| rest.strip_prefix('/'))
            .map(Path::from)
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::DataInvalid,
                    format!("location {location} is outside the object store {root}"),
                )
            })
    }

    fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.objects.store
    }
}

/// An object store error as Iceberg's, naming the location.
fn failed(what: &str, location: &str, err: object_store::Error) -> Error {
    let kind = match err {
        object_store::Error::NotFound { .. } => ErrorKind::DataInvalid,
        _ => ErrorKind::Unexpected,
    };
    Error::new(kind, format!("{what} {location}")).with_source(err)
}

#[async_trait]
#[typetag::serde]
impl Storage for ObjectStorage {
    async fn exists(&self, path: &str) -> Result<bool> {
        match self.store().head(&self.key(path)?).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(err) => Err(failed("head", path, err)),
        }
    }

    async fn metadata(&self, path: &str) -> Result<FileMetadata> {
        let meta =
            (self.store().head(&self.key(path)?).await).map_err(|e| failed("head", path, e))?;
        Ok(FileMetadata { size: meta.size })
    }

    async fn read(&self, path: &str) -> Result<Bytes> {
        let got =
            (self.store().get(&self.key(path)?).await).map_err(|e| failed("read", path, e))?;
        got.bytes().await.map_err(|e| failed("read", path, e))
    }

    async fn reader(&self, path: &str) -> Result<Box<dyn FileRead>> {
        Ok(Box::new(RangeReader {
            store: self.store().clone(),
            key: self.key(path)?,
            location: path.to_owned(),
        }))
    }

    async fn write(&self, path: &str, bs: Bytes) -> Result<()> {
        (self
            .store()
            .put(&self.key(path)?, PutPayload::from(bs))
            .await)
            .map(|_| ())
            .map_err(|e| failed("write", path, e))
    }

    async fn writer(&self, path: &str) -> Result<Box<dyn FileWrite>> {
        Ok(Box::new(BufferedWriter {
            store: self.store().clone(),
            key: self.key(path)?,
            location: path.to_owned(),
            buffer: Vec::new(),
        }))
    }

    async fn delete(&self, path: &str) -> Result<()> {
        match self.store().delete(&self.key(path)?).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(err) => Err(failed("delete", path, err)),
        }
    }

    async fn delete_prefix(&self, path: &str) -> Result<()> {
        let prefix = self.key(path)?;
        let listed: Vec<_> = self.store().list(Some(&prefix)).collect().await;
        for object in listed {
            let object = object.map_err(|e| failed("list", path, e))?;
            match self.store().delete(&object.location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(err) => return Err(failed("delete", path, err)),
            }
        }
        Ok(())
    }

    async fn delete_stream(&self, mut paths: BoxStream<'static, String>) -> Result<()> {
        while let Some(path) = paths.next().await {
            self.delete(&path).await?;
        }
        Ok(())
    }

    fn new_input(&self, path: &str) -> Result<InputFile> {
        Ok(InputFile::new(Arc::new(self.clone()), path.to_owned()))
    }

    fn new_output(&self, path: &str) -> Result<OutputFile> {
        Ok(OutputFile::new(Arc::new(self.clone()), path.to_owned()))
    }
}

/// Ranged reads of one object.
struct RangeReader {
    store: Arc<dyn ObjectStore>,
    key: Path,
    location: String,
}

#[async_trait]
impl FileRead for RangeReader {
    async fn read(&self, range: Range<u64>) -> Result<Bytes> {
        (self.store.get_range(&self.key, range).await)
            .map_err(|e| failed("read", &self.location, e))
    }
}

/// Collects a file (a manifest: kilobytes) and puts it whole on close.
struct BufferedWriter {
    store: Arc<dyn ObjectStore>,
    key: Path,
    location: String,
    buffer: Vec<u8>,
}

#[async_trait]
impl FileWrite for BufferedWriter {
    async fn write(&mut self, bs: Bytes) -> Result<()> {
        self.buffer.extend_from_slice(&bs);
        Ok(())
    }

    async fn close(&mut self) -> Result<()> {
        let bytes = Bytes::from(std::mem::take(&mut self.buffer));
        (self.store.put(&self.key, PutPayload::from(bytes)).await)
            .map(|_| ())
            .map_err(|e| failed("write", &self.location, e))
    }
}

/// Hands every catalog-loaded table the one [`ObjectStorage`].
#[derive(Debug, Clone)]
pub struct ObjectStorageFactory {
    storage: ObjectStorage,
}

impl ObjectStorageFactory {
    pub fn new(objects: ObjectStoreHandle) -> ObjectStorageFactory {
        ObjectStorageFactory {
            storage: ObjectStorage::new(objects),
        }
    }
}

#[typetag::serde]
impl StorageFactory for ObjectStorageFactory {
    fn build(&self, _config: &StorageConfig) -> Result<Arc<dyn Storage>> {
        Ok(Arc::new(self.storage.clone()))
    }
}

/// Both types hold a live client: there is nothing to serialize.
macro_rules! not_serializable {
    ($ty:ty) => {
        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(
                &self,
                _: S,
            ) -> std::result::Result<S::Ok, S::Error> {
                Err(serde::ser::Error::custom(concat!(
                    stringify!($ty),
                    " holds a live object store client and is not serializable"
                )))
            }
        }
        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(
                _: D,
            ) -> std::result::Result<Self, D::Error> {
                Err(serde::de::Error::custom(concat!(
                    stringify!($ty),
                    " cannot be deserialized: it is built from a live object store client"
                )))
            }
        }
    };
}
not_serializable!(ObjectStorage);
not_serializable!(ObjectStorageFactory);
