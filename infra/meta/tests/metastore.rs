//! MetaStore conformance suite: every case runs on the embedded backend and
//! on a real etcd started for the test (`etcd::` and `embedded::` prefixes in
//! the test names).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use dlog_meta::metastore::embedded::EmbeddedStore;
use dlog_meta::metastore::{
    CmpOp, Compare, CompareTarget, Error, LeaseKeeper, SharedMetaStore, Txn, TxnOp, WatchEvent,
};
use dlog_testkit::EtcdServer;
use futures::StreamExt;

/// Where a case's keys live: a fresh prefix, so cases never see each other.
struct Fixture {
    store: SharedMetaStore,
    prefix: String,
    _guard: Box<dyn std::any::Any + Send>,
}

impl Fixture {
    fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }
}

async fn embedded() -> Option<Fixture> {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).await.unwrap();
    Some(Fixture {
        store: Arc::new(store),
        prefix: "/t/".into(),
        _guard: Box::new(dir),
    })
}

async fn etcd() -> Option<Fixture> {
    let server = EtcdServer::start()?;
    let store = server.store().await;
    Some(Fixture {
        store,
        prefix: format!("/{}/", dlog_testkit::unique_name("t")),
        _guard: Box::new(server),
    })
}

async fn next_event(stream: &mut dlog_meta::metastore::WatchStream) -> WatchEvent {
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("watch event within 10 s")
        .expect("watch stream open")
        .expect("watch event, not error")
}

async fn wait_until_gone(f: &Fixture, key: &str, within: Duration) -> Duration {
    let start = Instant::now();
    while f.store.get(key).await.unwrap().is_some() {
        assert!(
            start.elapsed() < within,
            "{key} still present after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    start.elapsed()
}

async fn put_get_and_revisions(f: Fixture) {
    let a = f.key("a");
    let r1 = f.store.put(&a, Bytes::from("1")).await.unwrap();
    let kv = f.store.get(&a).await.unwrap().unwrap();
    assert_eq!(kv.value, Bytes::from("1"));
    assert_eq!(
        (kv.create_revision, kv.mod_revision, kv.version),
        (r1, r1, 1)
    );

    let r2 = f.store.put(&a, Bytes::from("2")).await.unwrap();
    assert!(r2 > r1);
    let kv = f.store.get(&a).await.unwrap().unwrap();
    assert_eq!(
        (kv.create_revision, kv.mod_revision, kv.version),
        (r1, r2, 2)
    );

    f.store.put(&f.key("c"), Bytes::from("c")).await.unwrap();
    f.store.put(&f.key("b"), Bytes::from("b")).await.unwrap();
    f.store
        .put(
            &format!("{}x", f.prefix.trim_end_matches('/')),
            Bytes::from("outside"),
        )
        .await
        .unwrap();
    let range = f.store.range(&f.prefix, true).await.unwrap();
    let keys: Vec<_> = range.kvs.iter().map(|kv| kv.key.clone()).collect();
    assert_eq!(keys, vec![f.key("a"), f.key("b"), f.key("c")]);
    assert!(range.revision >= r2);

    assert!(f.store.delete(&a).await.unwrap());
    assert!(!f.store.delete(&a).await.unwrap());
    assert_eq!(f.store.get(&a).await.unwrap(), None);
    // Re-created: a new life, version starts again.
    let r3 = f.store.put(&a, Bytes::from("3")).await.unwrap();
    let kv = f.store.get(&a).await.unwrap().unwrap();
    assert_eq!((kv.create_revision, kv.version), (r3, 1));
}

async fn txn_compares(f: Fixture) {
    let k = f.key("k");
    let create = Txn::new()
        .when([Compare::absent(&k)])
        .and_then([TxnOp::put(&k, "v1")])
        .or_else([TxnOp::get(&k)]);
    let first = f.store.txn(create.clone()).await.unwrap();
    assert!(first.succeeded);
    assert!(first.gets.is_empty());
    let second = f.store.txn(create).await.unwrap();
    assert!(
        !second.succeeded,
        "absent compare must fail once the key exists"
    );
    let seen = second.gets[0].clone().expect("failure branch get");
    assert_eq!(seen.value, Bytes::from("v1"));
    assert_eq!(
        second.revision, first.revision,
        "a failed txn writes nothing"
    );

    let wrong_value = Txn::new()
        .when([Compare::value_is(&k, "nope")])
        .and_then([TxnOp::put(&k, "x")]);
    assert!(!f.store.txn(wrong_value).await.unwrap().succeeded);
    let right_value = Txn::new()
        .when([Compare::value_is(&k, "v1")])
        .and_then([TxnOp::put(&k, "v2"), TxnOp::get(&k)]);
    assert!(f.store.txn(right_value).await.unwrap().succeeded);

    let kv = f.store.get(&k).await.unwrap().unwrap();
    let stale = Txn::new()
        .when([Compare::mod_revision_is(&k, kv.mod_revision - 1)])
        .and_then([TxnOp::put(&k, "lost")]);
    assert!(!f.store.txn(stale).await.unwrap().succeeded);
    let fresh = Txn::new()
        .when([
            Compare::mod_revision_is(&k, kv.mod_revision),
            Compare::new(&k, CmpOp::Greater, CompareTarget::Version(1)),
            Compare::new(
                &k,
                CmpOp::Less,
                CompareTarget::CreateRevision(kv.mod_revision + 1),
            ),
            Compare::new(&k, CmpOp::NotEqual, CompareTarget::Value(Bytes::from("v1"))),
        ])
        .and_then([TxnOp::put(&k, "v3")]);
    assert!(f.store.txn(fresh).await.unwrap().succeeded);
    assert_eq!(
        f.store.get(&k).await.unwrap().unwrap().value,
        Bytes::from("v3")
    );

    // An absent key never equals a value.
    let absent_value = Txn::new()
        .when([Compare::value_is(f.key("missing"), "")])
        .and_then([TxnOp::put(f.key("missing"), "x")]);
    assert!(!f.store.txn(absent_value).await.unwrap().succeeded);
}

async fn txn_multi_key_and_delete_prefix(f: Fixture) {
    let rev = f
        .store
        .txn(Txn::new().and_then([
            TxnOp::put(f.key("d/1"), "1"),
            TxnOp::put(f.key("d/2"), "2"),
            TxnOp::put(f.key("e"), "e"),
        ]))
        .await
        .unwrap()
        .revision;
    for key in ["d/1", "d/2", "e"] {
        let kv = f.store.get(&f.key(key)).await.unwrap().unwrap();
        assert_eq!(kv.mod_revision, rev, "one txn, one revision");
    }
    f.store
        .txn(Txn::new().and_then([TxnOp::DeletePrefix {
            prefix: f.key("d/"),
        }]))
        .await
        .unwrap();
    assert!(
        f.store
            .range(&f.key("d/"), true)
            .await
            .unwrap()
            .kvs
            .is_empty()
    );
    assert!(f.store.get(&f.key("e")).await.unwrap().is_some());
}

/// Many clients race compare-and-swap increments: none may be lost.
async fn concurrent_cas_loses_no_update(f: Fixture) {
    let counter = f.key("counter");
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let store = f.store.clone();
        let counter = counter.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..5 {
                loop {
                    let current = store.get(&counter).await.unwrap();
                    let (value, rev) = match &current {
                        Some(kv) => (
                            std::str::from_utf8(&kv.value)
                                .unwrap()
                                .parse::<u64>()
                                .unwrap(),
                            kv.mod_revision,
                        ),
                        None => (0, 0),
                    };
                    let txn = Txn::new()
                        .when([Compare::mod_revision_is(&counter, rev)])
                        .and_then([TxnOp::put(&counter, (value + 1).to_string())]);
                    if store.txn(txn).await.unwrap().succeeded {
                        break;
                    }
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let kv = f.store.get(&counter).await.unwrap().unwrap();
    assert_eq!(kv.value, Bytes::from("40"));
    assert_eq!(kv.version, 40);
}

async fn watch_replays_history_then_follows(f: Fixture) {
    let r1 = f.store.put(&f.key("w/a"), Bytes::from("1")).await.unwrap();
    f.store
        .put(&f.key("other"), Bytes::from("x"))
        .await
        .unwrap();
    let r2 = f.store.put(&f.key("w/b"), Bytes::from("2")).await.unwrap();
    let mut stream = f.store.watch(&f.key("w/"), Some(r1)).await.unwrap();
    let first = next_event(&mut stream).await;
    assert_eq!((first.key(), first.revision()), (f.key("w/a").as_str(), r1));
    let second = next_event(&mut stream).await;
    assert_eq!(
        (second.key(), second.revision()),
        (f.key("w/b").as_str(), r2)
    );

    f.store
        .put(&f.key("other"), Bytes::from("y"))
        .await
        .unwrap();
    let r3 = f.store.put(&f.key("w/a"), Bytes::from("3")).await.unwrap();
    assert!(f.store.delete(&f.key("w/b")).await.unwrap());
    match next_event(&mut stream).await {
        WatchEvent::Put(kv) => {
            assert_eq!(
                (kv.key, kv.value, kv.mod_revision),
                (f.key("w/a"), Bytes::from("3"), r3)
            );
        }
        other => panic!("expected a put, got {other:?}"),
    }
    match next_event(&mut stream).await {
        WatchEvent::Delete { key, revision } => {
            assert_eq!(key, f.key("w/b"));
            assert!(revision > r3);
        }
        other => panic!("expected a delete, got {other:?}"),
    }
}

async fn watch_without_start_sees_only_new_changes(f: Fixture) {
    f.store
        .put(&f.key("n/old"), Bytes::from("1"))
        .await
        .unwrap();
    let mut stream = f.store.watch(&f.key("n/"), None).await.unwrap();
    let r = f
        .store
        .put(&f.key("n/new"), Bytes::from("2"))
        .await
        .unwrap();
    let event = next_event(&mut stream).await;
    assert_eq!(
        (event.key(), event.revision()),
        (f.key("n/new").as_str(), r)
    );
}

async fn lease_expiry_deletes_keys_and_tells_watchers(f: Fixture) {
    let lease = f.store.lease_grant(Duration::from_secs(2)).await.unwrap();
    let key = f.key("leased");
    f.store
        .txn(Txn::new().and_then([TxnOp::put_with_lease(&key, "x", lease)]))
        .await
        .unwrap();
    let kv = f.store.get(&key).await.unwrap().unwrap();
    assert_eq!(kv.lease, Some(lease));
    let mut stream = f
        .store
        .watch(&key, Some(kv.mod_revision + 1))
        .await
        .unwrap();
    let gone_after = wait_until_gone(&f, &key, Duration::from_secs(15)).await;
    assert!(
        gone_after >= Duration::from_millis(1000),
        "expired too early: {gone_after:?}"
    );
    match next_event(&mut stream).await {
        WatchEvent::Delete { key: deleted, .. } => assert_eq!(deleted, key),
        other => panic!("expected the expiry delete, got {other:?}"),
    }
    let keep_alive = f.store.lease_keep_alive(lease).await;
    assert!(
        matches!(keep_alive, Err(Error::LeaseNotFound(id)) if id == lease),
        "got {keep_alive:?}"
    );
    let put_on_dead_lease = f
        .store
        .txn(Txn::new().and_then([TxnOp::put_with_lease(f.key("late"), "x", lease)]))
        .await;
    assert!(
        matches!(put_on_dead_lease, Err(Error::LeaseNotFound(id)) if id == lease),
        "got {put_on_dead_lease:?}"
    );
}

async fn keep_alive_holds_a_lease_and_revoke_ends_it(f: Fixture) {
    let keeper = LeaseKeeper::start(f.store.clone(), Duration::from_secs(2))
        .await
        .unwrap();
    let key = f.key("kept");
    f.store
        .txn(Txn::new().and_then([TxnOp::put_with_lease(&key, "x", keeper.lease)]))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        f.store.get(&key).await.unwrap().is_some(),
        "a kept lease must not expire"
    );
    assert!(!keeper.lost.is_cancelled());
    let ttl = f.store.lease_keep_alive(keeper.lease).await.unwrap();
    assert!(ttl >= Duration::from_secs(1));

    f.store.lease_revoke(keeper.lease).await.unwrap();
    assert_eq!(
        f.store.get(&key).await.unwrap(),
        None,
        "revoke deletes at once"
    );
    tokio::time::timeout(Duration::from_secs(10), keeper.lost.cancelled())
        .await
        .expect("the keeper notices its lease is gone");
    assert!(matches!(
        f.store.lease_revoke(keeper.lease).await,
        Err(Error::LeaseNotFound(_))
    ));
}

/// A prefix whose keys and values pass the 4 MiB of one etcd answer
/// (gRPC's default message limit) is read whole, in key order, and keys
/// just outside it are not (before: "decoded message length too large",
/// so an owner could not read a log of some 10 000 segments).
async fn a_prefix_larger_than_one_answer_is_read_whole(f: Fixture) {
    let value = Bytes::from(vec![b'v'; 2048]);
    let (keys, per_txn) = (2600, 100);
    let mut last = 0;
    for batch in 0..keys / per_txn {
        let puts = (0..per_txn).map(|i| {
            TxnOp::put(
                f.key(&format!("p/{:05}", batch * per_txn + i)),
                value.clone(),
            )
        });
        last = f
            .store
            .txn(Txn::new().and_then(puts))
            .await
            .unwrap()
            .revision;
    }
    // Beside the prefix: "p0" sorts right after "p/"'s range.
    f.store.put(&f.key("p0"), Bytes::from("x")).await.unwrap();
    f.store.put(&f.key("o"), Bytes::from("x")).await.unwrap();

    let range = f.store.range(&f.key("p/"), true).await.unwrap();
    assert_eq!(range.kvs.len(), keys, "keys read");
    assert!(range.revision > last, "{} read at {last}", range.revision);
    let expected: Vec<String> = (0..keys).map(|i| f.key(&format!("p/{i:05}"))).collect();
    let read: Vec<&str> = range.kvs.iter().map(|kv| kv.key.as_str()).collect();
    assert!(read == expected, "keys out of order or missing");
    assert!(range.kvs.iter().all(|kv| kv.value == value));
}

macro_rules! conformance {
    ($backend:ident) => {
        mod $backend {

            macro_rules! case {
                ($name:ident) => {
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $name() {
                        let Some(fixture) = super::$backend().await else {
                            return;
                        };
                        super::$name(fixture).await;
                    }
                };
            }

            case!(put_get_and_revisions);
            case!(txn_compares);
            case!(txn_multi_key_and_delete_prefix);
            case!(concurrent_cas_loses_no_update);
            case!(watch_replays_history_then_follows);
            case!(watch_without_start_sees_only_new_changes);
            case!(lease_expiry_deletes_keys_and_tells_watchers);
            case!(keep_alive_holds_a_lease_and_revoke_ends_it);
            case!(a_prefix_larger_than_one_answer_is_read_whole);
        }
    };
}

conformance!(embedded);
conformance!(etcd);
