//! A thin Rust client for [Ferry](../../README.md), the gRPC sidecar for at-least-once publish
//! and subscribe on Apache Kafka.
//!
//! ```no_run
//! # async fn demo() -> Result<(), ferry_client::FerryError> {
//! use ferry_client::{Client, Event};
//! let client = Client::from_env()?; // FERRY_ADDR, default 127.0.0.1:50051
//! let result = client.publish(Event::new("orders", "hello").key("order-42")).await?;
//! println!("{} at sequence {}", result.event_id, result.sequence);
//! # Ok(()) }
//! ```
//!
//! Against a Ferry that serves TLS or requires a token, [`Credentials`] say how to reach it:
//!
//! ```no_run
//! # fn demo() -> Result<(), ferry_client::FerryError> {
//! use ferry_client::{Client, Credentials, Tls};
//! let client = Client::builder()
//!     .addr("ferry.internal:50051")
//!     .credentials(
//!         Credentials::new()
//!             .with_tls(Tls::new("ca.pem").client_identity("client.pem", "client-key.pem"))
//!             .with_token_file("/var/run/secrets/ferry/token"),
//!     )
//!     .build()?; // or .credentials(Credentials::from_env()): FERRY_TLS_*, FERRY_TOKEN_FILE
//! # Ok(()) }
//! ```
//!
//! At high rates, [`StreamPublisher`] pipelines publishes on one stream:
//!
//! ```no_run
//! # async fn demo() -> Result<(), ferry_client::FerryError> {
//! # use ferry_client::{Client, Event};
//! # let client = Client::from_env()?;
//! let publisher = client.stream_publisher().start();
//! let mut handles = Vec::new();
//! for i in 0..1000 {
//!     handles.push(publisher.publish(Event::new("orders", format!("order {i}"))).await);
//! }
//! for handle in handles {
//!     handle.await?;
//! }
//! publisher.close().await;
//! # Ok(()) }
//! ```

mod client;
mod credentials;
mod error;
mod retry;
mod stream;
mod subscriber;

/// The `ferry.v1` messages and gRPC stubs, generated from `proto/ferry/v1` at build time.
pub mod pb {
    tonic::include_proto!("ferry.v1");
}

pub use client::{
    AckLevel, Client, ClientBuilder, DEFAULT_ADDR, Event, Header, KafkaPosition, PublishResult,
};
pub use credentials::{Credentials, Tls, read_token_file};
pub use error::{FerryError, FieldViolation, code_name};
pub use retry::{Retry, RetryPolicy, classify};
pub use stream::{
    BatchOutcome, DEFAULT_MAX_UNANSWERED, FromOutcome, PublishHandle, StreamPublisher,
    StreamPublisherBuilder,
};
pub use subscriber::{Delivery, DeliveryOrder, StartPosition, Subscriber};
pub use tokio_util::sync::CancellationToken;
pub use tonic::Code;
