//! Object-store paths the compactor and readers rely on, run on a real
//! S3-compatible server (s3s-fs) and on a local directory: put, get, ranged
//! get, list under a prefix, multipart upload, create-only put, delete.

use bytes::Bytes;
use dlog_storage::objstore::{self, ObjectStoreHandle};
use dlog_testkit::S3Server;
use futures::TryStreamExt;
use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};

async fn exercise(handle: ObjectStoreHandle) {
    let store = &handle.store;
    let key = |name: &str| handle.prefix.clone().join("ns=a").join("log=b").join(name);

    let first = key("00000000000000000000-00000000000000000010.parquet");
    let body = Bytes::from((0..=255u8).cycle().take(10_000).collect::<Vec<u8>>());
    store
        .put(&first, PutPayload::from(body.clone()))
        .await
        .unwrap();
    let got = store.get(&first).await.unwrap().bytes().await.unwrap();
    assert_eq!(got, body);
    let range = store.get_range(&first, 100..200).await.unwrap();
    assert_eq!(range, body.slice(100..200));

    // Create-only: a retry with the same key is refused, the object unchanged.
    let create = PutOptions {
        mode: PutMode::Create,
        ..PutOptions::default()
    };
    let second = key("00000000000000000010-00000000000000000020.parquet");
    store
        .put_opts(&second, PutPayload::from_static(b"v1"), create.clone())
        .await
        .unwrap();
    let again = store
        .put_opts(&second, PutPayload::from_static(b"v2"), create)
        .await;
    assert!(
        matches!(again, Err(object_store::Error::AlreadyExists { .. })),
        "got {again:?}"
    );
    assert_eq!(
        store.get(&second).await.unwrap().bytes().await.unwrap(),
        Bytes::from_static(b"v1")
    );

    // Multipart: 2 parts of 5 MiB + a tail.
    let big = key("big.parquet");
    let mut upload = store.put_multipart(&big).await.unwrap();
    let part = Bytes::from(vec![7u8; 5 * 1024 * 1024]);
    upload
        .put_part(PutPayload::from(part.clone()))
        .await
        .unwrap();
    upload.put_part(PutPayload::from(part)).await.unwrap();
    upload
        .put_part(PutPayload::from_static(b"tail"))
        .await
        .unwrap();
    upload.complete().await.unwrap();
    let meta = store.head(&big).await.unwrap();
    assert_eq!(meta.size, 10 * 1024 * 1024 + 4);

    // Listing is in key order, so offset-named files come out in offset order.
    let listed: Vec<String> = store
        .list(Some(&handle.prefix.clone().join("ns=a").join("log=b")))
        .map_ok(|m| m.location.filename().unwrap_or_default().to_owned())
        .try_collect::<Vec<_>>()
        .await
        .unwrap();
    let mut sorted = listed.clone();
    sorted.sort();
    assert_eq!(sorted.len(), 3);
    assert!(sorted[0].starts_with("00000000000000000000-"));

    store.delete(&first).await.unwrap();
    assert!(matches!(
        store.get(&first).await,
        Err(object_store::Error::NotFound { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_server() {
    let Some(server) = S3Server::start() else {
        return;
    };
    exercise(server.object_store("cluster-a")).await;
    // The objects really are on the server's disk.
    let on_disk = server
        .dir()
        .join("root")
        .join(S3Server::BUCKET)
        .join("cluster-a/ns=a/log=b/big.parquet");
    assert!(on_disk.exists(), "{} missing", on_disk.display());
}

#[tokio::test]
async fn local_directory() {
    let dir = tempfile::tempdir().unwrap();
    let handle = objstore::open(&format!("file://{}", dir.path().display())).unwrap();
    exercise(handle).await;
}
