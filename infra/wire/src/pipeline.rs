//! The server side of an ordered, pipelined bidirectional stream
//! (`CacheService.AddEntries`, `LogService.AppendSession`): requests are
//! submitted in stream order as they arrive, without waiting for the
//! answers of earlier ones, and answered in the same order as each
//! completes. A failed answer is sent after the answers before it and ends
//! the stream; so does the client closing its side once every submitted
//! request was answered.

use std::pin::Pin;

use futures::future::BoxFuture;
use futures::stream::FuturesOrdered;
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// The answer to one submitted request, to be awaited in turn: resolves
/// once the request completed (or at once, for a request refused when it
/// was submitted).
pub struct Answer<T>(BoxFuture<'static, Result<T, tonic::Status>>);

impl<T> Answer<T> {
    /// The answer `future` will give.
    pub fn new(future: impl Future<Output = Result<T, tonic::Status>> + Send + 'static) -> Self {
        Answer(Box::pin(future))
    }

    /// An answer known already.
    pub fn ready(result: Result<T, tonic::Status>) -> Self
    where
        T: Send + 'static,
    {
        Answer(Box::pin(std::future::ready(result)))
    }
}

impl<T> std::future::IntoFuture for Answer<T> {
    type Output = Result<T, tonic::Status>;
    type IntoFuture = BoxFuture<'static, Result<T, tonic::Status>>;

    fn into_future(self) -> Self::IntoFuture {
        self.0
    }
}

impl<T> std::fmt::Debug for Answer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Answer")
    }
}

/// The response stream of a gRPC streaming method.
pub type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, tonic::Status>> + Send>>;

/// Serves `incoming` on a task: each request goes to `submit`, in order
/// (the next is submitted when `submit`'s future returned the answer to
/// wait for), and the answers go out in the same order. At most
/// `max_in_flight` requests are submitted and not yet answered; beyond
/// that, the stream is not read (backpressure to the client).
pub fn serve_ordered<Req, Resp, S, F>(
    mut incoming: impl Stream<Item = Result<Req, tonic::Status>> + Unpin + Send + 'static,
    max_in_flight: usize,
    mut submit: S,
) -> ResponseStream<Resp>
where
    Req: Send + 'static,
    Resp: Send + 'static,
    S: FnMut(Req) -> F + Send + 'static,
    F: Future<Output = Answer<Resp>> + Send,
{
    let max_in_flight = max_in_flight.max(1);
    let (sender, receiver) = mpsc::channel(max_in_flight);
    tokio::spawn(async move {
        let mut pending: FuturesOrdered<BoxFuture<'static, Result<Resp, tonic::Status>>> =
            FuturesOrdered::new();
        let mut input_open = true;
        loop {
            tokio::select! {
                biased;
                Some(answer) = pending.next(), if !pending.is_empty() => {
                    let failed = answer.is_err();
                    if sender.send(answer).await.is_err() || failed {
                        return;
                    }
                }
                message = incoming.next(), if input_open && pending.len() < max_in_flight => {
                    match message {
                        Some(Ok(request)) => pending.push_back(submit(request).await.0),
                        None => input_open = false,
                        Some(Err(status)) => {
                            tracing::debug!("pipelined stream broke: {status}");
                            input_open = false;
                        }
                    }
                }
                else => return,
            }
        }
    });
    Box::pin(ReceiverStream::new(receiver))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Answers come in request order although later requests complete
    /// first; a failure ends the stream after the answers before it.
    #[tokio::test]
    async fn answers_in_order_and_stops_at_the_first_failure() {
        let requests: Vec<Result<u64, tonic::Status>> = vec![Ok(30), Ok(10), Ok(0), Ok(99), Ok(1)];
        let incoming = futures::stream::iter(requests);
        let answers = serve_ordered(incoming, 16, |delay_ms: u64| async move {
            if delay_ms == 99 {
                return Answer::ready(Err(tonic::Status::invalid_argument("99 refused")));
            }
            Answer::new(async move {
                tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                Ok(delay_ms)
            })
        });
        let answers: Vec<_> = answers.collect().await;
        assert_eq!(answers.len(), 4, "{answers:?}");
        let values: Vec<u64> = answers[..3].iter().map(|a| *a.as_ref().unwrap()).collect();
        assert_eq!(values, [30, 10, 0]);
        assert_eq!(answers[3].as_ref().unwrap_err().message(), "99 refused");
    }
}
