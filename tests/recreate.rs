//! A log deleted and re-created under the same name is a new log: with real
//! processes (etcd, three cache nodes, two ingest nodes, a compactor), the
//! owner of the old incarnation must never write into the new one, whatever
//! epoch it holds, and the new log holds exactly what was appended to it.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::Cluster;
use dlog_infra::manifest;
use dlog_infra::names::LogName;
use dlog_infra::proto::log_service_client::LogServiceClient;
use dlog_infra::proto::{self as pb};
use dlog_infra::record::Record;
use tonic::transport::Channel;

const LOG: &str = "recreate/a";

async fn connect(address: String) -> LogServiceClient<Channel> {
    LogServiceClient::connect(address).await.unwrap()
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
    let mut old_node = connect(cluster.ingests[0].address()).await;
    let mut new_node = connect(cluster.ingests[1].address()).await;

    // Node 0 owns the first incarnation, at epoch 1, and keeps running.
    old_node
        .create_log(pb::CreateLogRequest { log: LOG.into() })
        .await
        .unwrap();
    let first = append(&mut old_node, "old-0").await.unwrap();
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
    let appended = append(&mut new_node, "new-0").await.unwrap();
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
