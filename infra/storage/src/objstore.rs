//! Object stores built from a URL: where offloaded Parquet segments live.
//!
//! | URL | store |
//! |---|---|
//! | `s3://BUCKET[/PREFIX]` | S3 or any S3-compatible server; endpoint, keys and region come from the usual `AWS_*` variables (`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ALLOW_HTTP`) or explicit options |
//! | `file:///DIR` | a local directory (standalone mode), created if missing; every put is fsynced (file and directories) before it returns |
//! | `memory://` | in memory, for unit tests |
//!
//! Every store is returned with the key prefix all objects go under.

use std::sync::Arc;

use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;

use dlog_wire::error::{Classify, ErrorKind};

/// An object store and the prefix this cluster's objects live under.
#[derive(Debug, Clone)]
pub struct ObjectStoreHandle {
    pub store: Arc<dyn ObjectStore>,
    pub prefix: Path,
    /// The URL of the store's root, without the prefix and without a
    /// trailing `/` (`s3://BUCKET`, `file:///DIR`, `memory:/`): other
    /// readers of the objects (Iceberg tables, engines) name an object as
    /// `<root>/<key>`.
    pub root: String,
}

impl ObjectStoreHandle {
    /// The URL other readers know the object at `key` by.
    pub fn url_of(&self, key: &Path) -> String {
        format!("{}/{key}", self.root)
    }

    /// The key of the object at `url` ([`Self::url_of`] undone); `None`
    /// for a URL outside this store.
    pub fn key_of(&self, url: &str) -> Option<Path> {
        let key = url.strip_prefix(&self.root)?.strip_prefix('/')?;
        Path::parse(key).ok()
    }
}

/// The URL does not name a usable object store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid object store url {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("object store {url}")]
    Build {
        url: String,
        #[source]
        source: object_store::Error,
    },
    #[error("object store {url}: create directory")]
    CreateDir {
        url: String,
        #[source]
        source: std::io::Error,
    },
}

impl Classify for Error {
    fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidUrl { .. } => ErrorKind::InvalidArgument,
            Error::Build { .. } | Error::CreateDir { .. } => ErrorKind::Unavailable,
        }
    }
}

/// How long one S3 request of the compactor may take, its body included
/// (object_store's default, kept for every other role, is 30 s). The
/// compactor uploads each file in one create-only request
/// (`dlog_compactor::offload::upload`), up to a few GiB: at 10 MB/s that is
/// minutes. A connection that cannot be set up still fails after
/// object_store's connect timeout (5 s). `AWS_TIMEOUT` overrides it.
const UPLOAD_REQUEST_TIMEOUT: &str = "10m";

/// Opens the store a URL names, configuring S3 from the environment.
pub fn open(url: &str) -> Result<ObjectStoreHandle, Error> {
    open_with(url, std::iter::empty::<(String, String)>())
}

/// [`open`], for a role that uploads whole files in one request (the
/// compactor): S3 requests may take [`UPLOAD_REQUEST_TIMEOUT`], unless the
/// environment sets `AWS_TIMEOUT`.
pub fn open_for_uploads(url: &str) -> Result<ObjectStoreHandle, Error> {
    let timeout = std::env::var_os("AWS_TIMEOUT")
        .is_none()
        .then_some(("timeout", UPLOAD_REQUEST_TIMEOUT));
    open_with(url, timeout)
}

/// Opens the store a URL names; `s3_options` (object_store's `aws_*` config
/// keys, e.g. `aws_endpoint`) override the environment for `s3://` URLs.
pub fn open_with<K, V>(
    url: &str,
    s3_options: impl IntoIterator<Item = (K, V)>,
) -> Result<ObjectStoreHandle, Error>
where
    K: AsRef<str>,
    V: Into<String>,
{
    let invalid = |reason: &str| Error::InvalidUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    if url == "memory://" || url == "memory:///" {
        return Ok(ObjectStoreHandle {
            store: Arc::new(InMemory::new()),
            prefix: Path::default(),
            root: "memory:/".to_owned(),
        });
    }
    if let Some(dir) = url.strip_prefix("file://") {
        if !dir.starts_with('/') {
            return Err(invalid("expected an absolute path: file:///DIR"));
        }
        std::fs::create_dir_all(dir).map_err(|source| Error::CreateDir {
            url: url.to_owned(),
            source,
        })?;
        // fsync: a segment is marked offloaded, and later dropped from the
        // cache nodes, once its put returned; on a local disk that put must
        // survive power loss (file and directory entries synced), as an S3
        // put does.
        let store = LocalFileSystem::new_with_prefix(dir)
            .map_err(|source| Error::Build {
                url: url.to_owned(),
                source,
            })?
            .with_fsync(true);
        return Ok(ObjectStoreHandle {
            store: Arc::new(store),
            prefix: Path::default(),
            root: format!("file://{}", dir.trim_end_matches('/')),
        });
    }
    if let Some(rest) = url.strip_prefix("s3://") {
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(invalid("no bucket: expected s3://BUCKET[/PREFIX]"));
        }
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
        for (key, value) in s3_options {
            let key = key
                .as_ref()
                .parse()
                .map_err(|_| invalid(&format!("unknown S3 option {:?}", key.as_ref())))?;
            builder = builder.with_config(key, value);
        }
        let store = builder.build().map_err(|source| Error::Build {
            url: url.to_owned(),
            source,
        })?;
        return Ok(ObjectStoreHandle {
            store: Arc::new(store),
            prefix: Path::from(prefix.trim_matches('/')),
            root: format!("s3://{bucket}"),
        });
    }
    Err(invalid(
        "expected s3://BUCKET[/PREFIX], file:///DIR or memory://",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use object_store::{ObjectStoreExt, PutPayload};

    #[test]
    fn the_uploading_handle_takes_the_longer_timeout_as_an_s3_option() {
        // The option must parse (an unknown key is an error), for S3 and
        // for the other stores alike.
        let s3 = open_for_uploads("s3://bucket/prefix").unwrap();
        assert_eq!(s3.root, "s3://bucket");
        assert!(open_for_uploads("memory://").is_ok());
        let bad = open_with("s3://bucket", [("no_such_option", "1")]);
        assert!(bad.is_err());
    }

    #[tokio::test]
    async fn file_and_memory_urls_store_objects() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}/objects", dir.path().display());
        for handle in [open(&url).unwrap(), open("memory://").unwrap()] {
            let path = handle.prefix.clone().join("a.bin");
            handle
                .store
                .put(&path, PutPayload::from(Bytes::from_static(b"abc")))
                .await
                .unwrap();
            let got = handle
                .store
                .get(&path)
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
            assert_eq!(got, Bytes::from_static(b"abc"));
        }
        assert!(dir.path().join("objects/a.bin").exists());
    }

    /// Puts one object into a fresh `file://` store; run alone under strace
    /// by [`file_objects_are_fsynced`].
    #[tokio::test]
    async fn put_one_file_object() {
        let dir = tempfile::tempdir().unwrap();
        let handle = open(&format!("file://{}/objects", dir.path().display())).unwrap();
        let path = handle.prefix.clone().join("ns=a/log=b/segment.parquet");
        handle
            .store
            .put(
                &path,
                PutPayload::from(Bytes::from_static(b"parquet bytes")),
            )
            .await
            .unwrap();
    }

    /// A Parquet file is marked offloaded (and its cache copy dropped) only
    /// after its put returned, so on a local disk the put must reach stable
    /// storage: the file and its directory are fsynced before it returns.
    #[test]
    fn file_objects_are_fsynced() {
        let Some(strace) = dlog_testkit::find_binary("strace", &[]) else {
            assert!(!dlog_testkit::is_ci(), "strace is required in CI");
            return;
        };
        let output = std::process::Command::new(strace)
            .args(["-f", "-qq", "-e", "trace=fsync,fdatasync"])
            .arg(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "objstore::tests::put_one_file_object",
                "--test-threads=1",
            ])
            .output()
            .unwrap();
        let trace = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{trace}");
        let syncs = trace
            .lines()
            .filter(|l| l.contains("fsync(") || l.contains("fdatasync("))
            .count();
        // The file, then its new parent directories.
        assert!(syncs >= 2, "{syncs} fsync calls during one put:\n{trace}");
        let handle = open("file:///tmp").unwrap();
        assert!(
            format!("{:?}", handle.store).contains("fsync: true"),
            "the local store is built with fsync: {:?}",
            handle.store
        );
    }

    #[test]
    fn bad_urls_are_refused_with_the_reason() {
        let err = open("ftp://x").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert!(err.to_string().contains("expected s3://BUCKET[/PREFIX]"));
        assert!(open("s3://").unwrap_err().to_string().contains("no bucket"));
        assert!(
            open("file://relative")
                .unwrap_err()
                .to_string()
                .contains("absolute")
        );
        let handle = open_with("s3://bucket/some/prefix/", [("aws_region", "us-east-1")]).unwrap();
        assert_eq!(handle.prefix.as_ref(), "some/prefix");
        assert_eq!(
            handle.url_of(&handle.prefix.clone().join("a.parquet")),
            "s3://bucket/some/prefix/a.parquet"
        );
        let local = open("file:///tmp/dlog-objects/").unwrap();
        assert_eq!(
            local.url_of(&Path::from("ns=a/x.parquet")),
            "file:///tmp/dlog-objects/ns=a/x.parquet"
        );
    }
}
