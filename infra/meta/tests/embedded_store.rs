//! What only the embedded backend must show: it survives restarts (state,
//! revisions, leases), cuts a torn WAL tail, snapshots, and refuses a second
//! process on the same directory.

use std::io::Write;
use std::time::Duration;

use bytes::Bytes;
use dlog_meta::metastore::embedded::EmbeddedStore;
use dlog_meta::metastore::{Error, MetaStore, Txn, TxnOp};

#[tokio::test]
async fn state_and_revisions_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (rev, lease) = {
        let store = EmbeddedStore::open(dir.path()).await.unwrap();
        store.put("/a", Bytes::from("1")).await.unwrap();
        let rev = store.put("/a", Bytes::from("2")).await.unwrap();
        store.put("/gone", Bytes::from("x")).await.unwrap();
        store.delete("/gone").await.unwrap();
        let lease = store.lease_grant(Duration::from_secs(30)).await.unwrap();
        store
            .txn(Txn::new().and_then([TxnOp::put_with_lease("/leased", "y", lease)]))
            .await
            .unwrap();
        (rev, lease)
    };
    let store = EmbeddedStore::open(dir.path()).await.unwrap();
    let kv = store.get("/a").await.unwrap().unwrap();
    assert_eq!(
        (kv.value, kv.mod_revision, kv.version),
        (Bytes::from("2"), rev, 2)
    );
    assert_eq!(store.get("/gone").await.unwrap(), None);
    assert_eq!(
        store.get("/leased").await.unwrap().unwrap().lease,
        Some(lease)
    );
    // The lease came back alive, and new leases never reuse its id.
    store.lease_keep_alive(lease).await.unwrap();
    let next = store.lease_grant(Duration::from_secs(30)).await.unwrap();
    assert!(next > lease);
    // Revisions continue; they never go back.
    let later = store.put("/b", Bytes::from("b")).await.unwrap();
    assert!(later > rev + 2);
}

#[tokio::test]
async fn a_torn_wal_tail_is_cut_and_earlier_records_kept() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = EmbeddedStore::open(dir.path()).await.unwrap();
        store.put("/kept", Bytes::from("1")).await.unwrap();
    }
    // A crash in the middle of the next append leaves half a frame.
    let wal = dir.path().join("meta.wal");
    let good_len = std::fs::metadata(&wal).unwrap().len();
    std::fs::OpenOptions::new()
        .append(true)
        .open(&wal)
        .unwrap()
        .write_all(&[200, 0, 0, 0, 1, 2, 3, 4, b'{'])
        .unwrap();
    let store = EmbeddedStore::open(dir.path()).await.unwrap();
    assert_eq!(
        store.get("/kept").await.unwrap().unwrap().value,
        Bytes::from("1")
    );
    assert_eq!(std::fs::metadata(&wal).unwrap().len(), good_len);
    store.put("/after", Bytes::from("2")).await.unwrap();
    drop(store);
    let store = EmbeddedStore::open(dir.path()).await.unwrap();
    assert!(store.get("/after").await.unwrap().is_some());
}

#[tokio::test]
async fn snapshots_keep_everything_and_compact_the_wal() {
    let dir = tempfile::tempdir().unwrap();
    let last_rev = {
        let store = EmbeddedStore::open(dir.path()).await.unwrap();
        let mut last = 0;
        // More than one snapshot interval (10 000 records).
        for i in 0..10_050u32 {
            last = store
                .put(&format!("/k/{}", i % 100), Bytes::from(i.to_string()))
                .await
                .unwrap();
        }
        last
    };
    assert!(dir.path().join("meta.snapshot").exists());
    let wal_len = std::fs::metadata(dir.path().join("meta.wal"))
        .unwrap()
        .len();
    assert!(
        wal_len < 100 * 1024,
        "WAL was not truncated: {wal_len} bytes"
    );
    let store = EmbeddedStore::open(dir.path()).await.unwrap();
    let range = store.range("/k/", true).await.unwrap();
    assert_eq!(range.kvs.len(), 100);
    assert_eq!(range.revision, last_rev);
    let kv = store.get("/k/49").await.unwrap().unwrap();
    assert_eq!(kv.value, Bytes::from("10049"));
    // A watch from before the snapshot cannot be served any more.
    assert!(matches!(
        store.watch("/k/", Some(2)).await,
        Err(Error::Compacted { .. })
    ));
}

#[tokio::test]
async fn a_second_process_cannot_open_the_same_directory() {
    let dir = tempfile::tempdir().unwrap();
    let _first = EmbeddedStore::open(dir.path()).await.unwrap();
    let err = EmbeddedStore::open(dir.path()).await.unwrap_err();
    assert!(err.to_string().contains("lock directory"), "{err}");
}
