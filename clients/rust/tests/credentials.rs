//! Credentials through `ClientBuilder::build` (no Ferry, no network beyond 127.0.0.1): the token
//! reaches a bare HTTP/2 server on 127.0.0.1:0 as `authorization: Bearer <token>`, and settings
//! that cannot work (a token in clear text to a remote address, a certificate without its key,
//! unreadable or empty files) are refused with `INVALID_ARGUMENT` before anything connects.

use std::path::PathBuf;

use ferry_client::{Client, Code, Credentials, Event, FerryError, Tls};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// A self-signed CA certificate (no key kept), valid for a hundred years: a parsable CA file.
const CA_PEM: &str = "-----BEGIN CERTIFICATE-----
MIIBlTCCATugAwIBAgIUBgrMCu40sTd8QuCw6bVBiNViJzgwCgYIKoZIzj0EAwIw
HzEdMBsGA1UEAwwURmVycnkgY2xpZW50IHRlc3QgQ0EwIBcNMjYxMjA2MDI0MzM4
WhgPMjEyNjExMTIwMjQzMzhaMB8xHTAbBgNVBAMMFEZlcnJ5IGNsaWVudCB0ZXN0
IENBMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEOIPfElyneY3+M58IdUrwvwbT
JDzchkAAjSroAViiD+vjnCXqSAxmRiJXZQPwn9GvDlq3dRL9ixVgCpTBx3b1m6NT
MFEwHQYDVR0OBBYEFLfF/CyeaqihMFe04a3c05O0jTYBMB8GA1UdIwQYMBaAFLfF
/CyeaqihMFe04a3c05O0jTYBMA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZIzj0EAwID
SAAwRQIgVU0xtv5zFi+I+xIsLb9mTMyWOoPaYRqcsRJHGSNdnggCIQDtIAwYG9MF
5Qg+vUAZnAZJrGJ7QWIJ3HMMHxtswYdngw==
-----END CERTIFICATE-----
";

/// A directory of its own under the system's temporary one, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("ferry-credentials-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn file(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An HTTP/2 server on 127.0.0.1:0 that refuses every call `UNAUTHENTICATED` (as Ferry does
/// without a valid token) and reports each call's `authorization` header.
async fn refusing_server() -> (String, mpsc::UnboundedReceiver<Option<String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (seen, calls) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let Ok(mut connection) = h2::server::handshake(socket).await else {
                    return;
                };
                while let Some(Ok((request, mut respond))) = connection.accept().await {
                    let authorization = request
                        .headers()
                        .get(http::header::AUTHORIZATION)
                        .map(|v| v.to_str().unwrap().to_string());
                    let _ = seen.send(authorization);
                    let refusal = http::Response::builder()
                        .header("content-type", "application/grpc")
                        .header("grpc-status", "16")
                        .header("grpc-message", "missing or unknown token")
                        .body(())
                        .unwrap();
                    let _ = respond.send_response(refusal, true);
                }
            });
        }
    });
    (addr, calls)
}

/// The `authorization` header a client built with `credentials` sends to a local server.
async fn authorization_sent(credentials: Credentials) -> Option<String> {
    let (addr, mut calls) = refusing_server().await;
    let client = Client::builder()
        .addr(addr)
        .credentials(credentials)
        .build()
        .unwrap();
    let err = client
        .publish(Event::new("orders", "hello"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err}");
    assert_eq!(err.to_string(), "UNAUTHENTICATED: missing or unknown token");
    calls.recv().await.expect("the server saw no call")
}

fn build_error(addr: &str, credentials: Credentials) -> FerryError {
    let err = Client::builder()
        .addr(addr)
        .credentials(credentials)
        .build()
        .err()
        .expect("build() accepted credentials that cannot work");
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    err
}

fn assert_mentions(err: &FerryError, text: &str) {
    assert!(err.message().contains(text), "{text:?} not in {err}");
}

#[tokio::test]
async fn the_token_goes_as_a_bearer_header() {
    let credentials = Credentials::new().with_token("s3cret-token");
    assert_eq!(
        authorization_sent(credentials).await.as_deref(),
        Some("Bearer s3cret-token")
    );
}

#[tokio::test]
async fn the_token_file_of_the_environment_gives_the_header() {
    let dir = TempDir::new();
    let file = dir.file("token", "# the orders service\n\nfrom-the-file\nsecond\n");
    let files = format!("{}, {}", file.display(), dir.0.join("other").display());
    let credentials =
        Credentials::from_lookup(|name| (name == "FERRY_TOKEN_FILE").then(|| files.clone()));
    assert_eq!(
        authorization_sent(credentials).await.as_deref(),
        Some("Bearer from-the-file")
    );
}

#[tokio::test]
async fn without_a_token_no_header_is_sent() {
    assert_eq!(authorization_sent(Credentials::new()).await, None);
}

#[tokio::test]
async fn a_token_without_tls_goes_only_to_a_loopback_address_or_a_unix_socket() {
    for addr in [
        "10.0.0.1:50051",
        "ferry.internal:50051",
        "http://192.168.1.2:50051",
    ] {
        let err = build_error(addr, Credentials::new().with_token("t"));
        assert_mentions(&err, "only to a loopback address or a unix socket");
        assert_mentions(&err, addr);
        assert!(!err.message().contains("Bearer"), "{err}");
    }
    for addr in [
        "127.0.0.1:50051",
        "localhost:50051",
        "[::1]:50051",
        "unix:/run/ferry/ferry.sock",
    ] {
        let built = Client::builder()
            .addr(addr)
            .credentials(Credentials::new().with_token("t"))
            .build();
        assert!(built.is_ok(), "{addr}: {:?}", built.err());
    }
}

#[tokio::test]
async fn a_token_over_tls_goes_to_any_address() {
    let dir = TempDir::new();
    let ca = dir.file("ca.pem", CA_PEM);
    for addr in ["ferry.internal:50051", "https://10.0.0.1:50051"] {
        let credentials = Credentials::new()
            .with_tls(Tls::new(&ca).server_name("ferry"))
            .with_token("t");
        let built = Client::builder()
            .addr(addr)
            .credentials(credentials)
            .build();
        assert!(built.is_ok(), "{addr}: {:?}", built.err());
    }
}

#[tokio::test]
async fn a_certificate_without_its_key_is_refused() {
    let dir = TempDir::new();
    let ca = dir.file("ca.pem", CA_PEM);
    let mut tls = Tls::new(&ca);
    tls.cert_file = Some(dir.file("client.pem", CA_PEM));
    let err = build_error("127.0.0.1:50051", Credentials::new().with_tls(tls));
    assert_mentions(&err, "both a client certificate and its key");

    let mut tls = Tls::new(&ca);
    tls.key_file = Some(dir.0.join("client-key.pem"));
    let err = build_error("127.0.0.1:50051", Credentials::new().with_tls(tls));
    assert_mentions(&err, "both a client certificate and its key");
}

#[tokio::test]
async fn unreadable_or_unusable_files_are_refused_with_their_name() {
    let dir = TempDir::new();
    let ca = dir.file("ca.pem", CA_PEM);
    let missing = dir.0.join("missing.pem");
    let addr = "127.0.0.1:50051";

    let err = build_error(addr, Credentials::new().with_tls(Tls::new(&missing)));
    assert_mentions(&err, &missing.display().to_string());

    let not_pem = dir.file("not-pem.pem", "hello\n");
    let err = build_error(addr, Credentials::new().with_tls(Tls::new(&not_pem)));
    assert_mentions(&err, "holds no PEM certificate");

    let broken = dir.file(
        "broken.pem",
        "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n",
    );
    build_error(addr, Credentials::new().with_tls(Tls::new(&broken)));

    let tls = Tls::new(&ca).client_identity(&ca, &missing);
    let err = build_error(addr, Credentials::new().with_tls(tls));
    assert_mentions(&err, &missing.display().to_string());

    let not_a_key = dir.file("not-a-key.pem", "no key here\n");
    let tls = Tls::new(&ca).client_identity(&ca, &not_a_key);
    build_error(addr, Credentials::new().with_tls(tls));

    let err = build_error(addr, Credentials::new().with_token_file(&missing));
    assert_mentions(&err, &missing.display().to_string());

    let empty = dir.file("empty-token", "# rotated out\n\n");
    let err = build_error(addr, Credentials::new().with_token_file(&empty));
    assert_mentions(&err, "holds no token");

    let err = build_error(addr, Credentials::new().with_token("bad\ntoken"));
    assert!(!err.message().contains("bad"), "{err}");
}

#[tokio::test]
async fn addresses_that_contradict_the_credentials_are_refused() {
    let dir = TempDir::new();
    let tls = || Credentials::new().with_tls(Tls::new(dir.0.join("ca.pem")));
    dir.file("ca.pem", CA_PEM);

    assert_mentions(&build_error("http://ferry:50051", tls()), "https://");
    assert_mentions(&build_error("unix:/run/ferry.sock", tls()), "unix socket");
    assert_mentions(
        &build_error("https://ferry:50051", Credentials::new()),
        "needs TLS",
    );
}
