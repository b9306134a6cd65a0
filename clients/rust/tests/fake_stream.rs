//! The stream publisher against an in-process fake of PublishStream that the test drives: each
//! stream the client opens is handed to the test, which reads its requests and answers them as
//! it likes (out of order, refused, or ending the stream). No network, no Ferry, no sleeps: the
//! test waits for what the client sends, under generous timeouts that only catch a hang.

use std::collections::HashMap;
use std::future::Future;
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use ferry_client::pb::publisher_server::{Publisher, PublisherServer};
use ferry_client::pb::{self, publish_batch_entry::Outcome};
use ferry_client::{Client, Code, Event, RetryPolicy};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::body::Body;
use tonic::{Request as GrpcRequest, Response as GrpcResponse, Status, Streaming};
use tonic_types::{ErrorDetails, StatusExt};
use tower::ServiceExt;

/// Only a hang takes this long, even on a loaded machine.
const WAIT: Duration = Duration::from_secs(30);

async fn within<F: Future>(what: &str, f: F) -> F::Output {
    tokio::time::timeout(WAIT, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: nothing in {WAIT:?}"))
}

fn ferry_status(code: Code, reason: &str, retry: Option<Duration>) -> Status {
    let mut details = ErrorDetails::with_error_info(reason, "ferry.v1", HashMap::new());
    if let Some(delay) = retry {
        details.set_retry_info(Some(delay));
    }
    Status::with_error_details(code, format!("{reason} from the fake"), details)
}

fn failure(code: Code, reason: &str, retry: Option<Duration>) -> pb::Failure {
    pb::Failure {
        code: code as i32,
        message: format!("{reason} from the fake"),
        reason: reason.into(),
        retry_delay: retry.map(|d| d.try_into().unwrap()),
        ..Default::default()
    }
}

// ---- the fake ------------------------------------------------------------------------------

/// Hands every PublishStream the client opens to the test.
struct FakeStreams {
    opened: mpsc::UnboundedSender<ServerStream>,
}

type Answers = UnboundedReceiverStream<Result<pb::PublishStreamResponse, Status>>;

#[tonic::async_trait]
impl Publisher for FakeStreams {
    async fn publish(
        &self,
        _: GrpcRequest<pb::PublishRequest>,
    ) -> Result<GrpcResponse<pb::PublishResponse>, Status> {
        Err(Status::unimplemented("stream only"))
    }

    async fn publish_batch(
        &self,
        _: GrpcRequest<pb::PublishBatchRequest>,
    ) -> Result<GrpcResponse<pb::PublishBatchResponse>, Status> {
        Err(Status::unimplemented("stream only"))
    }

    type PublishStreamStream = Answers;

    async fn publish_stream(
        &self,
        req: GrpcRequest<Streaming<pb::PublishStreamRequest>>,
    ) -> Result<GrpcResponse<Answers>, Status> {
        let (answers, rx) = mpsc::unbounded_channel();
        let stream = ServerStream {
            requests: req.into_inner(),
            answers,
        };
        self.opened
            .send(stream)
            .map_err(|_| Status::unavailable("test over"))?;
        Ok(GrpcResponse::new(UnboundedReceiverStream::new(rx)))
    }
}

/// The server's end of one stream. Dropping it ends the stream OK.
struct ServerStream {
    requests: Streaming<pb::PublishStreamRequest>,
    answers: mpsc::UnboundedSender<Result<pb::PublishStreamResponse, Status>>,
}

impl ServerStream {
    /// The next request, or `None` once the client half-closed.
    async fn next(&mut self) -> Option<pb::PublishStreamRequest> {
        within("the next request", self.requests.message())
            .await
            .expect("the request stream broke")
    }

    async fn take(&mut self, n: usize) -> Vec<pb::PublishStreamRequest> {
        let mut requests = Vec::new();
        for _ in 0..n {
            requests.push(self.next().await.expect("half-closed too early"));
        }
        requests
    }

    fn answer(&self, answer: pb::PublishStreamAnswer) {
        self.answer_together(vec![answer]);
    }

    /// Answers that travel in one response, as Ferry sends those ready at the same moment.
    fn answer_together(&self, answers: Vec<pb::PublishStreamAnswer>) {
        let response = pb::PublishStreamResponse { answers };
        self.answers.send(Ok(response)).unwrap();
    }

    /// Accepts every event of `req`; sequences are `request_id * 100 + index`.
    fn ok(&self, req: &pb::PublishStreamRequest) {
        self.answer(accepted(req, &[]));
    }

    fn refuse(&self, req: &pb::PublishStreamRequest, error: pb::Failure, assigned: bool) {
        let assigned_event_ids = if assigned {
            req.events.iter().map(|e| e.event_id.clone()).collect()
        } else {
            Vec::new()
        };
        self.answer(pb::PublishStreamAnswer {
            request_id: req.request_id,
            error: Some(error),
            assigned_event_ids,
            ..Default::default()
        });
    }

    /// Ends the stream with `status` after the answers sent so far.
    fn end(self, status: Status) {
        self.answers.send(Err(status)).unwrap();
    }
}

/// Accepts every event of `req` but those refused by index; sequences are
/// `request_id * 100 + index`.
fn accepted(
    req: &pb::PublishStreamRequest,
    refused: &[(usize, pb::Failure)],
) -> pb::PublishStreamAnswer {
    let entries = req
        .events
        .iter()
        .enumerate()
        .map(|(i, e)| pb::PublishBatchEntry {
            outcome: Some(match refused.iter().find(|(at, _)| *at == i) {
                Some((_, f)) => Outcome::Error(f.clone()),
                None => Outcome::Result(pb::PublishResult {
                    event_id: e.event_id.clone(),
                    sequence: (req.request_id * 100) as i64 + i as i64,
                    ..Default::default()
                }),
            }),
        })
        .collect();
    pb::PublishStreamAnswer {
        request_id: req.request_id,
        entries,
        ..Default::default()
    }
}

/// A client whose channel is the fake, and the streams it opens.
fn harness() -> (Client, mpsc::UnboundedReceiver<ServerStream>) {
    harness_with_deadline(Duration::from_secs(120))
}

fn harness_with_deadline(deadline: Duration) -> (Client, mpsc::UnboundedReceiver<ServerStream>) {
    let (opened, streams) = mpsc::unbounded_channel();
    let server = PublisherServer::new(FakeStreams { opened });
    let route = tower::service_fn(move |req: http::Request<Body>| server.clone().oneshot(req));
    let policy = RetryPolicy {
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
        deadline,
        attempt_timeout: Duration::from_secs(60),
    };
    let client = Client::builder()
        .retry_policy(policy)
        .build_with_service(route);
    (client, streams)
}

async fn next_stream(streams: &mut mpsc::UnboundedReceiver<ServerStream>) -> ServerStream {
    within("a new stream", streams.recv()).await.unwrap()
}

fn event_ids(req: &pb::PublishStreamRequest) -> Vec<String> {
    req.events.iter().map(|e| e.event_id.clone()).collect()
}

/// Closes the publisher while the fake checks that the client half-closes (and sends nothing
/// else before it), then ends the stream OK.
async fn close_and_expect_half_close(publisher: &ferry_client::StreamPublisher, s: ServerStream) {
    let server = async move {
        let mut s = s;
        let next = s.next().await;
        assert!(next.is_none(), "expected the half-close, got {next:?}");
    };
    within("close", async { tokio::join!(publisher.close(), server) }).await;
}

// ---- the tests ----------------------------------------------------------------------------

#[tokio::test]
async fn answers_are_matched_by_request_id_in_any_order() {
    let (client, mut streams) = harness();
    let publisher = client.stream_publisher().start();
    let a = publisher.publish(Event::new("t", "a").key("k")).await;
    let b = publisher
        .publish(Event::new("t", "b").event_id("mine"))
        .await;
    let c = publisher
        .publish_batch([Event::new("t", "c1"), Event::new("t", "c2")])
        .await;

    let mut s = next_stream(&mut streams).await;
    let reqs = s.take(3).await;
    let ids: Vec<u64> = reqs.iter().map(|r| r.request_id).collect();
    assert!(
        ids[0] > 0 && ids[0] < ids[1] && ids[1] < ids[2],
        "request ids {ids:?}"
    );
    // Ids are set by the client, before the first send.
    let a_id = &reqs[0].events[0].event_id;
    assert_eq!(uuid::Uuid::parse_str(a_id).unwrap().get_version_num(), 7);
    assert_eq!(reqs[0].events[0].key.as_deref(), Some(&b"k"[..]));
    assert_eq!(event_ids(&reqs[1]), ["mine"]);
    assert_eq!(reqs[2].events.len(), 2);

    // Answered together in one response, last request first, its second event refused alone.
    let conflict = failure(Code::AlreadyExists, "EVENT_ID_CONFLICT", None);
    s.answer_together(vec![
        accepted(&reqs[2], &[(1, conflict)]),
        accepted(&reqs[0], &[]),
        accepted(&reqs[1], &[]),
    ]);

    let c = within("c", c).await.unwrap();
    assert_eq!(c.len(), 2);
    let c0 = c[0].as_ref().unwrap();
    assert_eq!(c0.event_id, reqs[2].events[0].event_id);
    assert_eq!(c0.sequence, (reqs[2].request_id * 100) as i64);
    let conflict = c[1].as_ref().unwrap_err();
    assert_eq!(
        (conflict.code(), conflict.reason()),
        (Code::AlreadyExists, Some("EVENT_ID_CONFLICT"))
    );
    let a = within("a", a).await.unwrap();
    assert_eq!((&a.event_id, a.sequence), (a_id, ids[0] as i64 * 100));
    let b = within("b", b).await.unwrap();
    assert_eq!(
        (b.event_id.as_str(), b.sequence),
        ("mine", ids[1] as i64 * 100)
    );

    close_and_expect_half_close(&publisher, s).await;
    let late = publisher.publish(Event::new("t", "late")).await;
    assert_eq!(late.await.unwrap_err().code(), Code::FailedPrecondition);
}

#[tokio::test]
async fn a_resource_exhausted_request_is_retried_after_its_retry_delay() {
    let (client, mut streams) = harness();
    let publisher = client.stream_publisher().start();
    let a = publisher.publish(Event::new("t", "a")).await;
    let b = publisher.publish(Event::new("t", "b")).await;
    let mut s = next_stream(&mut streams).await;
    let reqs = s.take(2).await;

    let delay = Duration::from_millis(300);
    let refused_at = Instant::now();
    s.refuse(
        &reqs[0],
        failure(Code::ResourceExhausted, "LOG_FULL", Some(delay)),
        false,
    );
    s.ok(&reqs[1]);
    within("b", b).await.unwrap();

    // The same request again (same request id, same event ids), on the same stream.
    let again = s.next().await.unwrap();
    assert!(
        refused_at.elapsed() >= delay,
        "resent after {:?}, before the retry_delay",
        refused_at.elapsed()
    );
    assert_eq!(again, reqs[0]);
    s.ok(&again);
    let a = within("a", a).await.unwrap();
    assert_eq!(a.event_id, reqs[0].events[0].event_id);
    close_and_expect_half_close(&publisher, s).await;
}

#[tokio::test]
async fn unanswered_requests_are_resent_in_order_after_shutting_down() {
    let (client, mut streams) = harness();
    let publisher = client.stream_publisher().start();
    let mut handles = Vec::new();
    for i in 0..5 {
        let event = Event::new("t", format!("p{i}")).key(format!("k{}", i % 2));
        handles.push(publisher.publish(event).await);
    }
    let mut first = next_stream(&mut streams).await;
    let reqs = first.take(5).await;
    first.ok(&reqs[0]);
    first.ok(&reqs[1]);
    // As Ferry's drain ends a stream: every request it read is answered, the rest were not read.
    first.end(ferry_status(
        Code::Unavailable,
        "SHUTTING_DOWN",
        Some(Duration::from_millis(50)),
    ));

    let mut second = next_stream(&mut streams).await;
    let resent = second.take(3).await;
    assert_eq!(
        resent,
        reqs[2..],
        "not the unanswered requests, in order, unchanged"
    );
    for req in &resent {
        second.ok(req);
    }
    for (handle, req) in handles.into_iter().zip(&reqs) {
        let result = within("a handle", handle).await.unwrap();
        assert_eq!(result.event_id, req.events[0].event_id);
    }
    close_and_expect_half_close(&publisher, second).await;
}

#[tokio::test]
async fn a_non_retryable_refusal_fails_only_its_request() {
    let (client, mut streams) = harness();
    let publisher = client.stream_publisher().start();
    let a = publisher.publish(Event::new("t", "a")).await;
    let b = publisher.publish(Event::new("", "b")).await;
    let c = publisher.publish(Event::new("t", "c")).await;
    let d = publisher.publish(Event::new("t", "d")).await;
    let mut s = next_stream(&mut streams).await;
    let reqs = s.take(4).await;

    let mut invalid = failure(Code::InvalidArgument, "FIELD_INVALID", None);
    invalid.field = "events[0].topic".into();
    s.refuse(&reqs[1], invalid, false);
    let timeout = failure(Code::DeadlineExceeded, "KAFKA_ACK_TIMEOUT", None);
    s.refuse(&reqs[2], timeout, true);
    s.ok(&reqs[0]);
    s.ok(&reqs[3]);

    within("a", a).await.unwrap();
    within("d", d).await.unwrap();
    let b = within("b", b).await.unwrap_err();
    assert_eq!(
        (b.code(), b.reason()),
        (Code::InvalidArgument, Some("FIELD_INVALID"))
    );
    assert_eq!(b.field_violations()[0].field, "events[0].topic");
    let c = within("c", c).await.unwrap_err();
    assert_eq!(
        (c.code(), c.reason()),
        (Code::DeadlineExceeded, Some("KAFKA_ACK_TIMEOUT"))
    );
    assert_eq!(c.assigned_event_ids(), event_ids(&reqs[2]));
    // Neither is sent again: the next thing the fake sees is the half-close.
    close_and_expect_half_close(&publisher, s).await;
}

#[tokio::test]
async fn a_stream_end_the_policy_does_not_retry_fails_the_unanswered_requests() {
    let (client, mut streams) = harness();
    let publisher = client.stream_publisher().start();
    let a = publisher.publish(Event::new("t", "a")).await;
    let b = publisher.publish(Event::new("t", "b")).await;
    let mut s = next_stream(&mut streams).await;
    let reqs = s.take(2).await;
    s.ok(&reqs[0]);
    s.end(ferry_status(Code::Internal, "INTERNAL", None));
    within("a", a).await.unwrap();
    let b = within("b", b).await.unwrap_err();
    assert_eq!((b.code(), b.reason()), (Code::Internal, Some("INTERNAL")));

    // The publisher stays usable: the next publish opens a new stream.
    let c = publisher.publish(Event::new("t", "c")).await;
    let mut s = next_stream(&mut streams).await;
    let req = s.next().await.unwrap();
    s.ok(&req);
    within("c", c).await.unwrap();
    close_and_expect_half_close(&publisher, s).await;
}

#[tokio::test]
async fn the_window_bounds_unanswered_requests() {
    let (client, mut streams) = harness();
    let publisher = client.stream_publisher().max_unanswered(2).start();
    let a = publisher.publish(Event::new("t", "a")).await;
    let b = publisher.publish(Event::new("t", "b")).await;
    assert_eq!(publisher.unanswered(), 2);

    // A third publish waits for room: its future is not ready and sends nothing.
    let mut third = pin!(publisher.publish(Event::new("t", "c")));
    let polled = std::future::poll_fn(|cx| Poll::Ready(third.as_mut().poll(cx).is_pending()));
    assert!(polled.await, "a publish beyond the window did not wait");

    let mut s = next_stream(&mut streams).await;
    let reqs = s.take(2).await;
    s.ok(&reqs[0]);
    within("a", a).await.unwrap();
    let c = within("the third publish", third).await;
    let req = s.next().await.unwrap();
    assert_eq!(req.events[0].payload.as_deref(), Some(&b"c"[..]));
    assert!(req.request_id > reqs[1].request_id);
    s.ok(&reqs[1]);
    s.ok(&req);
    within("b", b).await.unwrap();
    within("c", c).await.unwrap();
    within("flush", publisher.flush()).await;
    assert_eq!(publisher.unanswered(), 0);
    close_and_expect_half_close(&publisher, s).await;
}

#[tokio::test]
async fn a_request_unanswered_at_its_deadline_fails_with_its_event_ids() {
    let (client, mut streams) = harness_with_deadline(Duration::from_millis(500));
    let publisher = client.stream_publisher().start();
    let a = publisher.publish(Event::new("t", "a")).await;
    let mut s = next_stream(&mut streams).await;
    let req = s.next().await.unwrap();
    // Never answered: the handle fails once the deadline passed, naming the ids to publish again.
    let err = within("a", a).await.unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err}");
    assert_eq!(err.assigned_event_ids(), event_ids(&req));
    assert_eq!(publisher.unanswered(), 0);
    // A late answer is ignored.
    s.ok(&req);
    close_and_expect_half_close(&publisher, s).await;
}
