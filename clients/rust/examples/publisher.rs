//! Publishes COUNT events to TOPIC (ids `${ID_PREFIX}-${i}`, key `k${i % 8}`, payload
//! `payload-${i}`), then prints `{"published": COUNT}`. `PUBLISH_MODE=unary` (the default)
//! publishes one call at a time; `PUBLISH_MODE=stream` pipelines them all on one PublishStream
//! through a `StreamPublisher` and waits for every answer. Exits 1 on an error the client does
//! not retry (or that outlasts its deadline), logging its gRPC code (e.g. `UNAUTHENTICATED`).
//! Logs go to stderr. TLS and the token come from `FERRY_TLS_*` and `FERRY_TOKEN_FILE`.

use std::process::ExitCode;

use ferry_client::{Client, Credentials, Event};

fn env(name: &str) -> Result<String, String> {
    std::env::var(name).map_err(|_| format!("{name} is not set"))
}

async fn publish_all() -> Result<u64, String> {
    let topic = env("TOPIC")?;
    let count: u64 = env("COUNT")?.parse().map_err(|e| format!("COUNT: {e}"))?;
    let prefix = env("ID_PREFIX")?;
    let stream = match std::env::var("PUBLISH_MODE").as_deref() {
        Err(_) | Ok("" | "unary") => false,
        Ok("stream") => true,
        Ok(other) => return Err(format!("PUBLISH_MODE {other:?}: not unary or stream")),
    };
    let client = Client::builder()
        .credentials(Credentials::from_env())
        .build()
        .map_err(|e| e.to_string())?;
    let event = |i: u64| {
        Event::new(&topic, format!("payload-{i}"))
            .key(format!("k{}", i % 8))
            .event_id(format!("{prefix}-{i}"))
    };
    if stream {
        // Every publish is sent at once (waiting only while the window is full); the handles
        // complete as Ferry answers, across reconnects.
        let publisher = client.stream_publisher().start();
        let mut handles = Vec::new();
        for i in 0..count {
            handles.push(publisher.publish(event(i)).await);
        }
        for (i, handle) in handles.into_iter().enumerate() {
            handle
                .await
                .map_err(|e| format!("publishing {prefix}-{i}: {e}"))?;
        }
        publisher.close().await;
    } else {
        for i in 0..count {
            client
                .publish(event(i))
                .await
                .map_err(|e| format!("publishing {prefix}-{i}: {e}"))?;
        }
    }
    Ok(count)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    match publish_all().await {
        Ok(count) => {
            println!("{{\"published\": {count}}}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}
