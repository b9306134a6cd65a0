//! Publishes COUNT events to TOPIC one call at a time (ids `${ID_PREFIX}-${i}`, key `k${i % 8}`,
//! payload `payload-${i}`), then prints `{"published": COUNT}`. Exits 1 on an error the client
//! does not retry (or that outlasts its deadline). Logs go to stderr.

use std::process::ExitCode;

use ferry_client::{Client, Event};

fn env(name: &str) -> Result<String, String> {
    std::env::var(name).map_err(|_| format!("{name} is not set"))
}

async fn publish_all() -> Result<u64, String> {
    let topic = env("TOPIC")?;
    let count: u64 = env("COUNT")?.parse().map_err(|e| format!("COUNT: {e}"))?;
    let prefix = env("ID_PREFIX")?;
    let client = Client::from_env().map_err(|e| e.to_string())?;
    for i in 0..count {
        let event = Event::new(&topic, format!("payload-{i}"))
            .key(format!("k{}", i % 8))
            .event_id(format!("{prefix}-{i}"));
        client
            .publish(event)
            .await
            .map_err(|e| format!("publishing {prefix}-{i}: {e}"))?;
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
