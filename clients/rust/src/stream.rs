//! The stream publisher: many publishes pipelined on one `PublishStream`, each answered by its
//! request id, with the unary path's event ids, retry policy and error type.
//!
//! One background task (the driver) owns every unanswered request and the stream. Publishers
//! hand it requests through a channel once they hold a permit of the window (so at most
//! `max_unanswered` requests are unanswered); a reader task per stream hands it the answers and
//! the stream's end. Requests are kept in a map ordered by request id, which is the publish
//! order, so a new stream resends the unanswered ones in that order.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::Code;

use crate::pb::publisher_client::PublisherClient;
use crate::retry::{Backoff, Retry, classify};
use crate::{Client, Event, FerryError, PublishResult, pb};

/// Unanswered requests a [`StreamPublisher`] allows by default (Ferry reads as many).
pub const DEFAULT_MAX_UNANSWERED: usize = 1024;
/// How long `close` waits for Ferry to end the half-closed stream.
const CLOSE_WAIT: Duration = Duration::from_secs(5);
/// How far ahead the driver sleeps when no timer is due.
const IDLE_WAKE: Duration = Duration::from_secs(3600);

/// The per-event outcomes of one request, as [`Client::publish_batch`] returns them.
pub type BatchOutcome = Vec<Result<PublishResult, FerryError>>;

type Reply = oneshot::Sender<Result<BatchOutcome, FerryError>>;

/// Configures a [`StreamPublisher`]; made by [`Client::stream_publisher`].
#[derive(Clone)]
pub struct StreamPublisherBuilder {
    client: Client,
    max_unanswered: usize,
}

impl StreamPublisherBuilder {
    pub(crate) fn new(client: Client) -> Self {
        StreamPublisherBuilder {
            client,
            max_unanswered: DEFAULT_MAX_UNANSWERED,
        }
    }

    /// Requests that may be unanswered at once (default [`DEFAULT_MAX_UNANSWERED`]); a
    /// publish beyond that waits until an earlier one is answered.
    pub fn max_unanswered(mut self, n: usize) -> Self {
        self.max_unanswered = n.clamp(1, Semaphore::MAX_PERMITS);
        self
    }

    /// Starts the publisher's background task. Must be called inside a tokio runtime. Nothing
    /// connects until the first publish.
    pub fn start(self) -> StreamPublisher {
        let (commands, rx) = mpsc::unbounded_channel();
        let window = Arc::new(Semaphore::new(self.max_unanswered));
        tokio::spawn(Driver::new(self.client, rx).run());
        StreamPublisher {
            commands,
            window,
            max_unanswered: self.max_unanswered,
        }
    }
}

/// Publishes over one `PublishStream`: each publish is sent at once, without waiting for the
/// answers of earlier ones, and its [`PublishHandle`] completes when Ferry answers it.
///
/// - Every event gets its id before it is first sent (a UUIDv7 unless set), so a resend never
///   creates a new event: Ferry answers it `duplicate = true`.
/// - A request refused with `UNAVAILABLE` or `RESOURCE_EXHAUSTED` is sent again after the
///   answer's `retry_delay` (else the policy's backoff) while its deadline allows; any other
///   refusal fails that request's handle only.
/// - When the stream ends or breaks, a new one is opened with backoff and every unanswered
///   request is sent again, in publish order. A stream end the policy does not retry
///   (`INVALID_ARGUMENT`, `INTERNAL`, ...) fails every unanswered handle.
/// - A request still unanswered at the client's deadline (default 60 s after its publish)
///   fails: `DEADLINE_EXCEEDED` with its event ids if it was sent, else the last error.
///
/// Cheap to clone; clones share the stream. [`close`](StreamPublisher::close) waits for every
/// handle and half-closes the stream; dropping every clone does the same in the background.
#[derive(Clone)]
pub struct StreamPublisher {
    commands: mpsc::UnboundedSender<Command>,
    window: Arc<Semaphore>,
    max_unanswered: usize,
}

impl StreamPublisher {
    /// Queues one event for the stream; waits only while `max_unanswered` requests are
    /// unanswered. Await the handle for the result (an event refused alone, e.g.
    /// `EVENT_ID_CONFLICT`, is its `Err`). Publishes of one task are sent in call order.
    pub async fn publish(&self, event: Event) -> PublishHandle<PublishResult> {
        PublishHandle::new(self.submit(vec![event.into_pb()]).await)
    }

    /// Queues many events as one request (one write in Ferry); the handle answers per event,
    /// in order, as [`Client::publish_batch`] does.
    // Yielding the handle is the point: the first await is for room, the second for the answer.
    #[allow(clippy::async_yields_async)]
    pub fn publish_batch(
        &self,
        events: impl IntoIterator<Item = Event>,
    ) -> impl Future<Output = PublishHandle<BatchOutcome>> + Send + '_ {
        // The ids are fixed here, before anything is sent.
        let events: Vec<pb::Event> = events.into_iter().map(Event::into_pb).collect();
        async move { PublishHandle::new(self.submit(events).await) }
    }

    /// Waits until every request published before this call is answered (or has failed).
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.commands.send(Command::Flush(done)).is_ok() {
            let _ = wait.await;
        }
    }

    /// Stops taking publishes (later ones fail with `FAILED_PRECONDITION`), waits until every
    /// outstanding request is answered (or has failed), then half-closes the stream and waits
    /// (at most 5 s) for Ferry to end it.
    pub async fn close(&self) {
        self.window.close();
        let (done, wait) = oneshot::channel();
        if self.commands.send(Command::Close(done)).is_ok() {
            let _ = wait.await;
        }
    }

    /// Requests unanswered right now (published, not yet completed).
    pub fn unanswered(&self) -> usize {
        self.max_unanswered - self.window.available_permits()
    }

    async fn submit(
        &self,
        events: Vec<pb::Event>,
    ) -> oneshot::Receiver<Result<BatchOutcome, FerryError>> {
        let (reply, answer) = oneshot::channel();
        match self.window.clone().acquire_owned().await {
            Ok(permit) => {
                let command = Command::Publish {
                    events,
                    permit,
                    reply,
                };
                if let Err(mpsc::error::SendError(Command::Publish { reply, .. })) =
                    self.commands.send(command)
                {
                    let _ = reply.send(Err(closed()));
                }
            }
            Err(_) => {
                let _ = reply.send(Err(closed()));
            }
        }
        answer
    }
}

fn closed() -> FerryError {
    FerryError::new(Code::FailedPrecondition, "the stream publisher is closed")
}

/// The answer to one publish of a [`StreamPublisher`]: a future of the same result the unary
/// [`Client::publish`] (`T = PublishResult`) or [`Client::publish_batch`] (`T =
/// BatchOutcome`) returns. Dropping it does not withdraw the publish.
#[must_use = "a publish's outcome is only known by awaiting its handle"]
pub struct PublishHandle<T> {
    answer: oneshot::Receiver<Result<BatchOutcome, FerryError>>,
    _result: PhantomData<fn() -> T>,
}

impl<T: FromOutcome> PublishHandle<T> {
    fn new(answer: oneshot::Receiver<Result<BatchOutcome, FerryError>>) -> Self {
        PublishHandle {
            answer,
            _result: PhantomData,
        }
    }
}

impl<T: FromOutcome> Future for PublishHandle<T> {
    type Output = Result<T, FerryError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.answer)
            .poll(cx)
            .map(|answer| match answer {
                Ok(Ok(outcome)) => T::from_outcome(outcome),
                Ok(Err(err)) => Err(err),
                Err(_) => Err(FerryError::new(
                    Code::Cancelled,
                    "the stream publisher stopped before the request was answered",
                )),
            })
    }
}

/// What a [`PublishHandle`] makes of a request's per-event outcomes.
pub trait FromOutcome: Sized {
    fn from_outcome(outcome: BatchOutcome) -> Result<Self, FerryError>;
}

impl FromOutcome for PublishResult {
    fn from_outcome(mut outcome: BatchOutcome) -> Result<Self, FerryError> {
        match (outcome.pop(), outcome.is_empty()) {
            (Some(only), true) => only,
            _ => Err(FerryError::new(
                Code::Internal,
                "PublishStream answered a one-event request without exactly one entry",
            )),
        }
    }
}

impl FromOutcome for BatchOutcome {
    fn from_outcome(outcome: BatchOutcome) -> Result<Self, FerryError> {
        Ok(outcome)
    }
}

// ---- the driver --------------------------------------------------------------------------

enum Command {
    Publish {
        events: Vec<pb::Event>,
        permit: OwnedSemaphorePermit,
        reply: Reply,
    },
    Flush(oneshot::Sender<()>),
    Close(oneshot::Sender<()>),
}

/// What a stream's reader task reports, tagged with the stream's generation.
enum Inbound {
    Answer(u64, pb::PublishStreamAnswer),
    End(u64, Result<(), tonic::Status>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// To be sent on the next stream (none is open).
    Unsent,
    /// Sent on the open stream, not answered yet.
    Sent,
    /// Refused with a retryable code; sent again at this time.
    Waiting(Instant),
}

struct Pending {
    request: pb::PublishStreamRequest,
    reply: Reply,
    /// Holds the request's place in the window until it is completed.
    _permit: OwnedSemaphorePermit,
    deadline: Instant,
    state: State,
    backoff: Backoff,
    last_error: Option<FerryError>,
}

struct OpenStream {
    generation: u64,
    requests: mpsc::UnboundedSender<pb::PublishStreamRequest>,
    reader: JoinHandle<()>,
    /// The last answer, or when the first unanswered request was sent: a stream that answers
    /// nothing for the attempt timeout while requests wait is given up.
    last_progress: Instant,
}

struct Driver {
    client: Client,
    commands: mpsc::UnboundedReceiver<Command>,
    commands_open: bool,
    inbound_tx: mpsc::UnboundedSender<Inbound>,
    inbound: mpsc::UnboundedReceiver<Inbound>,
    next_id: u64,
    pending: BTreeMap<u64, Pending>,
    deadlines: BTreeSet<(Instant, u64)>,
    waiting: BTreeSet<(Instant, u64)>,
    sent: usize,
    unsent: usize,
    stream: Option<OpenStream>,
    generation: u64,
    reconnect_at: Option<Instant>,
    backoff: Backoff,
    last_stream_error: Option<FerryError>,
    flushes: Vec<(u64, oneshot::Sender<()>)>,
    closes: Vec<oneshot::Sender<()>>,
}

impl Driver {
    fn new(client: Client, commands: mpsc::UnboundedReceiver<Command>) -> Self {
        let (inbound_tx, inbound) = mpsc::unbounded_channel();
        let backoff = Backoff::new(client.policy.initial_backoff, client.policy.max_backoff);
        Driver {
            client,
            commands,
            commands_open: true,
            inbound_tx,
            inbound,
            next_id: 1, // 0 is the answer to an undecodable message
            pending: BTreeMap::new(),
            deadlines: BTreeSet::new(),
            waiting: BTreeSet::new(),
            sent: 0,
            unsent: 0,
            stream: None,
            generation: 0,
            reconnect_at: None,
            backoff,
            last_stream_error: None,
            flushes: Vec::new(),
            closes: Vec::new(),
        }
    }

    async fn run(mut self) {
        loop {
            self.answer_flushes();
            if self.pending.is_empty() && (!self.closes.is_empty() || !self.commands_open) {
                self.finish().await;
                return;
            }
            self.connect_if_due();
            let wake = self.next_wake();
            tokio::select! {
                command = self.commands.recv(), if self.commands_open => match command {
                    Some(command) => self.on_command(command),
                    None => self.commands_open = false,
                },
                Some(inbound) = self.inbound.recv() => self.on_inbound(inbound),
                _ = tokio::time::sleep_until(wake) => self.on_timers(),
            }
        }
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Publish {
                events,
                permit,
                reply,
            } => {
                let id = self.next_id;
                self.next_id += 1;
                let request = pb::PublishStreamRequest {
                    request_id: id,
                    events,
                    ack_level: self.client.ack_level as i32,
                    kafka_wait: self.client.kafka_wait_pb(),
                };
                let policy = &self.client.policy;
                let deadline = Instant::now() + policy.deadline;
                self.pending.insert(
                    id,
                    Pending {
                        request,
                        reply,
                        _permit: permit,
                        deadline,
                        state: State::Unsent,
                        backoff: Backoff::new(policy.initial_backoff, policy.max_backoff),
                        last_error: None,
                    },
                );
                self.deadlines.insert((deadline, id));
                self.unsent += 1;
                if self.stream.is_some() {
                    self.send(id);
                }
            }
            Command::Flush(done) => self.flushes.push((self.next_id, done)),
            Command::Close(done) => self.closes.push(done),
        }
    }

    fn on_inbound(&mut self, inbound: Inbound) {
        let current = self.stream.as_ref().map(|s| s.generation);
        match inbound {
            Inbound::Answer(generation, response) if current == Some(generation) => {
                if let Some(stream) = &mut self.stream {
                    stream.last_progress = Instant::now();
                }
                self.backoff.reset();
                self.on_answer(response);
            }
            Inbound::End(generation, end) if current == Some(generation) => match end {
                Ok(()) if self.sent == 0 => self.stream = None,
                Ok(()) => self.break_stream(FerryError::new(
                    Code::Unavailable,
                    "PublishStream ended with requests unanswered",
                )),
                Err(status) => self.break_stream(status.into()),
            },
            // From a stream given up already: its unanswered requests are being resent.
            _ => {}
        }
    }

    fn on_answer(&mut self, response: pb::PublishStreamAnswer) {
        let id = response.request_id;
        let Some(pending) = self.pending.get_mut(&id) else {
            if id == 0 {
                tracing::error!(error = ?response.error, "Ferry could not decode a stream request");
            } else {
                tracing::debug!(request_id = id, "answer to a request no longer waiting");
            }
            return;
        };
        if pending.state != State::Sent {
            tracing::debug!(
                request_id = id,
                "answer to a request not sent on this stream"
            );
            return;
        }
        let Some(failure) = response.error else {
            let outcome = response
                .entries
                .into_iter()
                .map(|entry| match entry.outcome {
                    Some(pb::publish_batch_entry::Outcome::Result(r)) => Ok(r.into()),
                    Some(pb::publish_batch_entry::Outcome::Error(f)) => {
                        Err(FerryError::from_failure(&f))
                    }
                    None => Err(FerryError::new(
                        Code::Internal,
                        "stream entry without an outcome",
                    )),
                })
                .collect();
            self.complete(id, Ok(outcome));
            return;
        };
        let err =
            FerryError::from_failure(&failure).with_assigned_event_ids(response.assigned_event_ids);
        let wait = match answer_retry(&err) {
            Retry::No => None,
            Retry::Backoff => Some(pending.backoff.next_delay()),
            Retry::After(delay) => {
                pending.backoff.next_delay();
                Some(delay)
            }
        };
        let now = Instant::now();
        match wait {
            Some(wait) if now + wait < pending.deadline => {
                tracing::info!(request_id = id, error = %err, ?wait, "stream publish: retrying");
                pending.last_error = Some(err);
                self.set_state(id, State::Waiting(now + wait));
            }
            _ => self.complete(id, Err(err)),
        }
    }

    fn on_timers(&mut self) {
        let now = Instant::now();
        // Each entry is popped before its request is touched, so no loop can spin on an entry.
        while let Some(&(at, id)) = self.waiting.first() {
            if at > now {
                break;
            }
            self.waiting.pop_first();
            self.set_state(id, State::Unsent);
            if self.stream.is_some() {
                self.send(id);
            }
        }
        while let Some(&(at, id)) = self.deadlines.first() {
            if at > now {
                break;
            }
            self.deadlines.pop_first();
            let err = match self.pending.get(&id) {
                Some(p) if p.state == State::Sent => {
                    let ids = p.request.events.iter().map(|e| e.event_id.clone());
                    FerryError::new(
                        Code::DeadlineExceeded,
                        "no answer before the publish deadline; the events may be logged: \
                         publish them again with the same ids",
                    )
                    .with_assigned_event_ids(ids.collect())
                }
                Some(p) => p
                    .last_error
                    .clone()
                    .or_else(|| self.last_stream_error.clone())
                    .unwrap_or_else(|| {
                        FerryError::new(Code::DeadlineExceeded, "not sent before the deadline")
                    }),
                None => FerryError::new(Code::DeadlineExceeded, "deadline"),
            };
            self.complete(id, Err(err));
        }
        if let Some(stream) = &self.stream {
            let silent = now.saturating_duration_since(stream.last_progress);
            let limit = self.client.attempt_timeout();
            if self.sent > 0 && silent >= limit {
                let msg = format!("no answer on PublishStream in {silent:?}");
                self.break_stream(FerryError::new(Code::DeadlineExceeded, msg));
            }
        }
    }

    fn next_wake(&self) -> Instant {
        let mut wake = Instant::now() + IDLE_WAKE;
        if let Some(&(at, _)) = self.deadlines.first() {
            wake = wake.min(at);
        }
        if let Some(&(at, _)) = self.waiting.first() {
            wake = wake.min(at);
        }
        match (&self.stream, self.reconnect_at) {
            (Some(stream), _) if self.sent > 0 => {
                wake = wake.min(stream.last_progress + self.client.attempt_timeout());
            }
            (None, Some(at)) if self.unsent > 0 => wake = wake.min(at),
            _ => {}
        }
        wake
    }

    /// Opens a stream when requests wait for one and the reconnect backoff has passed.
    fn connect_if_due(&mut self) {
        let due = self.reconnect_at.is_none_or(|at| at <= Instant::now());
        if self.stream.is_some() || self.unsent == 0 || !due {
            return;
        }
        self.generation += 1;
        let generation = self.generation;
        let (requests, outgoing) = mpsc::unbounded_channel();
        let mut stub = PublisherClient::new(self.client.transport.clone());
        let inbound = self.inbound_tx.clone();
        let reader = tokio::spawn(async move {
            let end = async {
                let mut answers = stub
                    .publish_stream(UnboundedReceiverStream::new(outgoing))
                    .await?
                    .into_inner();
                // One response carries every answer Ferry had ready at that moment.
                while let Some(response) = answers.message().await? {
                    for answer in response.answers {
                        if inbound.send(Inbound::Answer(generation, answer)).is_err() {
                            return Ok(());
                        }
                    }
                }
                Ok(())
            }
            .await;
            let _ = inbound.send(Inbound::End(generation, end));
        });
        self.stream = Some(OpenStream {
            generation,
            requests,
            reader,
            last_progress: Instant::now(),
        });
        let unsent: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.state == State::Unsent)
            .map(|(&id, _)| id)
            .collect();
        tracing::debug!(generation, resending = unsent.len(), "PublishStream opened");
        for id in unsent {
            self.send(id);
        }
    }

    /// Sends an unsent request on the open stream. If the stream is gone already, its end is on
    /// the way and the request is sent again on the next one.
    fn send(&mut self, id: u64) {
        let Some(stream) = &mut self.stream else {
            return;
        };
        let Some(pending) = self.pending.get(&id) else {
            return;
        };
        if self.sent == 0 {
            stream.last_progress = Instant::now();
        }
        let _ = stream.requests.send(pending.request.clone());
        self.set_state(id, State::Sent);
    }

    /// Gives the stream up: its unanswered requests wait for the next one, or all fail when the
    /// policy does not retry `err`.
    fn break_stream(&mut self, err: FerryError) {
        if let Some(stream) = self.stream.take() {
            stream.reader.abort();
        }
        let sent: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.state == State::Sent)
            .map(|(&id, _)| id)
            .collect();
        let wait = match classify(&err) {
            Retry::No => {
                tracing::warn!(error = %err, "PublishStream failed; failing its unanswered requests");
                let ids: Vec<u64> = self.pending.keys().copied().collect();
                for id in ids {
                    self.complete(id, Err(err.clone()));
                }
                self.reconnect_at = None;
                return;
            }
            Retry::Backoff => self.backoff.next_delay(),
            Retry::After(delay) => {
                self.backoff.next_delay();
                delay
            }
        };
        tracing::warn!(
            error = %err, ?wait, unanswered = sent.len(),
            "PublishStream ended; resending its unanswered requests on a new stream"
        );
        for id in sent {
            if let Some(pending) = self.pending.get_mut(&id) {
                pending.last_error = Some(err.clone());
            }
            self.set_state(id, State::Unsent);
        }
        self.reconnect_at = Some(Instant::now() + wait);
        self.last_stream_error = Some(err);
    }

    fn set_state(&mut self, id: u64, state: State) {
        let Some(pending) = self.pending.get_mut(&id) else {
            return;
        };
        match pending.state {
            State::Unsent => self.unsent -= 1,
            State::Sent => self.sent -= 1,
            State::Waiting(at) => {
                self.waiting.remove(&(at, id));
            }
        }
        pending.state = state;
        match state {
            State::Unsent => self.unsent += 1,
            State::Sent => self.sent += 1,
            State::Waiting(at) => {
                self.waiting.insert((at, id));
            }
        }
    }

    /// Answers a request's handle and frees its place in the window.
    fn complete(&mut self, id: u64, result: Result<BatchOutcome, FerryError>) {
        // Out of every count first; Unsent is the state that owns no timer.
        self.set_state(id, State::Unsent);
        let Some(pending) = self.pending.remove(&id) else {
            return;
        };
        self.unsent -= 1;
        self.deadlines.remove(&(pending.deadline, id));
        // Room in the window first: whoever sees the answer also sees the room.
        let Pending { reply, _permit, .. } = pending;
        drop(_permit);
        let _ = reply.send(result);
    }

    fn answer_flushes(&mut self) {
        if self.flushes.is_empty() {
            return;
        }
        let oldest = self.pending.keys().next().copied().unwrap_or(u64::MAX);
        let (done, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.flushes)
            .into_iter()
            .partition(|(upto, _)| oldest >= *upto);
        self.flushes = waiting;
        for (_, done) in done {
            let _ = done.send(());
        }
    }

    /// Nothing is unanswered and the publisher is closed or dropped: half-close the stream,
    /// wait for Ferry to end it, and stop.
    async fn finish(&mut self) {
        if let Some(OpenStream {
            generation,
            requests,
            reader,
            ..
        }) = self.stream.take()
        {
            drop(requests); // the half-close
            let inbound = &mut self.inbound;
            let end = tokio::time::timeout(CLOSE_WAIT, async {
                while let Some(message) = inbound.recv().await {
                    if let Inbound::End(g, end) = message
                        && g == generation
                    {
                        return end;
                    }
                }
                Ok(())
            })
            .await;
            match end {
                Ok(Ok(())) => tracing::debug!("PublishStream closed"),
                Ok(Err(status)) => {
                    tracing::info!(error = %FerryError::from(status), "PublishStream ended on close");
                }
                Err(_) => tracing::warn!("Ferry did not end PublishStream in {CLOSE_WAIT:?}"),
            }
            reader.abort();
        }
        // Publishes that raced with the close are refused; waiting flushes return.
        self.commands.close();
        while let Ok(command) = self.commands.try_recv() {
            match command {
                Command::Publish { reply, .. } => {
                    let _ = reply.send(Err(closed()));
                }
                Command::Flush(done) | Command::Close(done) => {
                    let _ = done.send(());
                }
            }
        }
        for done in self.closes.drain(..) {
            let _ = done.send(());
        }
        for (_, done) in self.flushes.drain(..) {
            let _ = done.send(());
        }
    }
}

/// How a request's refusal on the stream is retried: `UNAVAILABLE` (`LOG_WRITE_FAILED`) and
/// `RESOURCE_EXHAUSTED` (`LOG_FULL`, `TOPIC_SHARE_FULL`, `DISK_FULL`) after the answer's
/// `retry_delay` (else the policy's backoff); every other code is the request's error
/// (`DEADLINE_EXCEEDED` `KAFKA_ACK_TIMEOUT` included: its events are logged and will reach
/// Kafka, their ids are in [`FerryError::assigned_event_ids`]).
fn answer_retry(err: &FerryError) -> Retry {
    match (err.code(), err.retry_delay()) {
        (Code::Unavailable | Code::ResourceExhausted, Some(delay)) => Retry::After(delay),
        (Code::Unavailable | Code::ResourceExhausted, None) => Retry::Backoff,
        _ => Retry::No,
    }
}
