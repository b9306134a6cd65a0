//! Subscribes SUBSCRIPTION to TOPIC from the earliest record, acks every delivery, and once
//! EXPECT distinct event ids were handled stops cleanly and prints `{"received": EXPECT}`.
//! Exits 1 after TIMEOUT_S seconds without that. Logs go to stderr. TLS and the token come from
//! `FERRY_TLS_*` and `FERRY_TOKEN_FILE`.

use std::collections::HashSet;
use std::convert::Infallible;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_client::{CancellationToken, Client, Credentials, Delivery, StartPosition};

fn env(name: &str) -> Result<String, String> {
    std::env::var(name).map_err(|_| format!("{name} is not set"))
}

async fn receive_all() -> Result<usize, String> {
    let topic = env("TOPIC")?;
    let subscription = env("SUBSCRIPTION")?;
    let expect: usize = env("EXPECT")?.parse().map_err(|e| format!("EXPECT: {e}"))?;
    let timeout_s: f64 = env("TIMEOUT_S")?
        .parse()
        .map_err(|e| format!("TIMEOUT_S: {e}"))?;
    let client = Client::builder()
        .credentials(Credentials::from_env())
        .build()
        .map_err(|e| e.to_string())?;

    let seen = Arc::new(Mutex::new(HashSet::new()));
    let stop = CancellationToken::new();
    let handler = {
        let (seen, stop) = (seen.clone(), stop.clone());
        move |delivery: Delivery| {
            let mut seen = seen.lock().unwrap();
            seen.insert(delivery.event_id);
            if seen.len() >= expect {
                stop.cancel();
            }
            async { Ok::<(), Infallible>(()) }
        }
    };
    let subscriber = client
        .subscriber(subscription, [topic])
        .start_position(StartPosition::Earliest);
    let timer = {
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs_f64(timeout_s)).await;
            stop.cancel();
        })
    };
    let result = subscriber.run(stop, handler).await;
    timer.abort();
    result.map_err(|e| e.to_string())?;
    let received = seen.lock().unwrap().len();
    if received < expect {
        return Err(format!("received {received} of {expect} in {timeout_s} s"));
    }
    Ok(expect)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    match receive_all().await {
        Ok(received) => {
            println!("{{\"received\": {received}}}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}
