//! A log deleted and re-created under the same name is a new log: with real
//! processes (etcd, three cache nodes, ingest nodes, a compactor, an S3
//! server), the owner of the old incarnation must never write into the new
//! one, whatever epoch it holds; objects of the old one (recorded or left
//! behind by a compactor that stalled past its lease) never meet the new
//! one; and the new log holds exactly what was appended to it.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{Cluster, ClusterSpec, OBJECT_PREFIX};
use dlog_meta::manifest::{self, SegmentState};
use dlog_storage::segment_file::{log_folder, object_key};
use dlog_wire::names::LogName;
use dlog_wire::proto::log_service_client::LogServiceClient;
use dlog_wire::proto::{self as pb};
use dlog_wire::record::Record;
use object_store::{ObjectStoreExt, PutPayload};
use tonic::transport::Channel;

const LOG: &str = "recreate/a";

async fn connect(cluster: &Cluster, address: String) -> LogServiceClient<Channel> {
    LogServiceClient::new(cluster.channel(&address).await)
}

/// Places the log on ingest node `node` (`placement/<log>`), then appends
/// `payload` through that node once its placement view has the move (a
/// redirect before that applies nothing).
async fn append_placed(
    cluster: &Cluster,
    client: &mut LogServiceClient<Channel>,
    node: &str,
    payload: &str,
) -> pb::AppendResponse {
    let log: LogName = LOG.parse().unwrap();
    cluster
        .manifest
        .set_placement(&log, Some(node))
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        match append(client, payload).await {
            Ok(appended) => return appended,
            Err(status)
                if status.code() == tonic::Code::Unavailable
                    && std::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(status) => panic!("append through {node}: {status:?}"),
        }
    }
}

async fn append(
    client: &mut LogServiceClient<Channel>,
    payload: &str,
) -> Result<pb::AppendResponse, tonic::Status> {
    client
        .append(pb::AppendRequest {
            log: LOG.into(),
            records: vec![Record::new(Bytes::from(payload.to_owned())).into()],
            expected_offset: None,
            log_id: None,
        })
        .await
        .map(tonic::Response::into_inner)
}

/// Waits until the compactor removed every key of the deleted log.
async fn wait_purged(cluster: &Cluster, log: &LogName) {
    for _ in 0..200 {
        match cluster.manifest.log(log).await {
            Err(manifest::Error::LogNotFound(_)) => return,
            Ok(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(err) => panic!("reading {log}: {err}"),
        }
    }
    panic!("the compactor never purged {log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_old_owner_of_a_recreated_log_cannot_write_into_it() {
    let Some(cluster) = Cluster::start_with(3, 2, 1, 0).await else {
        return;
    };
    let log: LogName = LOG.parse().unwrap();
    let mut old_node = connect(&cluster, cluster.ingests[0].address()).await;
    let mut new_node = connect(&cluster, cluster.ingests[1].address()).await;

    // Node 0 owns the first incarnation, at epoch 1, and keeps running.
    old_node
        .create_log(pb::CreateLogRequest { log: LOG.into() })
        .await
        .unwrap();
    let first = append_placed(&cluster, &mut old_node, "ingest-1", "old-0").await;
    assert_eq!(first.first_offset, 0);
    assert_eq!(cluster.owner_of(LOG).await, Some(0));
    let old_id = cluster.manifest.log(&log).await.unwrap().log_id;
    // Sealed, so the compactor may purge it once deleted.
    old_node
        .seal_log(pb::SealLogRequest { log: LOG.into() })
        .await
        .unwrap();

    // Deleted through the other node, purged by the compactor, re-created.
    new_node
        .delete_log(pb::DeleteLogRequest { log: LOG.into() })
        .await
        .unwrap();
    // The old owner stops at once (it watches its owner key, which the
    // deletion removed): the log is simply not found there any more.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let status = append(&mut old_node, "after-delete").await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");
    wait_purged(&cluster, &log).await;
    new_node
        .create_log(pb::CreateLogRequest { log: LOG.into() })
        .await
        .unwrap();
    let new_id = cluster.manifest.log(&log).await.unwrap().log_id;
    assert_ne!(new_id, old_id, "a re-created log has a new log id");

    // Node 1 takes the new log: its epoch starts over at 1.
    let appended = append_placed(&cluster, &mut new_node, "ingest-2", "new-0").await;
    assert_eq!(appended.first_offset, 0);
    assert_eq!(cluster.owner_of(LOG).await, Some(1));
    let (before, _) = cluster.manifest.segments(&log).await.unwrap();
    assert_eq!(before.len(), 1, "{before:?}");

    // The old owner must neither acknowledge nor change the new log.
    for i in 0..5 {
        let result = append(&mut old_node, &format!("zombie-{i}")).await;
        assert!(
            result.is_err(),
            "the old log's owner acknowledged a write into the re-created log: {result:?}"
        );
    }
    let (after, _) = cluster.manifest.segments(&log).await.unwrap();
    assert_eq!(
        after, before,
        "the old log's owner changed the re-created log's segments"
    );

    // The new log holds exactly what was appended to it.
    let appended = append(&mut new_node, "new-1").await.unwrap();
    assert_eq!(appended.first_offset, 1);
    new_node
        .seal_log(pb::SealLogRequest { log: LOG.into() })
        .await
        .unwrap();
    let stored: Vec<Bytes> = cluster.read_back(LOG).await.into_values().collect();
    assert_eq!(stored, [Bytes::from("new-0"), Bytes::from("new-1")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn objects_of_a_deleted_log_never_block_its_successor() {
    let Some(cluster) = Cluster::start_with(3, 1, 1, 0).await else {
        return;
    };
    let objects = cluster.s3.as_ref().unwrap().object_store(OBJECT_PREFIX);
    let log: LogName = LOG.parse().unwrap();
    let mut node = connect(&cluster, cluster.ingests[0].address()).await;
    node.create_log(pb::CreateLogRequest { log: LOG.into() })
        .await
        .unwrap();
    let old_id = cluster.manifest.log(&log).await.unwrap().log_id;
    // A crash between upload and the manifest update left an object the
    // manifest does not name.
    let leftover = log_folder(&objects.prefix, &log, old_id).join("leftover.parquet");
    objects
        .store
        .put(&leftover, PutPayload::from_static(b"unrecorded"))
        .await
        .unwrap();
    for i in 0..3 {
        append(&mut node, &format!("old-{i}")).await.unwrap();
    }
    node.delete_log(pb::DeleteLogRequest { log: LOG.into() })
        .await
        .unwrap();
    wait_purged(&cluster, &log).await;
    assert!(
        objects.store.head(&leftover).await.is_err(),
        "the purge leaves no object of the deleted log behind"
    );

    // A compactor that stalled past its lease while offloading the old
    // log's first segment wakes up after the purge and uploads it: an
    // object at the old log's key for offsets 0..3, which nobody records.
    let stale = object_key(&objects.prefix, &log, old_id, 0, 3);
    objects
        .store
        .put(&stale, PutPayload::from_static(b"the old log's rows"))
        .await
        .unwrap();

    // The new log covers the same offsets; its segment must still offload.
    node.create_log(pb::CreateLogRequest { log: LOG.into() })
        .await
        .unwrap();
    let new_id = cluster.manifest.log(&log).await.unwrap().log_id;
    for i in 0..3 {
        append(&mut node, &format!("new-{i}")).await.unwrap();
    }
    node.seal_log(pb::SealLogRequest { log: LOG.into() })
        .await
        .unwrap();
    let mut segments = Vec::new();
    for _ in 0..150 {
        (segments, _) = cluster.manifest.segments(&log).await.unwrap();
        if segments
            .first()
            .is_some_and(|s| s.state == SegmentState::Offloaded)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let object = segments
        .first()
        .and_then(|s| s.object.clone())
        .unwrap_or_else(|| {
            panic!(
                "the re-created log's segment was never offloaded: {segments:?}\ncompactor log:\n{}",
                cluster.compactors[0].log_text()
            )
        });
    assert_eq!(
        object.key,
        object_key(&objects.prefix, &log, new_id, 0, 3).to_string()
    );
    assert_ne!(object.key, stale.to_string());
}

/// Appends and reads through the SDK that name a log id refuse any other
/// incarnation of the name: a writer or reader of a deleted log gets
/// NOT_FOUND, never the records (or the offsets) of its successor.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn appends_and_reads_pinned_to_a_log_id_never_reach_its_successor() {
    use distributedlog::{AppendIf, ReadOptions, Start};
    use dlog_wire::error::ErrorKind;
    use futures::StreamExt;

    let spec = ClusterSpec {
        caches: 3,
        ingests: 1,
        compactors: 1,
        readers: 0,
        ingest_roles: "ingest,reader",
        ..ClusterSpec::default()
    };
    let Some(cluster) = Cluster::start_spec(spec).await else {
        return;
    };
    let client = cluster.client(cluster.ingests[0].address());
    let log: LogName = LOG.parse().unwrap();
    let old_id = client.create_log(LOG).await.unwrap().log_id;
    let pinned = |log_id, next_offset| AppendIf {
        next_offset,
        log_id: Some(log_id),
    };
    let record = |text: &str| vec![Record::new(Bytes::from(text.to_owned()))];
    let appended = client
        .append_if(LOG, record("old-0"), pinned(old_id, Some(0)))
        .await
        .unwrap();
    assert_eq!(appended.first_offset, 0);
    let err = client
        .append_if(LOG, record("wrong-id"), pinned(old_id + 1000, None))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert!(err.to_string().contains("not the"), "{err}");

    client.delete_log(LOG).await.unwrap();
    wait_purged(&cluster, &log).await;
    let new_id = client.create_log(LOG).await.unwrap().log_id;
    assert_ne!(new_id, old_id);

    // The old incarnation's writer: refused, and nothing written.
    let err = client
        .append_if(LOG, record("zombie"), pinned(old_id, Some(0)))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert_eq!(client.get_log(LOG).await.unwrap().next_offset, 0);
    client
        .append_if(LOG, record("new-0"), pinned(new_id, Some(0)))
        .await
        .unwrap();

    // A reader of the old incarnation: refused; of the new one: its record.
    let read = |log_id| {
        let options = ReadOptions {
            limit: None,
            follow: false,
            log_id: Some(log_id),
        };
        client
            .reader(LOG, Start::Earliest, options)
            .collect::<Vec<_>>()
    };
    let old = read(old_id).await;
    assert!(
        matches!(old.as_slice(), [Err(err)] if err.kind() == ErrorKind::NotFound),
        "{old:?}"
    );
    let new: Vec<Bytes> = read(new_id)
        .await
        .into_iter()
        .map(|item| item.unwrap().record.payload)
        .collect();
    assert_eq!(new, [Bytes::from("new-0")]);
}
