//! Manifest tests on a real etcd and on the embedded store: log life cycle,
//! epoch fencing, ownership races, segment transitions, trim, subscriptions,
//! node registration.

use std::sync::Arc;
use std::time::Duration;

use dlog_meta::manifest::{
    Error, Fence, Manifest, NamespaceConfig, NodeInfo, ObjectInfo, Replication, Role, SealInfo,
    SegmentMeta, SegmentState,
};
use dlog_meta::metastore::embedded::EmbeddedStore;
use dlog_testkit::EtcdServer;
use dlog_wire::error::{Classify, ErrorKind};
use dlog_wire::ids::{Epoch, LogId, Offset, SegmentId};
use dlog_wire::names::{LogName, Namespace};
use dlog_wire::payload_schema::PayloadSchema;

struct Fixture {
    manifest: Manifest,
    _guard: Box<dyn std::any::Any + Send>,
}

async fn embedded() -> Option<Fixture> {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open(dir.path()).await.unwrap());
    Some(Fixture {
        manifest: Manifest::new(store, "test"),
        _guard: Box::new(dir),
    })
}

async fn etcd() -> Option<Fixture> {
    let server = EtcdServer::start()?;
    let store = server.store().await;
    Some(Fixture {
        manifest: Manifest::new(store, &dlog_testkit::unique_name("c")),
        _guard: Box::new(server),
    })
}

fn name(s: &str) -> LogName {
    s.parse().unwrap()
}

fn node(id: &str) -> NodeInfo {
    NodeInfo {
        id: id.into(),
        address: format!("http://{id}:7070"),
        zone: String::new(),
        capacity: 0,
        kafka: None,
    }
}

fn open_segment(start_offset: u64) -> SegmentMeta {
    SegmentMeta::open(
        0,
        vec!["c1".into(), "c2".into(), "c3".into()],
        3,
        2,
        start_offset,
    )
}

async fn log_life_cycle(f: Fixture) {
    let m = &f.manifest;
    let a = m.create_log(&name("ns/a")).await.unwrap();
    let b = m.create_log(&name("ns/b")).await.unwrap();
    m.create_log(&name("other/c")).await.unwrap();
    assert!(b.log_id > a.log_id, "log ids increase");

    let err = m.create_log(&name("ns/a")).await.unwrap_err();
    assert_eq!(err.to_string(), "log ns/a already exists");
    assert_eq!(err.kind(), ErrorKind::AlreadyExists);

    let all: Vec<String> = m
        .list_logs("")
        .await
        .unwrap()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(all, ["ns/a", "ns/b", "other/c"]);
    let ns: Vec<String> = m
        .list_logs("ns/")
        .await
        .unwrap()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(ns, ["ns/a", "ns/b"]);

    let deleted = m.delete_log(&name("ns/a")).await.unwrap();
    let listed: Vec<String> = m
        .list_logs("ns/")
        .await
        .unwrap()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(listed, ["ns/b"]);
    let err = m.create_log(&name("ns/a")).await.unwrap_err();
    assert_eq!(err.to_string(), "log ns/a is being deleted");
    assert!(m.purge_log(&name("ns/a"), deleted.log_id).await.unwrap());
    assert!(
        !m.purge_log(&name("ns/a"), deleted.log_id).await.unwrap(),
        "a second purge finds nothing left"
    );
    let again = m.create_log(&name("ns/a")).await.unwrap();
    assert!(again.log_id > b.log_id, "a re-created log gets a new id");

    let err = m.log(&name("ns/missing")).await.unwrap_err();
    assert_eq!(err.to_string(), "log ns/missing not found");
    assert_eq!(err.kind(), ErrorKind::NotFound);
}

async fn namespace_config(f: Fixture) {
    let m = &f.manifest;
    let ns = Namespace::new("tenant").unwrap();
    assert_eq!(m.namespace(&ns).await.unwrap(), NamespaceConfig::default());
    let config = NamespaceConfig {
        retention_ms: Some(3_600_000),
        replication: Replication::SINGLE,
        ..NamespaceConfig::default()
    };
    m.put_namespace(&ns, &config).await.unwrap();
    assert_eq!(m.namespace(&ns).await.unwrap(), config);
    m.create_log(&name("tenant/x")).await.unwrap();
    assert_eq!(m.log_config(&name("tenant/x")).await.unwrap(), config);

    let bad = NamespaceConfig {
        replication: Replication {
            ensemble: 2,
            write_quorum: 3,
            ack_quorum: 2,
        },
        ..NamespaceConfig::default()
    };
    let err = m.put_namespace(&ns, &bad).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert_eq!(
        err.to_string(),
        "invalid namespace configuration: replication 2/3/2 must satisfy ensemble >= write quorum >= ack quorum >= 1"
    );
}

/// A namespace's payload schema lives under a key of its own: a node of
/// the release before typed payloads writes the namespace's settings back
/// without the field it does not know, and the schema (with its field id
/// history) must survive that.
async fn a_payload_schema_survives_a_settings_write_that_does_not_know_it(f: Fixture) {
    let m = &f.manifest;
    let ns = Namespace::new("typed").unwrap();
    let first = PayloadSchema::declare(
        r#"{"fields":[{"name":"user","type":"string"},{"name":"amount","type":"int64"}]}"#,
        None,
    )
    .unwrap();
    // `amount` removed: its id 1001 stays taken.
    let schema = PayloadSchema::declare(
        r#"{"fields":[{"name":"user","type":"string"}]}"#,
        Some(&first),
    )
    .unwrap();
    let config = NamespaceConfig {
        retention_ms: Some(3_600_000),
        payload_schema: Some(schema.clone()),
        ..NamespaceConfig::default()
    };
    m.put_namespace(&ns, &config).await.unwrap();
    assert_eq!(m.namespace(&ns).await.unwrap(), config);

    // What an earlier release writes: its own fields, read and written back.
    let earlier = serde_json::json!({
        "retention_ms": 7_200_000,
        "roll": {"max_bytes": 268435456, "max_records": 10000000, "max_age_ms": 600000},
        "replication": {"ensemble": 3, "write_quorum": 3, "ack_quorum": 2},
    });
    let key = format!("{}ns/typed", m.root());
    m.store()
        .put(&key, serde_json::to_vec(&earlier).unwrap().into())
        .await
        .unwrap();
    let now = m.namespace(&ns).await.unwrap();
    assert_eq!(now.retention_ms, Some(7_200_000));
    assert_eq!(
        now.payload_schema.as_ref(),
        Some(&schema),
        "the schema and its removed fields outlive the earlier release's write"
    );

    // Declared again later: `amount` comes back under its old id, never
    // under a new one (a table would hold id 1001 under that name).
    let again = PayloadSchema::declare(
        r#"{"fields":[{"name":"user","type":"string"},{"name":"amount","type":"int64"}]}"#,
        now.payload_schema.as_ref(),
    )
    .unwrap();
    assert_eq!(again, first);
}

/// Changes decided on a namespace as read are written only if neither of
/// its keys moved since; a schema written inside the settings (the release
/// before its own key) is read, and moved to its key by the next change.
async fn namespace_changes_compare_both_keys_and_move_an_inline_schema(f: Fixture) {
    let m = &f.manifest;
    let ns = Namespace::new("inline").unwrap();
    let schema =
        PayloadSchema::declare(r#"{"fields":[{"name":"user","type":"string"}]}"#, None).unwrap();
    let inline = NamespaceConfig {
        payload_schema: Some(schema.clone()),
        ..NamespaceConfig::default()
    };
    let key = format!("{}ns/inline", m.root());
    m.store()
        .put(&key, serde_json::to_vec(&inline).unwrap().into())
        .await
        .unwrap();
    let (read, revisions) = m.namespace_versioned(&ns).await.unwrap();
    assert_eq!(read, inline);
    assert!(revisions.settings.is_some() && revisions.payload_schema.is_none());

    let changed = NamespaceConfig {
        retention_ms: Some(60_000),
        ..read
    };
    assert!(m.put_namespace_if(&ns, &changed, revisions).await.unwrap());
    assert_eq!(m.namespace(&ns).await.unwrap(), changed);
    // Both copies: the key, and the settings' for nodes of the release
    // before the key, which read it there.
    let schema_key = format!("{}payload_schema/inline", m.root());
    let raw = m.store().get(&key).await.unwrap().unwrap();
    let settings: NamespaceConfig = serde_json::from_slice(&raw.value).unwrap();
    assert_eq!(settings.payload_schema.as_ref(), Some(&schema));
    let raw = m.store().get(&schema_key).await.unwrap().unwrap();
    assert_eq!(
        serde_json::from_slice::<PayloadSchema>(&raw.value).unwrap(),
        schema
    );
    assert_eq!(
        m.settings_change(&schema_key),
        Some(dlog_meta::manifest::SettingsChange::Namespace(ns.clone())),
        "watchers hear of schema changes"
    );

    // A write on stale revisions is refused: the settings moved.
    assert!(!m.put_namespace_if(&ns, &changed, revisions).await.unwrap());
    // ... or only the schema did.
    let (_, current) = m.namespace_versioned(&ns).await.unwrap();
    let cleared = NamespaceConfig {
        payload_schema: Some(schema.cleared()),
        ..changed.clone()
    };
    m.store()
        .put(
            &schema_key,
            serde_json::to_vec(&schema.cleared()).unwrap().into(),
        )
        .await
        .unwrap();
    assert!(!m.put_namespace_if(&ns, &changed, current).await.unwrap());
    assert_eq!(m.namespace(&ns).await.unwrap(), cleared);

    // A node of the release before the key changes the schema inside the
    // settings (declared from the copy there, so its ids follow on): that
    // change counts, as the settings are newer than the key.
    let (now, _) = m.namespace_versioned(&ns).await.unwrap();
    let declared = PayloadSchema::declare(
        r#"{"fields":[{"name":"amount","type":"int64"}]}"#,
        now.payload_schema.as_ref(),
    )
    .unwrap();
    assert_eq!(declared.fields[0].id, 1001);
    let earlier_node = NamespaceConfig {
        payload_schema: Some(declared.clone()),
        ..now
    };
    m.store()
        .put(&key, serde_json::to_vec(&earlier_node).unwrap().into())
        .await
        .unwrap();
    assert_eq!(
        m.namespace(&ns).await.unwrap().payload_schema,
        Some(declared)
    );
}

async fn stale_epochs_are_refused(f: Fixture) {
    let m = &f.manifest;
    let log = name("ns/fenced");
    let id = m.create_log(&log).await.unwrap().log_id;
    assert_eq!(m.epoch(&log).await.unwrap(), 0);
    let first = m.bump_epoch(&log, LogId(id), Epoch(0)).await.unwrap();
    assert_eq!(
        first,
        Fence {
            log_id: id,
            epoch: 1
        }
    );
    let segment = m
        .create_segment(&log, first, open_segment(0))
        .await
        .unwrap();
    assert_eq!((segment.segment_id, segment.epoch), (1, 1));

    // A second owner takes over.
    let second = m
        .bump_epoch(&log, LogId(id), Epoch(first.epoch))
        .await
        .unwrap();
    assert_eq!(second.epoch, 2);

    // Everything the first owner tries now fails, and changes nothing.
    let err = m.bump_epoch(&log, LogId(id), Epoch(0)).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "epoch 0 of log ns/fenced is stale: the current epoch is 2"
    );
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
    let err = m
        .create_segment(&log, first, open_segment(10))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::StaleEpoch {
                mine: 1,
                current: 2,
                ..
            }
        ),
        "{err}"
    );
    let seal = SealInfo {
        end_offset: 5,
        ..SealInfo::default()
    };
    let err = m.seal_segment(&log, first, 1, &seal).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::StaleEpoch {
                mine: 1,
                current: 2,
                ..
            }
        ),
        "{err}"
    );
    let err = m.mark_end_of_stream(&log, first, 5).await.unwrap_err();
    assert!(matches!(err, Error::StaleEpoch { .. }), "{err}");
    let (segments, _) = m.segments(&log).await.unwrap();
    assert_eq!(segments.len(), 1);
    assert_eq!(segments[0].state, SegmentState::Open);
    assert_eq!(m.log(&log).await.unwrap().end_of_stream, None);

    // The new owner recovers and seals the old segment, then opens the next.
    let sealed = m.seal_segment(&log, second, 1, &seal).await.unwrap();
    assert_eq!(
        (sealed.state, sealed.end_offset),
        (SegmentState::Sealed, Some(5))
    );
    let next = m
        .create_segment(&log, second, open_segment(5))
        .await
        .unwrap();
    assert_eq!((next.segment_id, next.epoch, next.start_offset), (2, 2, 5));
    let err = m.seal_segment(&log, second, 1, &seal).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::SegmentState {
                actual: SegmentState::Sealed,
                ..
            }
        ),
        "{err}"
    );

    let err = m
        .bump_epoch(&name("ns/nolog"), LogId(id), Epoch(0))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::LogNotFound(_)), "{err}");
    let err = m
        .bump_epoch(&log, LogId(id + 1), Epoch(2))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::LogNotFound(_)),
        "another log id: {err}"
    );
}

async fn a_recreated_log_fences_the_old_incarnations_owner(f: Fixture) {
    let m = &f.manifest;
    let log = name("ns/again");
    let old_id = m.create_log(&log).await.unwrap().log_id;
    let old = m.bump_epoch(&log, LogId(old_id), Epoch(0)).await.unwrap();
    m.create_segment(&log, old, open_segment(0)).await.unwrap();
    let seal = SealInfo {
        end_offset: 3,
        ..SealInfo::default()
    };
    m.seal_segment(&log, old, 1, &seal).await.unwrap();

    // Deleted, purged and re-created while the old owner keeps running.
    m.delete_log(&log).await.unwrap();
    m.purge_log(&log, old_id).await.unwrap();
    let new_id = m.create_log(&log).await.unwrap().log_id;
    let new = m.bump_epoch(&log, LogId(new_id), Epoch(0)).await.unwrap();
    assert_eq!(new.epoch, old.epoch, "epochs start over in the new log");
    let segment = m.create_segment(&log, new, open_segment(0)).await.unwrap();
    assert_eq!(segment.segment_id, 1);

    // Whatever epoch number it holds, the old owner changes nothing.
    let err = m
        .create_segment(&log, old, open_segment(3))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition, "{err}");
    assert_eq!(
        err.to_string(),
        format!("log ns/again with id {old_id} was deleted (the name may have been re-created)")
    );
    let err = m.seal_segment(&log, old, 1, &seal).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition, "{err}");
    let err = m.mark_end_of_stream(&log, old, 3).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition, "{err}");
    let (segments, _) = m.segments(&log).await.unwrap();
    assert_eq!(segments, [segment], "the new log is untouched");
    assert_eq!(m.log(&log).await.unwrap().end_of_stream, None);
}

async fn a_stale_compactor_never_touches_a_recreated_log(f: Fixture) {
    let m = &f.manifest;
    let log = name("ns/stale");
    let old = m.create_log(&log).await.unwrap();
    m.delete_log(&log).await.unwrap();
    // Two compactors listed the log as deleting; the first purges it, then
    // the name is re-created, written and sealed.
    assert!(m.purge_log(&log, old.log_id).await.unwrap());
    let new = m.create_log(&log).await.unwrap();
    let epoch = m
        .bump_epoch(&log, LogId(new.log_id), Epoch(0))
        .await
        .unwrap();
    m.create_segment(&log, epoch, open_segment(0))
        .await
        .unwrap();
    let seal = SealInfo {
        end_offset: 7,
        ..SealInfo::default()
    };
    let sealed = m.seal_segment(&log, epoch, 1, &seal).await.unwrap();
    assert_ne!(new.log_id, old.log_id);

    // The second, late compactor acts on its stale view of the old log:
    // retention (trim point, then segment 1), then the purge.
    let mut damage = Vec::new();
    let err = m
        .trim_log_id(&log, LogId(old.log_id), Offset(7))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::LogReplaced { .. }), "{err}");
    if let Ok(point) = m.trim_point(&log).await
        && point != 0
    {
        damage.push(format!("retention trimmed the new log to {point}"));
    }
    let err = m
        .delete_segment(&log, LogId(old.log_id), SegmentId(1))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::LogReplaced { .. }), "{err}");
    let err = m
        .mark_cache_dropped(&log, LogId(old.log_id), SegmentId(1))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::LogReplaced { .. }), "{err}");
    let (segments, _) = m.segments(&log).await.unwrap();
    if segments != [sealed] {
        damage.push(format!(
            "retention left the new log with segments {segments:?}"
        ));
    }
    assert!(!m.purge_log(&log, old.log_id).await.unwrap());
    match m.log(&log).await {
        Ok(meta) if meta.log_id == new.log_id => {}
        other => damage.push(format!("the purge removed the new log: {other:?}")),
    }
    assert!(damage.is_empty(), "{damage:#?}");
}

async fn subscription_commits_never_move_back(f: Fixture) {
    let m = &f.manifest;
    let log = name("ns/subs");
    m.create_log(&log).await.unwrap();
    assert_eq!(m.commit_subscription(&log, "etl", 10).await.unwrap(), 10);
    // A late retry of an earlier commit arrives after a newer one.
    assert_eq!(m.commit_subscription(&log, "etl", 5).await.unwrap(), 10);
    assert_eq!(m.subscription(&log, "etl").await.unwrap(), Some(10));
    // Deleted: commits fail rather than land in what purge leaves behind,
    // and a log re-created under the name starts with no subscription.
    let deleted = m.delete_log(&log).await.unwrap();
    let err = m.commit_subscription(&log, "etl", 20).await.unwrap_err();
    assert!(matches!(err, Error::LogNotFound(_)), "{err}");
    m.purge_log(&log, deleted.log_id).await.unwrap();
    m.create_log(&log).await.unwrap();
    assert_eq!(m.subscription(&log, "etl").await.unwrap(), None);
}

async fn a_log_created_before_the_id_key_gets_one(f: Fixture) {
    let m = &f.manifest;
    let log = name("ns/legacy");
    let id = m.create_log(&log).await.unwrap().log_id;
    let id_key = format!("{}id", m.log_prefix(&log));
    assert!(m.store().delete(&id_key).await.unwrap());
    // The compactor can still trim and delete it; a deleted one it cannot.
    assert_eq!(m.trim_log_id(&log, LogId(id), Offset(5)).await.unwrap(), 5);
    m.check_live(&log, id).await.unwrap();
    assert!(m.store().delete(&id_key).await.unwrap());
    let fence = m.bump_epoch(&log, LogId(id), Epoch(0)).await.unwrap();
    m.create_segment(&log, fence, open_segment(5))
        .await
        .unwrap();
    assert!(m.store().delete(&id_key).await.unwrap());
    m.delete_log(&log).await.unwrap();
    let err = m.check_live(&log, id).await.unwrap_err();
    assert!(matches!(err, Error::LogReplaced { .. }), "{err}");
    assert!(m.store().get(&id_key).await.unwrap().is_none());
}

async fn concurrent_claimants_get_exactly_one_winner(f: Fixture) {
    let m = &f.manifest;
    let log = name("ns/race");
    let id = m.create_log(&log).await.unwrap().log_id;

    let mut tasks = Vec::new();
    for _ in 0..8 {
        let m = m.clone();
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            m.bump_epoch(&log, LogId(id), Epoch(0)).await
        }));
    }
    let mut winners = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(fence) => {
                assert_eq!(fence.epoch, 1);
                winners += 1;
            }
            Err(Error::StaleEpoch { current: 1, .. }) => {}
            Err(other) => panic!("unexpected {other}"),
        }
    }
    assert_eq!(winners, 1, "exactly one claimant moves the epoch");
    assert_eq!(m.epoch(&log).await.unwrap(), 1);

    let store = m.store().clone();
    let mut tasks = Vec::new();
    for i in 0..8 {
        let m = m.clone();
        let log = log.clone();
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let lease = store.lease_grant(Duration::from_secs(30)).await.unwrap();
            let me = node(&format!("ingest-{i}"));
            (me.id.clone(), lease, m.claim_owner(&log, &me, lease).await)
        }));
    }
    let mut winner = None;
    let mut losers = Vec::new();
    for task in tasks {
        let (id, lease, result) = task.await.unwrap();
        match result {
            Ok(_) => {
                assert!(winner.is_none(), "two owners");
                winner = Some((id, lease));
            }
            Err(Error::OwnedBy { owner, .. }) => losers.push(owner.id),
            Err(other) => panic!("unexpected {other}"),
        }
    }
    let (winner, lease) = winner.expect("one owner");
    assert_eq!(losers.len(), 7);
    assert!(
        losers.iter().all(|id| *id == winner),
        "losers are redirected to the winner"
    );
    assert_eq!(m.owner(&log).await.unwrap().unwrap().id, winner);
    let err = m.claim_owner(&log, &node("late"), lease).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert!(
        err.to_string()
            .starts_with(&format!("log ns/race is owned by node {winner} at "))
    );

    // Ownership is on the winner's lease: it goes with it.
    store.lease_revoke(lease).await.unwrap();
    assert_eq!(m.owner(&log).await.unwrap(), None);
    let next_lease = store.lease_grant(Duration::from_secs(30)).await.unwrap();
    m.claim_owner(&log, &node("next"), next_lease)
        .await
        .unwrap();
    assert!(!m.release_owner(&log, "someone-else", None).await.unwrap());
    // On another lease (a process restarted under the id): not released.
    let other_lease = store.lease_grant(Duration::from_secs(30)).await.unwrap();
    assert!(
        !m.release_owner(&log, "next", Some(other_lease))
            .await
            .unwrap()
    );
    assert!(
        m.release_owner(&log, "next", Some(next_lease))
            .await
            .unwrap()
    );
    assert_eq!(m.owner(&log).await.unwrap(), None);
}

async fn segments_move_open_sealed_offloaded(f: Fixture) {
    let m = &f.manifest;
    let log = name("ns/segs");
    let id = m.create_log(&log).await.unwrap().log_id;
    let epoch = m.bump_epoch(&log, LogId(id), Epoch(0)).await.unwrap();
    let s1 = m
        .create_segment(&log, epoch, open_segment(0))
        .await
        .unwrap();
    let object = ObjectInfo {
        key: "ns=ns/log=segs/x.parquet".into(),
        size: 10,
        crc32c: 7,
        offloaded_at_ms: 0,
        merged: None,
    };
    let err = m
        .mark_offloaded(&log, id, s1.segment_id, object.clone())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::SegmentState {
                actual: SegmentState::Open,
                ..
            }
        ),
        "{err}"
    );

    let seal = SealInfo {
        end_offset: 100,
        last_entry_id: Some(9),
        bytes: 4096,
        min_timestamp_ms: Some(1),
        max_timestamp_ms: Some(2),
        min_txid: Some(10),
        max_txid: Some(20),
    };
    m.seal_segment(&log, epoch, s1.segment_id, &seal)
        .await
        .unwrap();
    let s2 = m
        .create_segment(&log, epoch, open_segment(100))
        .await
        .unwrap();
    assert_eq!(s2.segment_id, s1.segment_id + 1, "segment ids are dense");

    let offloaded = m
        .mark_offloaded(&log, id, s1.segment_id, object.clone())
        .await
        .unwrap();
    assert_eq!(offloaded.state, SegmentState::Offloaded);
    assert_eq!(offloaded.object.as_ref(), Some(&object));
    assert_eq!(offloaded.max_txid, Some(20));
    let err = m
        .mark_offloaded(&log, id, s1.segment_id, object)
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        Error::SegmentState {
            actual: SegmentState::Offloaded,
            ..
        }
    ));

    let (segments, _) = m.segments(&log).await.unwrap();
    let states: Vec<_> = segments.iter().map(|s| (s.segment_id, s.state)).collect();
    assert_eq!(
        states,
        [(1, SegmentState::Offloaded), (2, SegmentState::Open)]
    );
    m.delete_segment(&log, LogId(id), SegmentId(1))
        .await
        .unwrap();
    assert_eq!(m.segments(&log).await.unwrap().0.len(), 1);
    let err = m.segment(&log, 1).await.unwrap_err();
    assert_eq!(err.to_string(), "segment 1 of log ns/segs not found");
}

/// The placement's zones are kept from creation to seal; a seal that
/// records recovery's replacements records their registered zones; a
/// segment written before zones (no `zones` key) decodes with none.
async fn segment_zones_follow_the_ensemble(f: Fixture) {
    let m = &f.manifest;
    let log = name("ns/zoned");
    let id = m.create_log(&log).await.unwrap().log_id;
    let epoch = m.bump_epoch(&log, LogId(id), Epoch(0)).await.unwrap();
    let zones: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
    let s1 = m
        .create_segment(&log, epoch, open_segment(0).with_zones(zones.clone()))
        .await
        .unwrap();
    assert_eq!(
        m.segment(&log, s1.segment_id).await.unwrap().value.zones,
        zones
    );
    assert_eq!(s1.zone_of("c2"), Some("b"));
    let seal = SealInfo {
        end_offset: 10,
        last_entry_id: Some(0),
        ..SealInfo::default()
    };
    let sealed = m
        .seal_segment(&log, epoch, s1.segment_id, &seal)
        .await
        .unwrap();
    assert_eq!(sealed.zones, zones, "a plain seal keeps them");

    // c2 replaced by c4 (registered in zone d) and c3 by c5 (not
    // registered any more): the kept nodes keep their zones.
    let lease = m
        .store()
        .lease_grant(Duration::from_secs(30))
        .await
        .unwrap();
    let c4 = NodeInfo {
        zone: "d".into(),
        ..node("c4")
    };
    m.register_node(Role::Cache, &c4, lease).await.unwrap();
    let s2 = m
        .create_segment(&log, epoch, open_segment(10).with_zones(zones.clone()))
        .await
        .unwrap();
    let replaced = vec!["c1".to_owned(), "c4".to_owned(), "c5".to_owned()];
    let sealed = m
        .seal_segment_with_ensemble(
            &log,
            epoch,
            s2.segment_id,
            &SealInfo {
                end_offset: 20,
                last_entry_id: Some(0),
                ..SealInfo::default()
            },
            Some(replaced.clone()),
        )
        .await
        .unwrap();
    assert_eq!(sealed.ensemble, replaced);
    assert_eq!(sealed.zones, ["a", "d", ""]);
    assert_eq!(sealed.zone_of("c5"), None);
    assert_eq!(
        m.segment(&log, s2.segment_id).await.unwrap().value.zones,
        ["a", "d", ""]
    );

    // The JSON of a segment from before zones.
    let mut old = serde_json::to_value(open_segment(0)).unwrap();
    assert!(old.get("zones").is_none(), "no zones, no key: {old}");
    old.as_object_mut().unwrap().remove("zones");
    let decoded: SegmentMeta = serde_json::from_value(old).unwrap();
    assert!(decoded.zones.is_empty());
    assert_eq!(decoded.zone_of("c1"), None);
}

async fn trim_subscriptions_and_nodes(f: Fixture) {
    let m = &f.manifest;
    let log = name("ns/t");
    m.create_log(&log).await.unwrap();
    assert_eq!(m.trim_point(&log).await.unwrap(), 0);
    assert_eq!(m.trim(&log, 50).await.unwrap(), 50);
    assert_eq!(
        m.trim(&log, 20).await.unwrap(),
        50,
        "the trim point never moves back"
    );
    assert_eq!(m.trim_point(&log).await.unwrap(), 50);
    assert!(matches!(
        m.trim(&name("ns/none"), 1).await,
        Err(Error::LogNotFound(_))
    ));

    assert_eq!(m.subscription(&log, "etl").await.unwrap(), None);
    m.commit_subscription(&log, "etl", 42).await.unwrap();
    m.commit_subscription(&log, "etl", 43).await.unwrap();
    assert_eq!(m.subscription(&log, "etl").await.unwrap(), Some(43));
    let err = m
        .commit_subscription(&log, "bad/name", 1)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);

    let store = m.store().clone();
    let lease = store.lease_grant(Duration::from_secs(30)).await.unwrap();
    m.register_node(Role::Cache, &node("c1"), lease)
        .await
        .unwrap();
    m.register_node(Role::Cache, &node("c2"), lease)
        .await
        .unwrap();
    m.register_node(Role::Ingest, &node("i1"), lease)
        .await
        .unwrap();
    let caches: Vec<_> = m
        .nodes(Role::Cache)
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.id)
        .collect();
    assert_eq!(caches, ["c1", "c2"]);
    store.lease_revoke(lease).await.unwrap();
    assert!(
        m.nodes(Role::Cache).await.unwrap().is_empty(),
        "registrations go with the lease"
    );
}

/// A compactor paused past its lease comes back and gives back a work
/// claim that is no longer its own: another compactor took it after the
/// lease expired. The give-back must leave the new holder's claim alone,
/// or a third compactor could take the same segment's work while the
/// second still does it.
async fn a_claim_is_given_back_only_by_its_holder(f: Fixture) {
    let m = f.manifest;
    let store = m.store().clone();
    let first = store.lease_grant(Duration::from_secs(30)).await.unwrap();
    assert!(
        m.claim("segment/ns/a/1/0", "compactor-1", first)
            .await
            .unwrap()
    );
    // compactor-1's lease expires while it is paused.
    store.lease_revoke(first).await.unwrap();
    let second = store.lease_grant(Duration::from_secs(30)).await.unwrap();
    assert!(
        m.claim("segment/ns/a/1/0", "compactor-2", second)
            .await
            .unwrap()
    );
    // compactor-1 resumes and finishes its work.
    m.release_claim("segment/ns/a/1/0", "compactor-1")
        .await
        .unwrap();
    let third = store.lease_grant(Duration::from_secs(30)).await.unwrap();
    assert!(
        !m.claim("segment/ns/a/1/0", "compactor-3", third)
            .await
            .unwrap(),
        "compactor-2 still holds the claim"
    );
    m.release_claim("segment/ns/a/1/0", "compactor-2")
        .await
        .unwrap();
    assert!(
        m.claim("segment/ns/a/1/0", "compactor-3", third)
            .await
            .unwrap()
    );
}

macro_rules! manifest_suite {
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

            case!(log_life_cycle);
            case!(namespace_config);
            case!(namespace_changes_compare_both_keys_and_move_an_inline_schema);
            case!(a_payload_schema_survives_a_settings_write_that_does_not_know_it);
            case!(stale_epochs_are_refused);
            case!(a_stale_compactor_never_touches_a_recreated_log);
            case!(subscription_commits_never_move_back);
            case!(a_log_created_before_the_id_key_gets_one);
            case!(a_recreated_log_fences_the_old_incarnations_owner);
            case!(concurrent_claimants_get_exactly_one_winner);
            case!(segments_move_open_sealed_offloaded);
            case!(trim_subscriptions_and_nodes);
            case!(segment_zones_follow_the_ensemble);
            case!(a_claim_is_given_back_only_by_its_holder);
        }
    };
}

manifest_suite!(embedded);
manifest_suite!(etcd);
