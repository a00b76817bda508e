//! The public `LogService` of ingest nodes: admin calls answered by any
//! node from the manifest, appends routed to this node's owner of the log
//! or redirected (`UNAVAILABLE` + `dlog-owner` metadata) to another's.

use std::sync::Arc;

use dlog_meta::auth::{
    Grant, Op, authorize, check, check_any, grant_of, listing, log_for, visible,
};
use dlog_meta::manifest::{self, LogMeta, Role, SegmentMeta, SegmentState};
use dlog_wire::ids::{LogId, Offset};
use dlog_wire::names::LogName;
use dlog_wire::pipeline::{Answer, ResponseStream, serve_ordered};
use dlog_wire::proto::log_service_server::{LogService, LogServiceServer};
use dlog_wire::proto::{self as pb};
use dlog_wire::record::Append;
use tonic::{Request, Response, Status, Streaming};

use crate::error::{Error, to_status};
use crate::node::IngestNode;
use crate::owner::{AppendAck, SessionGate};

/// Appends one session may have queued but not yet answered.
const MAX_SESSION_IN_FLIGHT: usize = 1024;

/// The gRPC face of an ingest node.
#[derive(Debug, Clone)]
pub struct LogServer {
    node: Arc<IngestNode>,
}

impl LogServer {
    pub fn new(node: Arc<IngestNode>) -> LogServer {
        LogServer { node }
    }

    pub fn into_service(self) -> LogServiceServer<LogServer> {
        LogServiceServer::new(self)
            .max_decoding_message_size(16 * 1024 * 1024)
            .max_encoding_message_size(16 * 1024 * 1024)
    }

    async fn next_offset(
        &self,
        log: &LogName,
        meta: &LogMeta,
        segments: &[SegmentMeta],
    ) -> Result<u64, Error> {
        if let Some(info) = self.node.info_if_owned(log, meta.log_id).await {
            return Ok(info.next_offset);
        }
        let open = segments.iter().any(|s| s.state == SegmentState::Open);
        if let Some(owner) = self.node.manifest().owner(log).await?
            && owner.id != self.node.me().id
            && open
        {
            return Err(Error::NotOwner {
                log: log.clone(),
                owner: Box::new(owner),
            });
        }
        if open {
            // Its owner died: recover it (as a write would) to learn the end.
            return Ok(self.node.info(log).await?.next_offset);
        }
        let trim = self.node.manifest().trim_point(log).await?;
        let sealed_end = segments
            .iter()
            .filter_map(|s| s.end_offset)
            .max()
            .unwrap_or(0);
        Ok(sealed_end.max(trim).max(meta.end_of_stream.unwrap_or(0)))
    }

    async fn log_info(&self, log: &LogName) -> Result<pb::LogInfo, Error> {
        let manifest = self.node.manifest();
        let meta = live_log(manifest, log).await?;
        let (segments, _) = manifest.segments(log).await?;
        let next_offset = self.next_offset(log, &meta, &segments).await?;
        let first_offset = manifest.trim_point(log).await?.min(next_offset);
        let end_of_stream = match self.node.info_if_owned(log, meta.log_id).await {
            Some(info) => info.end_of_stream.is_some(),
            None => meta.end_of_stream.is_some(),
        };
        Ok(pb::LogInfo {
            log: log.to_string(),
            log_id: meta.log_id,
            created_at_ms: meta.created_at_ms,
            first_offset,
            next_offset,
            records: next_offset - first_offset,
            end_of_stream,
            segments: segments.iter().map(segment_info).collect(),
        })
    }
}

async fn live_log(manifest: &manifest::Manifest, log: &LogName) -> Result<LogMeta, Error> {
    let meta = manifest.log(log).await?;
    if meta.state == manifest::LogState::Deleting {
        return Err(manifest::Error::LogNotFound(log.clone()).into());
    }
    Ok(meta)
}

fn segment_info(segment: &SegmentMeta) -> pb::SegmentInfo {
    pb::SegmentInfo {
        segment_id: segment.segment_id,
        state: match segment.state {
            SegmentState::Open => pb::SegmentState::Open,
            SegmentState::Sealed => pb::SegmentState::Sealed,
            SegmentState::Offloaded => pb::SegmentState::Offloaded,
        } as i32,
        start_offset: segment.start_offset,
        end_offset: segment.end_offset,
        epoch: segment.epoch,
        ensemble: segment.ensemble.clone(),
        bytes: segment.bytes,
        object: segment.object.as_ref().map(|o| o.key.clone()),
    }
}

fn status(err: Error) -> Status {
    to_status(&err)
}

/// Logs in one `ListLogs` answer when the request names no page size, and
/// at most: a page stays far below the response size limit.
const DEFAULT_PAGE: usize = 1_000;
const MAX_PAGE: usize = 10_000;

/// The page of `names` (in name order) after `token` (the last name of the
/// previous page; empty: the first page).
fn page_of(
    names: impl Iterator<Item = String>,
    page_size: u32,
    token: &str,
) -> pb::ListLogsResponse {
    let size = match page_size as usize {
        0 => DEFAULT_PAGE,
        n => n.min(MAX_PAGE),
    };
    let mut after = names.filter(|name| token.is_empty() || name.as_str() > token);
    let logs: Vec<String> = after.by_ref().take(size).collect();
    let next_page_token = match (after.next(), logs.last()) {
        (Some(_), Some(last)) => last.clone(),
        _ => String::new(),
    };
    pb::ListLogsResponse {
        logs,
        next_page_token,
    }
}

fn append_response(ack: AppendAck) -> pb::AppendResponse {
    pb::AppendResponse {
        first_offset: ack.first_offset,
        last_offset: ack.last_offset,
        timestamp_ms: ack.timestamp_ms,
    }
}

/// Submits one append of a session to the log's owner, in session order;
/// the answer resolves once the append is acknowledged (or refused).
/// Once one append of the session failed (here or at the owner), the
/// later ones are refused unapplied ([`SessionGate`]).
async fn submit_append(
    node: &IngestNode,
    request: pb::AppendRequest,
    session: &SessionGate,
    grant: &Option<Grant>,
) -> Answer<pb::AppendResponse> {
    let append = match Append::from_proto(request, node.limits()) {
        Ok(append) => append,
        Err(err) => {
            session.close();
            return Answer::ready(Err(status(err.into())));
        }
    };
    if let Err(refused) = check(grant, Op::Append, &append.log.to_string()) {
        session.close();
        return Answer::ready(Err(refused));
    }
    if session.is_closed() {
        let log = append.log;
        return Answer::ready(Err(status(Error::SessionBroken { log })));
    }
    match node.submit(append, session).await {
        Err(err) => {
            session.close();
            Answer::ready(Err(status(err)))
        }
        Ok(receiver) => {
            let session = session.clone();
            Answer::new(async move {
                match receiver.await {
                    Ok(Ok(ack)) => Ok(append_response(ack)),
                    // The owner closed the gate when it answered.
                    Ok(Err(err)) => Err(status(err)),
                    Err(_) => {
                        session.close();
                        Err(Status::unavailable("the log's owner stopped: retry"))
                    }
                }
            })
        }
    }
}

#[tonic::async_trait]
impl LogService for LogServer {
    type AppendSessionStream = ResponseStream<pb::AppendResponse>;

    async fn create_log(
        &self,
        request: Request<pb::CreateLogRequest>,
    ) -> Result<Response<pb::CreateLogResponse>, Status> {
        let grant = grant_of(&request);
        let log = log_for(&grant, Op::Admin, &request.into_inner().log)?;
        self.node
            .manifest()
            .create_log(&log)
            .await
            .map_err(|err| status(err.into()))?;
        let info = self.log_info(&log).await.map_err(status)?;
        Ok(Response::new(pb::CreateLogResponse { log: Some(info) }))
    }

    async fn delete_log(
        &self,
        request: Request<pb::DeleteLogRequest>,
    ) -> Result<Response<pb::DeleteLogResponse>, Status> {
        let grant = grant_of(&request);
        let log = log_for(&grant, Op::Admin, &request.into_inner().log)?;
        self.node.delete_log(&log).await.map_err(status)?;
        Ok(Response::new(pb::DeleteLogResponse {}))
    }

    async fn list_logs(
        &self,
        request: Request<pb::ListLogsRequest>,
    ) -> Result<Response<pb::ListLogsResponse>, Status> {
        let grant = grant_of(&request);
        // Any read grant may list; it sees the names in its scope only,
        // as the scope was when the listing started.
        let scope = listing(&grant, Op::Read)?;
        let request = request.into_inner();
        let logs = self
            .node
            .manifest()
            .list_logs(&request.prefix)
            .await
            .map_err(|err| status(err.into()))?;
        let names = logs
            .iter()
            .map(ToString::to_string)
            .filter(|name| visible(&scope, name));
        Ok(Response::new(page_of(
            names,
            request.page_size,
            &request.page_token,
        )))
    }

    async fn get_log(
        &self,
        request: Request<pb::GetLogRequest>,
    ) -> Result<Response<pb::GetLogResponse>, Status> {
        let grant = grant_of(&request);
        let log = LogName::from_request(&request.into_inner().log)?;
        // A writer learns where the log stands before it appends.
        check_any(&grant, &[Op::Read, Op::Append], &log.to_string())?;
        let info = self.log_info(&log).await.map_err(status)?;
        Ok(Response::new(pb::GetLogResponse { log: Some(info) }))
    }

    async fn append(
        &self,
        request: Request<pb::AppendRequest>,
    ) -> Result<Response<pb::AppendResponse>, Status> {
        let grant = grant_of(&request);
        let append = Append::from_proto(request.into_inner(), self.node.limits())
            .map_err(|err| status(err.into()))?;
        check(&grant, Op::Append, &append.log.to_string())?;
        let ack = self.node.append(append).await.map_err(status)?;
        Ok(Response::new(append_response(ack)))
    }

    async fn append_session(
        &self,
        request: Request<Streaming<pb::AppendRequest>>,
    ) -> Result<Response<Self::AppendSessionStream>, Status> {
        let node = self.node.clone();
        let session = SessionGate::default();
        // Checked for each append: its log, and the token still valid.
        let grant = grant_of(&request);
        let answers = serve_ordered(
            request.into_inner(),
            MAX_SESSION_IN_FLIGHT,
            move |request| {
                let (node, session, grant) = (node.clone(), session.clone(), grant.clone());
                async move { submit_append(&node, request, &session, &grant).await }
            },
        );
        Ok(Response::new(answers))
    }

    async fn trim(
        &self,
        request: Request<pb::TrimRequest>,
    ) -> Result<Response<pb::TrimResponse>, Status> {
        let grant = grant_of(&request);
        let request = request.into_inner();
        let log = log_for(&grant, Op::Trim, &request.log)?;
        let info = self.log_info(&log).await.map_err(status)?;
        if request.before_offset > info.next_offset {
            return Err(Status::invalid_argument(format!(
                "cannot trim log {log} before offset {}: its next offset is {}",
                request.before_offset, info.next_offset
            )));
        }
        // The log whose end was checked, not whatever log has the name by
        // now (a trim racing a delete + re-create must not trim the new log).
        let first_offset = self
            .node
            .manifest()
            .trim_log_id(&log, LogId(info.log_id), Offset(request.before_offset))
            .await
            .map_err(|err| status(err.into()))?;
        Ok(Response::new(pb::TrimResponse { first_offset }))
    }

    async fn mark_end_of_stream(
        &self,
        request: Request<pb::MarkEndOfStreamRequest>,
    ) -> Result<Response<pb::MarkEndOfStreamResponse>, Status> {
        let grant = grant_of(&request);
        let log = log_for(&grant, Op::Trim, &request.into_inner().log)?;
        let end_offset = self.node.end_of_stream(&log).await.map_err(status)?;
        Ok(Response::new(pb::MarkEndOfStreamResponse { end_offset }))
    }

    async fn seal_log(
        &self,
        request: Request<pb::SealLogRequest>,
    ) -> Result<Response<pb::SealLogResponse>, Status> {
        let grant = grant_of(&request);
        let log = log_for(&grant, Op::Trim, &request.into_inner().log)?;
        let sealed = self.node.seal(&log).await.map_err(status)?;
        let info = self.log_info(&log).await.map_err(status)?;
        Ok(Response::new(pb::SealLogResponse {
            segment_id: sealed.as_ref().map(|s| s.segment_id),
            end_offset: sealed
                .and_then(|s| s.end_offset)
                .unwrap_or(info.next_offset),
        }))
    }

    async fn list_ingest_nodes(
        &self,
        request: Request<pb::ListIngestNodesRequest>,
    ) -> Result<Response<pb::ListIngestNodesResponse>, Status> {
        // Any valid token: a client with one may be redirected to any of
        // these nodes anyway.
        if let Some(grant) = grant_of(&request)
            && grant.listing_prefix().is_none()
        {
            return Err(Status::unauthenticated("a valid token is needed"));
        }
        let nodes = (self.node.placement_nodes().into_iter())
            .map(|n| pb::NodeInfo {
                role: Role::Ingest.as_str().to_owned(),
                id: n.id,
                address: n.address,
                zone: n.zone,
            })
            .collect();
        Ok(Response::new(pb::ListIngestNodesResponse { nodes }))
    }

    async fn get_status(
        &self,
        request: Request<pb::GetStatusRequest>,
    ) -> Result<Response<pb::GetStatusResponse>, Status> {
        authorize(&request, Op::Admin, "")?;
        let manifest = self.node.manifest();
        let mut response = pb::GetStatusResponse::default();
        for role in Role::ALL {
            let nodes = manifest
                .nodes(role)
                .await
                .map_err(|err| status(err.into()))?;
            response
                .nodes
                .extend(nodes.into_iter().map(|n| pb::NodeInfo {
                    role: role.as_str().to_owned(),
                    id: n.id,
                    address: n.address,
                    zone: n.zone,
                }));
        }
        let logs = manifest
            .list_logs("")
            .await
            .map_err(|err| status(err.into()))?;
        response.logs = logs.len() as u64;
        for log in &logs {
            let (segments, _) = manifest
                .segments(log)
                .await
                .map_err(|err| status(err.into()))?;
            for segment in segments {
                match segment.state {
                    SegmentState::Open => response.open_segments += 1,
                    SegmentState::Sealed => {
                        response.sealed_segments += 1;
                        response.offload_lag_bytes += segment.bytes;
                    }
                    SegmentState::Offloaded => response.offloaded_segments += 1,
                }
            }
        }
        Ok(Response::new(response))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_listings_come_in_pages_that_cover_every_name_once() {
        let names: Vec<String> = (0..25).map(|i| format!("ns/log-{i:03}")).collect();
        let mut token = String::new();
        let mut seen = Vec::new();
        let mut pages = 0;
        loop {
            let page = page_of(names.iter().cloned(), 10, &token);
            pages += 1;
            assert!(page.logs.len() <= 10);
            seen.extend(page.logs);
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        assert_eq!((pages, seen), (3, names.clone()));
        // Defaults and the cap.
        assert_eq!(page_of(names.iter().cloned(), 0, "").logs.len(), 25);
        let many = (0..20_000).map(|i| format!("ns/{i:05}"));
        assert_eq!(page_of(many, u32::MAX, "").logs.len(), MAX_PAGE);
    }
}
