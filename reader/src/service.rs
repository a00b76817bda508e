//! `ReadService` (docs/wire.md) over the [`ReadEngine`].
//!
//! When the node stops, open `Read` streams (tailing ones never end on
//! their own) end with `UNAVAILABLE`, so clients resume on another node.

use std::pin::Pin;
use std::sync::Arc;

use dlog_meta::auth::{self, Op};
use dlog_wire::proto::read_service_server::{ReadService, ReadServiceServer};
use dlog_wire::proto::{self as pb};
use futures::Stream;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::engine::{ReadEngine, ReadItem, ReadSpec};
use crate::error::Error;

/// The public read API of a reader node.
#[derive(Debug, Clone)]
pub struct ReadServer {
    engine: Arc<ReadEngine>,
    stop: CancellationToken,
}

impl ReadServer {
    pub fn new(engine: Arc<ReadEngine>) -> ReadServer {
        ReadServer {
            engine,
            stop: CancellationToken::new(),
        }
    }

    /// Ends every open `Read` stream with `UNAVAILABLE` once `stop` fires.
    pub fn stop_streams_on(self, stop: CancellationToken) -> ReadServer {
        ReadServer { stop, ..self }
    }

    /// The tonic service, with message limits fit for record batches.
    pub fn into_service(self) -> ReadServiceServer<ReadServer> {
        ReadServiceServer::new(self)
            .max_decoding_message_size(16 * 1024 * 1024)
            .max_encoding_message_size(crate::engine::MAX_RESPONSE_BYTES)
    }
}

type ReadStream = Pin<Box<dyn Stream<Item = Result<pb::ReadResponse, Status>> + Send>>;

/// `items` until `stop` fires, then `UNAVAILABLE` (a retryable status).
fn end_on_stop(
    items: impl Stream<Item = Result<pb::ReadResponse, Status>> + Send + 'static,
    stop: CancellationToken,
) -> ReadStream {
    let stopped = stop.clone();
    let items = futures::StreamExt::take_until(items, stop.cancelled_owned());
    let last = futures::stream::once(async move {
        stopped.is_cancelled().then(|| {
            Err(Status::unavailable(
                "the reader node is stopping; resume the read on another node",
            ))
        })
    })
    .filter_map(|last| last);
    Box::pin(items.chain(last))
}

/// One streamed message of a read of the incarnation `log_id`.
fn respond(item: Result<ReadItem, Error>, log_id: u64) -> Result<pb::ReadResponse, Status> {
    match item {
        Ok(ReadItem::Records(records)) => Ok(pb::ReadResponse {
            records: records.into_iter().map(Into::into).collect(),
            end_of_stream: false,
            log_id,
        }),
        Ok(ReadItem::EndOfStream) => Ok(pb::ReadResponse {
            records: Vec::new(),
            end_of_stream: true,
            log_id,
        }),
        Err(err) => Err(Status::from(err)),
    }
}

#[tonic::async_trait]
impl ReadService for ReadServer {
    type ReadStream = ReadStream;

    async fn read(
        &self,
        request: Request<pb::ReadRequest>,
    ) -> Result<Response<ReadStream>, Status> {
        let client = request
            .remote_addr()
            .map(|address| address.ip().to_string());
        let grant = auth::grant_of(&request);
        let request = request.into_inner();
        let log = auth::log_for(&grant, Op::Read, &request.log)?;
        let name = log.to_string();
        if request.limit == Some(0) {
            return Err(Status::invalid_argument(
                "limit must be at least 1 (or absent)",
            ));
        }
        let start = request.start.into();
        // Fail fast on an unknown log or a trimmed start, before streaming;
        // the read is pinned to the incarnation checked here.
        let log_id = self
            .engine
            .check_start(&log, start, request.log_id)
            .await
            .map_err(Status::from)?;
        let spec = ReadSpec {
            log,
            start,
            limit: request.limit,
            follow: request.follow,
            log_id: Some(log_id),
            client,
        };
        let items = ReceiverStream::new(self.engine.read(spec)).map(move |item| {
            // A token revoked while the read runs ends it at its next message.
            if item.is_ok() {
                auth::check(&grant, Op::Read, &name)?;
            }
            respond(item, log_id)
        });
        Ok(Response::new(end_on_stop(items, self.stop.clone())))
    }

    async fn check_tail(
        &self,
        request: Request<pb::CheckTailRequest>,
    ) -> Result<Response<pb::CheckTailResponse>, Status> {
        let grant = auth::grant_of(&request);
        let log = auth::log_for(&grant, Op::Read, &request.into_inner().log)?;
        let tail = self.engine.check_tail(&log).await.map_err(Status::from)?;
        Ok(Response::new(pb::CheckTailResponse {
            first_offset: tail.first_offset,
            next_offset: tail.next_offset,
            end_of_stream: tail.end_of_stream,
            log_id: tail.log_id,
        }))
    }

    async fn commit_subscription(
        &self,
        request: Request<pb::CommitSubscriptionRequest>,
    ) -> Result<Response<pb::CommitSubscriptionResponse>, Status> {
        let grant = auth::grant_of(&request);
        let request = request.into_inner();
        let log = auth::log_for(&grant, Op::Read, &request.log)?;
        self.engine
            .manifest()
            .commit_subscription(&log, &request.subscription, request.offset)
            .await
            .map_err(|err| Status::from(Error::from(err)))?;
        Ok(Response::new(pb::CommitSubscriptionResponse {}))
    }

    async fn get_subscription(
        &self,
        request: Request<pb::GetSubscriptionRequest>,
    ) -> Result<Response<pb::GetSubscriptionResponse>, Status> {
        let grant = auth::grant_of(&request);
        let request = request.into_inner();
        let log = auth::log_for(&grant, Op::Read, &request.log)?;
        let offset = self
            .engine
            .manifest()
            .subscription(&log, &request.subscription)
            .await
            .map_err(|err| Status::from(Error::from(err)))?;
        Ok(Response::new(pb::GetSubscriptionResponse { offset }))
    }

    async fn list_subscriptions(
        &self,
        request: Request<pb::ListSubscriptionsRequest>,
    ) -> Result<Response<pb::ListSubscriptionsResponse>, Status> {
        let grant = auth::grant_of(&request);
        let log = auth::log_for(&grant, Op::Read, &request.into_inner().log)?;
        let manifest = self.engine.manifest();
        // A log that does not exist has no subscriptions: NOT_FOUND.
        manifest
            .log(&log)
            .await
            .map_err(|err| Status::from(Error::from(err)))?;
        let subscriptions = manifest
            .subscriptions(&log)
            .await
            .map_err(|err| Status::from(Error::from(err)))?
            .into_iter()
            .map(|(name, offset)| pb::Subscription { name, offset })
            .collect();
        Ok(Response::new(pb::ListSubscriptionsResponse {
            subscriptions,
        }))
    }

    async fn delete_subscription(
        &self,
        request: Request<pb::DeleteSubscriptionRequest>,
    ) -> Result<Response<pb::DeleteSubscriptionResponse>, Status> {
        let grant = auth::grant_of(&request);
        let request = request.into_inner();
        let log = auth::log_for(&grant, Op::Admin, &request.log)?;
        self.engine
            .manifest()
            .delete_subscription(&log, &request.subscription)
            .await
            .map_err(|err| Status::from(Error::from(err)))?;
        Ok(Response::new(pb::DeleteSubscriptionResponse {}))
    }
}
