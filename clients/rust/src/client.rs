use std::future::Future;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;
use tonic::Code;
use tonic::body::Body;
use tonic::transport::Endpoint;
use tower::util::BoxCloneSyncService;
use tower::{BoxError, Service, ServiceExt};

use crate::credentials::{invalid, is_local};
use crate::pb::publisher_client::PublisherClient;
use crate::retry::{Backoff, Retry, RetryPolicy, classify};
use crate::{Credentials, FerryError, StreamPublisherBuilder, Subscriber, pb};

pub use crate::pb::{AckLevel, Header, KafkaPosition};

/// The HTTP/2 service the stubs call through: a tonic `Channel`, or an in-process fake in tests.
/// Its error is a `Status` (as tonic would make of it anyway), not a boxed error: with a boxed
/// one the compiler cannot prove the publish and subscribe futures `Send`.
pub(crate) type Transport =
    BoxCloneSyncService<http::Request<Body>, http::Response<Body>, tonic::Status>;

/// The address used when neither the builder nor `FERRY_ADDR` names one.
pub const DEFAULT_ADDR: &str = "127.0.0.1:50051";

/// One event to publish. Unset `key` / `payload` are Kafka nulls; set and empty are empty.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Event {
    pub topic: String,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub headers: Vec<Header>,
    /// The idempotency key; the client assigns a UUIDv7 when it is `None`.
    pub event_id: Option<String>,
}

impl Event {
    pub fn new(topic: impl Into<String>, payload: impl Into<Vec<u8>>) -> Self {
        Event {
            topic: topic.into(),
            payload: Some(payload.into()),
            ..Default::default()
        }
    }

    pub fn key(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Appends a header; keys may repeat and keep their order.
    pub fn header(mut self, key: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push(Header {
            key: key.into(),
            value: Some(value.into()),
        });
        self
    }

    pub fn event_id(mut self, event_id: impl Into<String>) -> Self {
        self.event_id = Some(event_id.into());
        self
    }

    /// The wire event, with the event id fixed once so that every retry sends the same one.
    pub(crate) fn into_pb(self) -> pb::Event {
        pb::Event {
            topic: self.topic,
            key: self.key,
            payload: self.payload,
            headers: self.headers,
            event_id: self
                .event_id
                .unwrap_or_else(|| uuid::Uuid::now_v7().to_string()),
        }
    }
}

/// An accepted event.
#[derive(Debug, Clone, PartialEq)]
pub struct PublishResult {
    pub event_id: String,
    /// Ferry's write-ahead log sequence number.
    pub sequence: i64,
    /// True when the event id was already known: nothing new was written.
    pub duplicate: bool,
    /// When Ferry logged the event (for a duplicate: the original).
    pub publish_time: Option<SystemTime>,
    /// Where Kafka stored it, with [`AckLevel::Kafka`].
    pub kafka_position: Option<KafkaPosition>,
}

impl From<pb::PublishResult> for PublishResult {
    fn from(r: pb::PublishResult) -> Self {
        PublishResult {
            event_id: r.event_id,
            sequence: r.sequence,
            duplicate: r.duplicate,
            publish_time: r.publish_time.and_then(|t| SystemTime::try_from(t).ok()),
            kafka_position: r.kafka_position,
        }
    }
}

/// Builds a [`Client`]. Nothing connects until the first call.
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    addr: Option<String>,
    policy: RetryPolicy,
    ack_level: AckLevel,
    kafka_wait: Option<Duration>,
    credentials: Credentials,
}

impl ClientBuilder {
    /// `host:port`, a URI (`http://host:port`, or `https://host:port` with TLS) or a unix socket
    /// (`unix:/path`); default `FERRY_ADDR`, else [`DEFAULT_ADDR`].
    pub fn addr(mut self, addr: impl Into<String>) -> Self {
        self.addr = Some(addr.into());
        self
    }

    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Overall time of one publish call, retries included (default 60 s).
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.policy.deadline = deadline;
        self
    }

    /// When Ferry answers a publish (default: once the event is durably logged).
    pub fn ack_level(mut self, level: AckLevel) -> Self {
        self.ack_level = level;
        self
    }

    /// With [`AckLevel::Kafka`]: how long Ferry waits for Kafka (default: the server's).
    pub fn kafka_wait(mut self, wait: Duration) -> Self {
        self.kafka_wait = Some(wait);
        self
    }

    /// TLS and a bearer token (default: plaintext, no token), e.g. [`Credentials::from_env`].
    /// Only [`ClientBuilder::build`] uses them.
    pub fn credentials(mut self, credentials: Credentials) -> Self {
        self.credentials = credentials;
        self
    }

    /// A client over an HTTP/2 channel (TLS when the credentials say so) that connects lazily
    /// and reconnects by itself. The credentials' files are read here: one that cannot be
    /// loaded, or a token without TLS for an address that is neither a loopback host nor a unix
    /// socket, is an `INVALID_ARGUMENT` error. Must be called inside a tokio runtime.
    pub fn build(self) -> Result<Client, FerryError> {
        let addr = match self.addr.clone() {
            Some(addr) => addr,
            None => std::env::var("FERRY_ADDR").unwrap_or_else(|_| DEFAULT_ADDR.to_string()),
        };
        let tls = self.credentials.tls();
        let uri = endpoint_uri(&addr, tls.is_some())?;
        let token = self.credentials.resolve_token()?;
        if token.is_some() && tls.is_none() && !is_local(&addr) {
            return Err(invalid(format!(
                "a token without TLS is sent in clear text only to a loopback address or a unix \
                 socket, not to {addr}: set TLS in the credentials (FERRY_TLS_CA)"
            )));
        }
        let mut endpoint = Endpoint::from_shared(uri.clone())
            .map_err(|e| invalid(format!("address {uri}: {}", chain(&e))))?
            .connect_timeout(Duration::from_secs(5));
        if let Some(tls) = tls {
            endpoint = endpoint
                .tls_config(tls.client_config()?)
                .map_err(|e| invalid(format!("TLS for {uri}: {}", chain(&e))))?;
        }
        let channel = endpoint.connect_lazy();
        let Some(token) = token else {
            return Ok(self.build_with_service(channel));
        };
        let mut bearer = http::HeaderValue::try_from(format!("Bearer {token}"))
            .map_err(|_| invalid("the bearer token holds characters a header cannot carry"))?;
        // Kept out of HPACK's index and shown as "Sensitive" by Debug.
        bearer.set_sensitive(true);
        let channel = channel.map_request(move |mut request: http::Request<Body>| {
            request
                .headers_mut()
                .insert(http::header::AUTHORIZATION, bearer.clone());
            request
        });
        Ok(self.build_with_service(channel))
    }

    /// A client over any HTTP/2 service that speaks gRPC, e.g. a generated server in a test.
    /// The credentials are not applied: the service carries its own transport and headers.
    pub fn build_with_service<S>(self, service: S) -> Client
    where
        S: Service<http::Request<Body>, Response = http::Response<Body>>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send + 'static,
    {
        Client {
            transport: BoxCloneSyncService::new(
                service.map_err(|e| tonic::Status::from_error(e.into())),
            ),
            policy: self.policy,
            ack_level: self.ack_level,
            kafka_wait: self.kafka_wait,
        }
    }
}

/// The URI tonic connects to: `host:port` gets `https://` with TLS, `http://` without; a URI or
/// a unix socket is kept, unless its scheme contradicts the credentials (tonic would then send
/// plaintext where the credentials ask for TLS, or fail every call).
fn endpoint_uri(addr: &str, tls: bool) -> Result<String, FerryError> {
    let scheme = addr.split_once("://").map(|(scheme, _)| scheme);
    if addr.starts_with("unix:") {
        if tls {
            return Err(invalid(format!(
                "address {addr}: this client speaks TLS only over TCP, not over a unix socket"
            )));
        }
        return Ok(addr.to_string());
    }
    match (scheme, tls) {
        (None, true) => Ok(format!("https://{addr}")),
        (None, false) => Ok(format!("http://{addr}")),
        (Some("https"), true) | (Some("http"), false) => Ok(addr.to_string()),
        (Some("http"), true) => Err(invalid(format!(
            "address {addr}: TLS is set, so the address is host:port or https://"
        ))),
        (Some("https"), false) => Err(invalid(format!(
            "address {addr}: https:// needs TLS in the credentials (FERRY_TLS_CA)"
        ))),
        (Some(other), _) => Err(invalid(format!(
            "address {addr}: scheme {other}:// is not http, https or unix"
        ))),
    }
}

/// An error and its sources, which tonic's transport errors keep the useful part in.
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A Ferry client: publishes with retries and opens subscribers. Cheap to clone; clones share
/// one connection.
#[derive(Clone)]
pub struct Client {
    pub(crate) transport: Transport,
    pub(crate) policy: RetryPolicy,
    pub(crate) ack_level: AckLevel,
    kafka_wait: Option<Duration>,
}

impl Client {
    pub fn builder() -> ClientBuilder {
        ClientBuilder {
            addr: None,
            policy: RetryPolicy::default(),
            ack_level: AckLevel::Durable,
            kafka_wait: None,
            credentials: Credentials::default(),
        }
    }

    /// A client for `FERRY_ADDR` (default [`DEFAULT_ADDR`]) with the default policy, over
    /// plaintext without a token; `Client::builder().credentials(Credentials::from_env())`
    /// adds the `FERRY_TLS_*` and `FERRY_TOKEN_FILE` settings.
    pub fn from_env() -> Result<Client, FerryError> {
        Client::builder().build()
    }

    /// Publishes one event, retrying per the [`RetryPolicy`] with the same event id.
    pub async fn publish(&self, event: Event) -> Result<PublishResult, FerryError> {
        let request = pb::PublishRequest {
            event: Some(event.into_pb()),
            ack_level: self.ack_level as i32,
            kafka_wait: self.kafka_wait_pb(),
        };
        let response = self
            .with_retries(|timeout| {
                let mut stub = PublisherClient::new(self.transport.clone());
                let mut req = tonic::Request::new(request.clone());
                req.set_timeout(timeout);
                async move { stub.publish(req).await }
            })
            .await?;
        response
            .result
            .map(PublishResult::from)
            .ok_or_else(|| FerryError::new(Code::Internal, "Publish answered without a result"))
    }

    /// Publishes events in one write, retrying the whole batch with the same event ids. The
    /// call fails as a whole (nothing written) or answers per event, in order; an event refused
    /// alone (`ALREADY_EXISTS`, `EVENT_ID_CONFLICT`) is an `Err` in its place.
    pub async fn publish_batch(
        &self,
        events: impl IntoIterator<Item = Event>,
    ) -> Result<Vec<Result<PublishResult, FerryError>>, FerryError> {
        let request = pb::PublishBatchRequest {
            events: events.into_iter().map(Event::into_pb).collect(),
            ack_level: self.ack_level as i32,
            kafka_wait: self.kafka_wait_pb(),
        };
        let response = self
            .with_retries(|timeout| {
                let mut stub = PublisherClient::new(self.transport.clone());
                let mut req = tonic::Request::new(request.clone());
                req.set_timeout(timeout);
                async move { stub.publish_batch(req).await }
            })
            .await?;
        Ok(response
            .entries
            .into_iter()
            .map(|entry| match entry.outcome {
                Some(pb::publish_batch_entry::Outcome::Result(r)) => Ok(r.into()),
                Some(pb::publish_batch_entry::Outcome::Error(f)) => {
                    Err(FerryError::from_failure(&f))
                }
                None => Err(FerryError::new(
                    Code::Internal,
                    "batch entry without an outcome",
                )),
            })
            .collect())
    }

    /// A publisher that pipelines many publishes on one `PublishStream` (see
    /// [`crate::StreamPublisher`]), with this client's retry policy, ack level and Kafka wait.
    pub fn stream_publisher(&self) -> StreamPublisherBuilder {
        StreamPublisherBuilder::new(self.clone())
    }

    /// A subscriber on `subscription` (a Kafka consumer group) reading `topics`.
    pub fn subscriber<T: Into<String>>(
        &self,
        subscription: impl Into<String>,
        topics: impl IntoIterator<Item = T>,
    ) -> Subscriber {
        Subscriber::new(
            self.clone(),
            subscription.into(),
            topics.into_iter().map(Into::into).collect(),
        )
    }

    /// One attempt's time: with [`AckLevel::Kafka`], enough for Ferry's wait for Kafka (the
    /// server's default wait is 30 s) to end in its own answer.
    pub(crate) fn attempt_timeout(&self) -> Duration {
        match self.ack_level {
            AckLevel::Kafka => {
                let wait = self.kafka_wait.unwrap_or(Duration::from_secs(30));
                self.policy
                    .attempt_timeout
                    .max(wait + Duration::from_secs(5))
            }
            _ => self.policy.attempt_timeout,
        }
    }

    pub(crate) fn kafka_wait_pb(&self) -> Option<prost_types::Duration> {
        self.kafka_wait
            .and_then(|d| prost_types::Duration::try_from(d).ok())
    }

    /// Runs `attempt` until it succeeds, fails permanently, or the overall deadline would pass.
    async fn with_retries<T, F, Fut>(&self, mut attempt: F) -> Result<T, FerryError>
    where
        F: FnMut(Duration) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let deadline = Instant::now() + self.policy.deadline;
        let mut backoff = Backoff::new(self.policy.initial_backoff, self.policy.max_backoff);
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let timeout = self
                .attempt_timeout()
                .min(deadline.saturating_duration_since(Instant::now()));
            // The server is told the timeout too; the local one also covers a silent peer.
            let err = match tokio::time::timeout(timeout, attempt(timeout)).await {
                Ok(Ok(response)) => return Ok(response.into_inner()),
                Ok(Err(status)) => FerryError::from(status),
                Err(_) => {
                    FerryError::new(Code::DeadlineExceeded, format!("no answer in {timeout:?}"))
                }
            };
            let wait = match classify(&err) {
                Retry::No => return Err(err),
                Retry::Backoff => backoff.next_delay(),
                Retry::After(delay) => {
                    backoff.next_delay();
                    delay
                }
            };
            if Instant::now() + wait >= deadline {
                tracing::warn!(attempts, error = %err, "publish: out of time, giving up");
                return Err(err);
            }
            tracing::info!(attempts, error = %err, ?wait, "publish: retrying");
            tokio::time::sleep(wait).await;
        }
    }
}
