use std::collections::HashMap;
use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{Semaphore, mpsc};
use tokio::task::{self, JoinSet};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::Code;

use crate::pb::subscribe_request::Request;
use crate::pb::subscribe_response::Response;
use crate::pb::subscriber_client::SubscriberClient;
use crate::pb::{self, AckIdStatus, Header};
use crate::retry::Backoff;
use crate::{Client, FerryError};

pub use crate::pb::{DeliveryOrder, StartPosition};

/// Ferry's limit on ack ids in one request.
const MAX_IDS_PER_REQUEST: usize = 10_000;
/// How long a stop waits for Ferry to end the half-closed stream.
const CLOSE_WAIT: Duration = Duration::from_secs(5);
const DEFAULT_LEASE: Duration = Duration::from_secs(30);

/// One record handed to the handler.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub event_id: String,
    pub topic: String,
    /// `None` is a null key.
    pub key: Option<Vec<u8>>,
    /// `None` is a null value (a tombstone).
    pub payload: Option<Vec<u8>>,
    pub headers: Vec<Header>,
    pub partition: i32,
    pub offset: i64,
    /// 1 on the first delivery, +1 on each redelivery.
    pub delivery_attempt: i32,
    pub published_by_ferry: bool,
    pub publish_time: Option<SystemTime>,
    pub kafka_time: Option<SystemTime>,
}

impl Delivery {
    fn from_pb(d: pb::Delivery) -> (String, Delivery) {
        let event = d.event.unwrap_or_default();
        let time = |t: Option<prost_types::Timestamp>| t.and_then(|t| SystemTime::try_from(t).ok());
        let delivery = Delivery {
            event_id: event.event_id,
            topic: event.topic,
            key: event.key,
            payload: event.payload,
            headers: event.headers,
            partition: d.partition,
            offset: d.offset,
            delivery_attempt: d.delivery_attempt,
            published_by_ferry: event.published_by_ferry,
            publish_time: time(event.publish_time),
            kafka_time: time(event.kafka_time),
        };
        (d.ack_id, delivery)
    }
}

/// What became of one delivery's handler.
enum Outcome {
    Ack,
    Nack,
    /// Stopping before the handler ran: returned for immediate redelivery.
    NotStarted,
}

/// A subscriber loop, configured builder-style and started with [`Subscriber::run`].
#[derive(Clone)]
pub struct Subscriber {
    client: Client,
    open: pb::OpenSubscription,
    concurrency: usize,
    max_outstanding: Option<i32>,
    nack_delay: Option<Duration>,
}

impl Subscriber {
    pub(crate) fn new(client: Client, subscription: String, topics: Vec<String>) -> Self {
        Subscriber {
            client,
            open: pb::OpenSubscription {
                subscription,
                topics,
                ..Default::default()
            },
            concurrency: 16,
            max_outstanding: None,
            nack_delay: None,
        }
    }

    /// Handlers running at once (default 16).
    pub fn max_concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// Records leased to this stream at once, running or waiting for a handler (default: four
    /// per handler, at least 64; few enough that waiting ones do not hold leases for long).
    pub fn max_outstanding_events(mut self, n: i32) -> Self {
        self.max_outstanding = Some(n);
        self
    }

    /// Lease of each delivery (server default 30 s); renewed every half lease while its
    /// handler runs.
    pub fn lease_duration(mut self, lease: Duration) -> Self {
        self.open.lease_duration = prost_types::Duration::try_from(lease).ok();
        self
    }

    /// Redelivery delay after a handler error (default: the subscription's backoff).
    pub fn nack_delay(mut self, delay: Duration) -> Self {
        self.nack_delay = Some(delay);
        self
    }

    pub fn start_position(mut self, position: StartPosition) -> Self {
        self.open.start_position = position as i32;
        self
    }

    pub fn delivery_order(mut self, order: DeliveryOrder) -> Self {
        self.open.delivery_order = order as i32;
        self
    }

    /// Sends a record to `topic` after `max_attempts` deliveries (0: never).
    pub fn dead_letter_topic(mut self, topic: impl Into<String>, max_attempts: i32) -> Self {
        self.open.dead_letter_topic = topic.into();
        self.open.max_delivery_attempts = max_attempts;
        self
    }

    /// Delivers records to `handler` until `stop` is cancelled, reconnecting with backoff
    /// whenever the stream ends. An `Ok` from the handler acks the record, an `Err` (or a panic)
    /// nacks it. On stop, running handlers finish, their acks are sent, the stream is
    /// half-closed, and `run` returns `Ok`. Returns `Err` only when Ferry refuses the
    /// subscription itself (`INVALID_ARGUMENT`, `FAILED_PRECONDITION`).
    pub async fn run<F, Fut, E>(
        mut self,
        stop: CancellationToken,
        handler: F,
    ) -> Result<(), FerryError>
    where
        F: Fn(Delivery) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Display + Send + 'static,
    {
        let outstanding = i32::try_from(self.concurrency.saturating_mul(4)).unwrap_or(i32::MAX);
        self.open.max_outstanding_events = self.max_outstanding.unwrap_or(outstanding.max(64));
        let handler = Arc::new(handler);
        let permits = Arc::new(Semaphore::new(self.concurrency));
        let policy = &self.client.policy;
        let mut backoff = Backoff::new(policy.initial_backoff, policy.max_backoff);
        loop {
            let mut session = Session {
                sub: &self,
                stop: &stop,
                tasks: JoinSet::new(),
                ack_ids: HashMap::new(),
                acks: Vec::new(),
                nacks: Vec::new(),
                returns: Vec::new(),
                sent: 0,
                answered: 0,
            };
            let (err, opened) = match session.run(&handler, &permits).await {
                Ok(()) => return Ok(()),
                Err(end) => end,
            };
            // The stream's leases are void; handlers still running finish unobserved (holding
            // their permits, so concurrency stays bounded) and their records come again.
            session.tasks.detach_all();
            if matches!(err.code(), Code::InvalidArgument | Code::FailedPrecondition) {
                return Err(err);
            }
            if opened {
                backoff.reset();
            }
            let wait = err.retry_delay().unwrap_or_else(|| backoff.next_delay());
            tracing::warn!(
                subscription = %self.open.subscription, error = %err, ?wait,
                "subscribe stream ended, reconnecting"
            );
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}

/// One Subscribe stream: its outstanding leases and the answers waiting to be sent.
struct Session<'a> {
    sub: &'a Subscriber,
    stop: &'a CancellationToken,
    tasks: JoinSet<Outcome>,
    ack_ids: HashMap<task::Id, String>,
    acks: Vec<String>,
    nacks: Vec<String>,
    returns: Vec<String>,
    /// Requests sent after `open`, and answers to them received: Ferry answers each in order.
    sent: u64,
    answered: u64,
}

/// Why a stream ended, and whether it had opened (a reconnect then starts its backoff anew).
type End = (FerryError, bool);

impl Session<'_> {
    async fn run<F, Fut, E>(
        &mut self,
        handler: &Arc<F>,
        permits: &Arc<Semaphore>,
    ) -> Result<(), End>
    where
        F: Fn(Delivery) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Display + Send + 'static,
    {
        let (tx, rx) = mpsc::unbounded_channel();
        let open = Request::Open(self.sub.open.clone());
        tx.send(pb::SubscribeRequest {
            request: Some(open),
        })
        .expect("receiver is alive");
        let mut stub = SubscriberClient::new(self.sub.client.transport.clone())
            .max_decoding_message_size(64 << 20);
        let mut stream = tokio::select! {
            response = stub.subscribe(UnboundedReceiverStream::new(rx)) => {
                response.map_err(|s| (FerryError::from(s), false))?.into_inner()
            }
            _ = self.stop.cancelled() => return Ok(()),
        };
        let first = tokio::select! {
            first = stream.message() => first,
            _ = self.stop.cancelled() => return Ok(()),
        };
        let lease = match first {
            Ok(Some(pb::SubscribeResponse {
                response: Some(Response::Opened(o)),
            })) => o
                .lease_duration
                .and_then(|d| Duration::try_from(d).ok())
                .unwrap_or(DEFAULT_LEASE),
            Ok(Some(other)) => {
                let msg = format!("first answer is not `opened`: {other:?}");
                return Err((FerryError::new(Code::Internal, msg), false));
            }
            Ok(None) => {
                return Err((
                    FerryError::new(Code::Unavailable, "stream ended before `opened`"),
                    false,
                ));
            }
            Err(status) => return Err((status.into(), false)),
        };
        tracing::info!(subscription = %self.sub.open.subscription, ?lease, "subscribed");

        let every = (lease / 2).max(Duration::from_millis(500));
        let mut extend = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        let mut stopping = false;
        loop {
            if stopping && self.tasks.is_empty() {
                break;
            }
            tokio::select! {
                _ = self.stop.cancelled(), if !stopping => stopping = true,
                message = stream.message() => match message {
                    Ok(Some(response)) => self.on_response(response, stopping, handler, permits),
                    Ok(None) => {
                        let err = FerryError::new(Code::Unavailable, "stream ended by Ferry");
                        return Err((err, true));
                    }
                    Err(status) => return Err((status.into(), true)),
                },
                Some(joined) = self.tasks.join_next_with_id() => {
                    self.on_joined(joined);
                    while let Some(joined) = self.tasks.try_join_next_with_id() {
                        self.on_joined(joined);
                    }
                }
                _ = extend.tick() => {
                    let ids: Vec<String> = self.ack_ids.values().cloned().collect();
                    for chunk in ids.chunks(MAX_IDS_PER_REQUEST) {
                        let lease_duration = prost_types::Duration::try_from(lease).ok();
                        let extend = pb::ExtendIds { ack_ids: chunk.to_vec(), lease_duration };
                        self.send(&tx, Request::Extend(extend));
                    }
                }
            }
            self.flush(&tx);
        }
        // Half-close after the last answer, then wait until Ferry has answered every request
        // (it keeps a half-closed stream open for unary acks); leases still held when the
        // stream is dropped are returned for redelivery at once.
        drop(tx);
        let answered = tokio::time::timeout(CLOSE_WAIT, async {
            while self.answered < self.sent {
                match stream.message().await {
                    Ok(Some(response)) => self.on_answer(&response),
                    _ => break,
                }
            }
        });
        if answered.await.is_err() {
            tracing::warn!("Ferry did not answer every ack in {CLOSE_WAIT:?} after the half-close");
        }
        tracing::info!(subscription = %self.sub.open.subscription, "subscriber stopped");
        Ok(())
    }

    fn send(&mut self, tx: &mpsc::UnboundedSender<pb::SubscribeRequest>, request: Request) {
        if tx
            .send(pb::SubscribeRequest {
                request: Some(request),
            })
            .is_ok()
        {
            self.sent += 1;
        }
    }

    fn on_answer(&mut self, response: &pb::SubscribeResponse) {
        if matches!(
            response.response,
            Some(Response::AckResults(_) | Response::Rejected(_))
        ) {
            self.answered += 1;
        }
        log_answers(response);
    }

    fn on_response<F, Fut, E>(
        &mut self,
        response: pb::SubscribeResponse,
        stopping: bool,
        handler: &Arc<F>,
        permits: &Arc<Semaphore>,
    ) where
        F: Fn(Delivery) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Display + Send + 'static,
    {
        let Some(Response::Deliveries(batch)) = response.response else {
            self.on_answer(&response);
            return;
        };
        for d in batch.deliveries {
            let (ack_id, delivery) = Delivery::from_pb(d);
            if stopping {
                self.returns.push(ack_id);
                continue;
            }
            let (handler, permits, stop) = (handler.clone(), permits.clone(), self.stop.clone());
            let handle = self.tasks.spawn(async move {
                let _permit = tokio::select! {
                    permit = permits.acquire_owned() => permit.expect("never closed"),
                    _ = stop.cancelled() => return Outcome::NotStarted,
                };
                let (event_id, attempt) = (delivery.event_id.clone(), delivery.delivery_attempt);
                match handler(delivery).await {
                    Ok(()) => Outcome::Ack,
                    Err(e) => {
                        tracing::warn!(%event_id, attempt, error = %e, "handler failed, nacking");
                        Outcome::Nack
                    }
                }
            });
            self.ack_ids.insert(handle.id(), ack_id);
        }
    }

    fn on_joined(&mut self, joined: Result<(task::Id, Outcome), task::JoinError>) {
        let (id, outcome) = match joined {
            Ok((id, outcome)) => (id, outcome),
            Err(e) => {
                tracing::warn!(error = %e, "handler panicked, nacking");
                (e.id(), Outcome::Nack)
            }
        };
        let Some(ack_id) = self.ack_ids.remove(&id) else {
            return;
        };
        match outcome {
            Outcome::Ack => self.acks.push(ack_id),
            Outcome::Nack => self.nacks.push(ack_id),
            Outcome::NotStarted => self.returns.push(ack_id),
        }
    }

    /// Sends the collected acks and nacks on the stream.
    fn flush(&mut self, tx: &mpsc::UnboundedSender<pb::SubscribeRequest>) {
        let delay = self
            .sub
            .nack_delay
            .and_then(|d| prost_types::Duration::try_from(d).ok());
        let now = Some(prost_types::Duration::default());
        for chunk in std::mem::take(&mut self.acks).chunks(MAX_IDS_PER_REQUEST) {
            self.send(
                tx,
                Request::Ack(pb::AckIds {
                    ack_ids: chunk.to_vec(),
                }),
            );
        }
        let nacks = [
            (std::mem::take(&mut self.nacks), delay),
            (std::mem::take(&mut self.returns), now),
        ];
        for (ids, redelivery_delay) in nacks {
            for chunk in ids.chunks(MAX_IDS_PER_REQUEST) {
                let nack = pb::NackIds {
                    ack_ids: chunk.to_vec(),
                    redelivery_delay,
                    dead_letter: false,
                };
                self.send(tx, Request::Nack(nack));
            }
        }
    }
}

/// Logs the answers that need attention: refused requests and acks that did not apply.
fn log_answers(response: &pb::SubscribeResponse) {
    match &response.response {
        Some(Response::Rejected(f)) => {
            tracing::warn!(
                reason = %f.reason, field = %f.field, message = %f.message,
                "Ferry rejected a request"
            );
        }
        Some(Response::AckResults(results)) => {
            // One line per answer: after a stream loss every id of a large ack can be EXPIRED.
            let mut not_applied: Vec<(&str, usize)> = Vec::new();
            for r in &results.results {
                let status = AckIdStatus::try_from(r.status).unwrap_or(AckIdStatus::Unspecified);
                if !matches!(status, AckIdStatus::Applied | AckIdStatus::AlreadyAcked) {
                    match not_applied
                        .iter_mut()
                        .find(|(name, _)| *name == status.as_str_name())
                    {
                        Some((_, count)) => *count += 1,
                        None => not_applied.push((status.as_str_name(), 1)),
                    }
                }
            }
            if !not_applied.is_empty() {
                tracing::warn!(
                    ?not_applied,
                    of = results.results.len(),
                    "acks, nacks or extensions not applied"
                );
            }
        }
        _ => {}
    }
}
