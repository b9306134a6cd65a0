//! The client against in-process fakes of Ferry's services (no network, no Ferry): which
//! codes are retried, RetryInfo honoured, event ids kept across retries, the subscriber's
//! acks, nacks, reconnects and clean stop.

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_client::pb::publisher_server::{Publisher, PublisherServer};
use ferry_client::pb::subscriber_server::{Subscriber as SubscriberService, SubscriberServer};
use ferry_client::pb::{self, subscribe_request::Request, subscribe_response::Response};
use ferry_client::{CancellationToken, Client, Code, Event, Retry, RetryPolicy, classify};
use prost::{Message, Name};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::{Stream, wrappers::UnboundedReceiverStream};
use tonic::body::Body;
use tonic::{Request as GrpcRequest, Response as GrpcResponse, Status, Streaming};
use tonic_types::{ErrorDetails, StatusExt};
use tower::ServiceExt;

// ---- statuses as Ferry sends them ------------------------------------------------------

fn ferry_status(code: Code, reason: &str, retry: Option<Duration>) -> Status {
    let mut details = ErrorDetails::with_error_info(reason, "ferry.v1", HashMap::new());
    if let Some(delay) = retry {
        details.set_retry_info(Some(delay));
    }
    Status::with_error_details(code, format!("{reason} from the fake"), details)
}

fn deadline_with_assigned_ids(ids: &[&str]) -> Status {
    let base = ferry_status(Code::DeadlineExceeded, "LOG_COMMIT_TIMEOUT", None);
    let mut rpc = tonic_types::pb::Status::decode(base.details()).unwrap();
    let assigned = pb::AssignedEventIds {
        event_ids: ids.iter().map(|s| s.to_string()).collect(),
    };
    rpc.details.push(prost_types::Any {
        type_url: pb::AssignedEventIds::type_url(),
        value: assigned.encode_to_vec(),
    });
    Status::with_details(
        Code::DeadlineExceeded,
        base.message(),
        rpc.encode_to_vec().into(),
    )
}

fn ok_response(event_id: &str) -> pb::PublishResponse {
    pb::PublishResponse {
        result: Some(pb::PublishResult {
            event_id: event_id.into(),
            sequence: 7,
            ..Default::default()
        }),
    }
}

// ---- a scripted Publisher --------------------------------------------------------------

/// Answers each call with the next scripted step (the last one repeats); records the requests.
#[derive(Clone, Default)]
struct FakePublisher {
    script: Arc<Mutex<VecDeque<Step>>>,
    seen: Arc<Mutex<Vec<Vec<pb::Event>>>>,
}

#[derive(Clone)]
enum Step {
    Fail(Status),
    Ok,
    Sleep(Duration),
    Batch(Vec<Option<pb::Failure>>),
}

impl FakePublisher {
    fn new(steps: Vec<Step>) -> Self {
        FakePublisher {
            script: Arc::new(Mutex::new(steps.into())),
            ..Default::default()
        }
    }
    fn next(&self, events: Vec<pb::Event>) -> Step {
        self.seen.lock().unwrap().push(events);
        let mut script = self.script.lock().unwrap();
        if script.len() > 1 {
            script.pop_front().unwrap()
        } else {
            script[0].clone()
        }
    }
    fn seen(&self) -> Vec<Vec<pb::Event>> {
        self.seen.lock().unwrap().clone()
    }
}

#[tonic::async_trait]
impl Publisher for FakePublisher {
    async fn publish(
        &self,
        req: GrpcRequest<pb::PublishRequest>,
    ) -> Result<GrpcResponse<pb::PublishResponse>, Status> {
        let event = req.into_inner().event.unwrap();
        match self.next(vec![event.clone()]) {
            Step::Fail(status) => Err(status),
            Step::Sleep(d) => {
                tokio::time::sleep(d).await;
                Ok(GrpcResponse::new(ok_response(&event.event_id)))
            }
            Step::Ok | Step::Batch(_) => Ok(GrpcResponse::new(ok_response(&event.event_id))),
        }
    }

    async fn publish_batch(
        &self,
        req: GrpcRequest<pb::PublishBatchRequest>,
    ) -> Result<GrpcResponse<pb::PublishBatchResponse>, Status> {
        let events = req.into_inner().events;
        let outcomes = match self.next(events.clone()) {
            Step::Fail(status) => return Err(status),
            Step::Batch(outcomes) => outcomes,
            _ => vec![None; events.len()],
        };
        let entries = events
            .iter()
            .zip(outcomes)
            .map(|(e, failure)| pb::PublishBatchEntry {
                outcome: Some(match failure {
                    Some(f) => pb::publish_batch_entry::Outcome::Error(f),
                    None => pb::publish_batch_entry::Outcome::Result(
                        ok_response(&e.event_id).result.unwrap(),
                    ),
                }),
            })
            .collect();
        Ok(GrpcResponse::new(pb::PublishBatchResponse { entries }))
    }

    // PublishStream has its own fake, in tests/fake_stream.rs.
    type PublishStreamStream = PublishStreamAnswers;

    async fn publish_stream(
        &self,
        _: GrpcRequest<Streaming<pb::PublishStreamRequest>>,
    ) -> Result<GrpcResponse<PublishStreamAnswers>, Status> {
        Err(Status::unimplemented("not scripted in this fake"))
    }
}

type PublishStreamAnswers =
    Pin<Box<dyn Stream<Item = Result<pb::PublishStreamResponse, Status>> + Send>>;

/// A client whose channel is the fakes, routed by service name as an HTTP/2 server would.
fn client_for(publisher: FakePublisher, subscriber: FakeSubscriber, policy: RetryPolicy) -> Client {
    let (publisher, subscriber) = (
        PublisherServer::new(publisher),
        SubscriberServer::new(subscriber),
    );
    let route = tower::service_fn(move |req: http::Request<Body>| {
        let (publisher, subscriber) = (publisher.clone(), subscriber.clone());
        async move {
            if req.uri().path().starts_with("/ferry.v1.Publisher/") {
                publisher.oneshot(req).await
            } else {
                subscriber.oneshot(req).await
            }
        }
    });
    Client::builder()
        .retry_policy(policy)
        .build_with_service(route)
}

fn fast_policy() -> RetryPolicy {
    RetryPolicy {
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
        deadline: Duration::from_secs(10),
        attempt_timeout: Duration::from_secs(5),
    }
}

fn publisher_client(steps: Vec<Step>, policy: RetryPolicy) -> (Client, FakePublisher) {
    let fake = FakePublisher::new(steps);
    (
        client_for(fake.clone(), FakeSubscriber::default(), policy),
        fake,
    )
}

// ---- classification without a server ----------------------------------------------------

#[test]
fn classification_follows_the_contract() {
    let d = Duration::from_millis(250);
    let cases = [
        (
            ferry_status(Code::Unavailable, "SHUTTING_DOWN", Some(d)),
            Retry::After(d),
        ),
        (Status::unavailable("tcp connect error"), Retry::Backoff),
        (
            ferry_status(Code::ResourceExhausted, "LOG_FULL", Some(d)),
            Retry::After(d),
        ),
        (
            ferry_status(Code::ResourceExhausted, "TOPIC_SHARE_FULL", None),
            Retry::Backoff,
        ),
        (Status::resource_exhausted("message too large"), Retry::No),
        (Status::cancelled("server stopping"), Retry::Backoff),
        (deadline_with_assigned_ids(&["a"]), Retry::Backoff),
        (Status::deadline_exceeded("in transit"), Retry::Backoff),
        (Status::unknown("h2 reset"), Retry::Backoff),
        (
            ferry_status(Code::InvalidArgument, "FIELD_INVALID", None),
            Retry::No,
        ),
        (
            ferry_status(Code::AlreadyExists, "EVENT_ID_CONFLICT", None),
            Retry::No,
        ),
        (
            ferry_status(Code::FailedPrecondition, "NO_DEAD_LETTER_TOPIC", None),
            Retry::No,
        ),
        (
            ferry_status(Code::NotFound, "SUBSCRIPTION_NOT_FOUND", None),
            Retry::No,
        ),
        (ferry_status(Code::Internal, "INTERNAL", None), Retry::No),
        (ferry_status(Code::Unknown, "INTERNAL", None), Retry::No),
    ];
    for (status, want) in cases {
        let err = ferry_client::FerryError::from(status);
        assert_eq!(classify(&err), want, "{err}");
        assert_eq!(err.is_retryable(), want != Retry::No, "{err}");
    }
}

#[test]
fn status_details_are_decoded() {
    let err = ferry_client::FerryError::from(deadline_with_assigned_ids(&["id-1", "id-2"]));
    assert_eq!(err.code(), Code::DeadlineExceeded);
    assert_eq!(err.reason(), Some("LOG_COMMIT_TIMEOUT"));
    assert_eq!(err.assigned_event_ids(), ["id-1", "id-2"]);

    let mut details = ErrorDetails::with_error_info("FIELD_INVALID", "ferry.v1", HashMap::new());
    details.add_bad_request_violation("event.topic", "must not be empty");
    let err = ferry_client::FerryError::from(Status::with_error_details(
        Code::InvalidArgument,
        "bad",
        details,
    ));
    assert_eq!(err.reason(), Some("FIELD_INVALID"));
    assert_eq!(err.field_violations()[0].field, "event.topic");
    assert_eq!(
        err.to_string(),
        "INVALID_ARGUMENT (FIELD_INVALID): bad [event.topic: must not be empty]"
    );
}

// ---- publish retries against the fake ------------------------------------------------------

#[tokio::test]
async fn retries_keep_the_event_id_and_honour_retry_info() {
    let delay = Duration::from_millis(300);
    let (client, fake) = publisher_client(
        vec![
            Step::Fail(ferry_status(
                Code::Unavailable,
                "SHUTTING_DOWN",
                Some(delay),
            )),
            Step::Fail(Status::cancelled("reached the port as the server stopped")),
            Step::Fail(deadline_with_assigned_ids(&["whatever"])),
            Step::Fail(ferry_status(
                Code::ResourceExhausted,
                "LOG_FULL",
                Some(delay),
            )),
            Step::Ok,
        ],
        fast_policy(),
    );
    let started = Instant::now();
    let result = client.publish(Event::new("t", "p").key("k")).await.unwrap();
    assert!(
        started.elapsed() >= delay * 2,
        "RetryInfo delays not honoured: {:?}",
        started.elapsed()
    );
    let seen = fake.seen();
    assert_eq!(seen.len(), 5);
    let id = &seen[0][0].event_id;
    assert!(
        seen.iter().all(|events| &events[0].event_id == id),
        "event id changed across retries"
    );
    assert_eq!(uuid::Uuid::parse_str(id).unwrap().get_version_num(), 7);
    assert_eq!(&result.event_id, id);
    assert_eq!(seen[0][0].key.as_deref(), Some(&b"k"[..]));
}

#[tokio::test]
async fn resource_exhausted_without_error_info_is_permanent() {
    let (client, fake) = publisher_client(
        vec![
            Step::Fail(Status::resource_exhausted("request larger than the limit")),
            Step::Ok,
        ],
        fast_policy(),
    );
    let err = client.publish(Event::new("t", "p")).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert_eq!(err.reason(), None);
    assert_eq!(fake.seen().len(), 1);
}

#[tokio::test]
async fn permanent_errors_surface_with_their_reason() {
    for (code, reason) in [
        (Code::InvalidArgument, "FIELD_INVALID"),
        (Code::AlreadyExists, "EVENT_ID_CONFLICT"),
        (Code::FailedPrecondition, "SOME_PRECONDITION"),
        (Code::NotFound, "SUBSCRIPTION_NOT_FOUND"),
        (Code::Internal, "INTERNAL"),
    ] {
        let (client, fake) = publisher_client(
            vec![Step::Fail(ferry_status(code, reason, None)), Step::Ok],
            fast_policy(),
        );
        let err = client
            .publish(Event::new("t", "p").event_id("mine"))
            .await
            .unwrap_err();
        assert_eq!((err.code(), err.reason()), (code, Some(reason)));
        assert_eq!(fake.seen().len(), 1, "{code:?} was retried");
        assert_eq!(fake.seen()[0][0].event_id, "mine");
    }
}

#[tokio::test]
async fn the_overall_deadline_bounds_the_retries() {
    let policy = RetryPolicy {
        deadline: Duration::from_millis(800),
        ..fast_policy()
    };
    let (client, fake) = publisher_client(vec![Step::Fail(Status::unavailable("down"))], policy);
    let started = Instant::now();
    let err = client.publish(Event::new("t", "p")).await.unwrap_err();
    // The last attempt's error: the server's, when the deadline fell in a wait between attempts;
    // DeadlineExceeded, when it fell during an attempt (one started with little time left).
    assert!(
        matches!(err.code(), Code::Unavailable | Code::DeadlineExceeded),
        "{err:?}"
    );
    assert!(
        started.elapsed() < Duration::from_millis(1200),
        "{:?}",
        started.elapsed()
    );
    assert!(fake.seen().len() > 3);
}

#[tokio::test]
async fn a_slow_attempt_times_out_and_is_retried() {
    let policy = RetryPolicy {
        attempt_timeout: Duration::from_millis(200),
        ..fast_policy()
    };
    let (client, fake) =
        publisher_client(vec![Step::Sleep(Duration::from_secs(3)), Step::Ok], policy);
    let started = Instant::now();
    client.publish(Event::new("t", "p")).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(2));
    let seen = fake.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0][0].event_id, seen[1][0].event_id);
}

#[tokio::test]
async fn a_batch_keeps_its_ids_across_retries_and_answers_per_event() {
    let conflict = pb::Failure {
        code: Code::AlreadyExists as i32,
        message: "known with other content".into(),
        reason: "EVENT_ID_CONFLICT".into(),
        ..Default::default()
    };
    let (client, fake) = publisher_client(
        vec![
            Step::Fail(Status::unavailable("down")),
            Step::Batch(vec![None, Some(conflict), None]),
        ],
        fast_policy(),
    );
    let events = [
        Event::new("t", "a"),
        Event::new("t", "b").event_id("given"),
        Event::new("t", "c"),
    ];
    let results = client.publish_batch(events).await.unwrap();
    let seen = fake.seen();
    assert_eq!(seen.len(), 2);
    let ids = |events: &Vec<pb::Event>| {
        events
            .iter()
            .map(|e| e.event_id.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&seen[0]), ids(&seen[1]));
    assert_eq!(seen[0][1].event_id, "given");
    assert!(results[0].is_ok() && results[2].is_ok());
    let err = results[1].as_ref().unwrap_err();
    assert_eq!(
        (err.code(), err.reason()),
        (Code::AlreadyExists, Some("EVENT_ID_CONFLICT"))
    );
}

// ---- a scripted Subscriber -------------------------------------------------------------

/// Stream 1 leases "e1" and ends UNAVAILABLE once it is acked; stream 2 leases "e2" and "e3"
/// and stays open. Records every request per stream, and whether the client half-closed.
#[derive(Clone, Default)]
struct FakeSubscriber {
    streams: Arc<Mutex<Vec<Arc<Mutex<StreamLog>>>>>,
    refuse_open: bool,
}

#[derive(Default, Debug)]
struct StreamLog {
    requests: Vec<Request>,
    half_closed: bool,
}

fn delivery(ack_id: &str, event_id: &str, attempt: i32) -> pb::Delivery {
    pb::Delivery {
        ack_id: ack_id.into(),
        event: Some(pb::ReceivedEvent {
            event_id: event_id.into(),
            topic: "t".into(),
            ..Default::default()
        }),
        delivery_attempt: attempt,
        ..Default::default()
    }
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<pb::SubscribeResponse, Status>> + Send>>;

#[tonic::async_trait]
impl SubscriberService for FakeSubscriber {
    type SubscribeStream = ResponseStream;

    async fn subscribe(
        &self,
        req: GrpcRequest<Streaming<pb::SubscribeRequest>>,
    ) -> Result<GrpcResponse<ResponseStream>, Status> {
        if self.refuse_open {
            return Err(ferry_status(
                Code::InvalidArgument,
                "TOPIC_NOT_ALLOWED",
                None,
            ));
        }
        let log = Arc::new(Mutex::new(StreamLog::default()));
        let number = {
            let mut streams = self.streams.lock().unwrap();
            streams.push(log.clone());
            streams.len()
        };
        let mut inbound = req.into_inner();
        let (tx, rx) = mpsc::unbounded_channel();
        let end = tx.clone();
        let send = move |r: Response| {
            tx.send(Ok(pb::SubscribeResponse { response: Some(r) }))
                .is_ok()
        };
        tokio::spawn(async move {
            let Ok(Some(pb::SubscribeRequest {
                request: Some(Request::Open(_)),
            })) = inbound.message().await
            else {
                return;
            };
            let opened = pb::SubscriptionOpened {
                lease_duration: Some(prost_types::Duration {
                    seconds: 2,
                    nanos: 0,
                }),
                ..Default::default()
            };
            send(Response::Opened(opened));
            let batch = if number == 1 {
                vec![delivery("a1", "e1", 1)]
            } else {
                vec![delivery("a2", "e2", 1), delivery("a3", "e3", 1)]
            };
            send(Response::Deliveries(pb::Deliveries { deliveries: batch }));
            loop {
                match inbound.message().await {
                    Ok(Some(pb::SubscribeRequest {
                        request: Some(request),
                    })) => {
                        let n = match &request {
                            Request::Ack(ids) => ids.ack_ids.len(),
                            Request::Nack(ids) => ids.ack_ids.len(),
                            Request::Extend(ids) => ids.ack_ids.len(),
                            Request::Open(_) => 0,
                        };
                        let acked_first = number == 1 && matches!(&request, Request::Ack(_));
                        log.lock().unwrap().requests.push(request);
                        let results = (0..n)
                            .map(|_| pb::AckIdResult {
                                status: pb::AckIdStatus::Applied as i32,
                                ..Default::default()
                            })
                            .collect();
                        send(Response::AckResults(pb::AckResults { results }));
                        if acked_first {
                            // As Ferry's shutdown ends a stream.
                            let shutdown = ferry_status(
                                Code::Unavailable,
                                "SHUTTING_DOWN",
                                Some(Duration::from_millis(50)),
                            );
                            let _ = end.send(Err(shutdown));
                            return;
                        }
                    }
                    Ok(None) => {
                        log.lock().unwrap().half_closed = true;
                        return;
                    }
                    _ => return,
                }
            }
        });
        let stream = UnboundedReceiverStream::new(rx);
        Ok(GrpcResponse::new(Box::pin(stream) as ResponseStream))
    }

    async fn ack(
        &self,
        _: GrpcRequest<pb::AckRequest>,
    ) -> Result<GrpcResponse<pb::AckResponse>, Status> {
        Err(Status::unimplemented("stream only"))
    }
    async fn nack(
        &self,
        _: GrpcRequest<pb::NackRequest>,
    ) -> Result<GrpcResponse<pb::NackResponse>, Status> {
        Err(Status::unimplemented("stream only"))
    }
    async fn extend_lease(
        &self,
        _: GrpcRequest<pb::ExtendLeaseRequest>,
    ) -> Result<GrpcResponse<pb::ExtendLeaseResponse>, Status> {
        Err(Status::unimplemented("stream only"))
    }
}

#[tokio::test]
async fn the_subscriber_acks_nacks_reconnects_and_stops_cleanly() {
    let fake = FakeSubscriber::default();
    let client = client_for(
        FakePublisher::new(vec![Step::Ok]),
        fake.clone(),
        fast_policy(),
    );
    let stop = CancellationToken::new();
    let handled = Arc::new(Mutex::new(Vec::new()));
    let handler = {
        let (handled, stop) = (handled.clone(), stop.clone());
        move |d: ferry_client::Delivery| {
            let (handled, stop) = (handled.clone(), stop.clone());
            async move {
                handled.lock().unwrap().push(d.event_id.clone());
                match d.event_id.as_str() {
                    "e2" => Err("e2 fails"),
                    "e3" => {
                        // Slow enough to need a lease extension (lease 2 s, extended every 1 s).
                        tokio::time::sleep(Duration::from_millis(1500)).await;
                        stop.cancel();
                        Ok(())
                    }
                    _ => Ok(()),
                }
            }
        }
    };
    let subscriber = client
        .subscriber("s", ["t"])
        .nack_delay(Duration::from_secs(3));
    tokio::time::timeout(Duration::from_secs(10), subscriber.run(stop, handler))
        .await
        .expect("the subscriber did not stop")
        .unwrap();

    // The half-close reaches the fake just after `run` returns.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let streams = fake.streams.lock().unwrap();
    assert_eq!(streams.len(), 2, "no reconnect after the stream ended");
    let first = streams[0].lock().unwrap();
    assert!(
        matches!(&first.requests[..], [Request::Ack(a)] if a.ack_ids == ["a1"]),
        "{first:?}"
    );
    let second = streams[1].lock().unwrap();
    let has = |pred: &dyn Fn(&Request) -> bool| second.requests.iter().any(pred);
    assert!(
        has(&|r| matches!(r, Request::Nack(n) if n.ack_ids == ["a2"]
        && n.redelivery_delay == Some(prost_types::Duration { seconds: 3, nanos: 0 }))),
        "{second:?}"
    );
    assert!(
        has(&|r| matches!(r, Request::Extend(e) if e.ack_ids.contains(&"a3".to_string()))),
        "{second:?}"
    );
    assert!(
        matches!(second.requests.last(), Some(Request::Ack(a)) if a.ack_ids == ["a3"]),
        "{second:?}"
    );
    assert!(second.half_closed, "the stream was not half-closed");
}

#[tokio::test]
async fn a_refused_subscription_is_surfaced() {
    let fake = FakeSubscriber {
        refuse_open: true,
        ..Default::default()
    };
    let client = client_for(FakePublisher::new(vec![Step::Ok]), fake, fast_policy());
    let run = client
        .subscriber("s", ["t"])
        .run(CancellationToken::new(), |_| async { Ok::<(), String>(()) });
    let err = tokio::time::timeout(Duration::from_secs(5), run)
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(
        (err.code(), err.reason()),
        (Code::InvalidArgument, Some("TOPIC_NOT_ALLOWED"))
    );
}

/// The futures can be spawned on a multi-threaded runtime.
#[test]
fn publish_and_run_futures_are_send() {
    fn assert_send<T: Send>(_: &T) {}
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let client = Client::builder().build().unwrap();
    assert_send(&client.publish(Event::new("t", "p")));
    assert_send(
        &client
            .subscriber("s", ["t"])
            .run(CancellationToken::new(), |_| async { Ok::<(), String>(()) }),
    );
}
