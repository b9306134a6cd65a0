//! TLS and a bearer token, for a Ferry started with `--tls-cert`/`--tls-key` (TLS),
//! `--tls-client-ca` (mutual TLS) or `--token-file`/`FERRY_TOKENS` (bearer tokens).

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use tonic::Code;
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

use crate::FerryError;

/// How the client reaches a Ferry that serves TLS and, with `--tls-client-ca`, requires a client
/// certificate (mutual TLS). Files are PEM, read by [`crate::ClientBuilder::build`], which fails
/// when one cannot be loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tls {
    /// The CA certificates Ferry's certificate must chain to. The client carries no system CA
    /// store, so this file is the whole trust.
    pub ca_file: PathBuf,
    /// The client certificate, for mutual TLS; with `key_file`: both or neither.
    pub cert_file: Option<PathBuf>,
    /// The client certificate's private key.
    pub key_file: Option<PathBuf>,
    /// The name Ferry's certificate must hold; `None` takes the address's host.
    pub server_name: Option<String>,
}

impl Tls {
    /// TLS trusting the CA certificates of `ca_file`, without a client certificate.
    pub fn new(ca_file: impl Into<PathBuf>) -> Self {
        Tls {
            ca_file: ca_file.into(),
            cert_file: None,
            key_file: None,
            server_name: None,
        }
    }

    /// Mutual TLS: the client certificate and its private key.
    pub fn client_identity(
        mut self,
        cert_file: impl Into<PathBuf>,
        key_file: impl Into<PathBuf>,
    ) -> Self {
        self.cert_file = Some(cert_file.into());
        self.key_file = Some(key_file.into());
        self
    }

    /// The name Ferry's certificate must hold, when it is not the address's host.
    pub fn server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }

    /// tonic's configuration, with every file read and checked.
    pub(crate) fn client_config(&self) -> Result<ClientTlsConfig, FerryError> {
        let identity = match (&self.cert_file, &self.key_file) {
            (Some(cert), Some(key)) => Some(Identity::from_pem(
                read(cert, "TLS client certificate")?,
                read(key, "TLS client key")?,
            )),
            (None, None) => None,
            _ => {
                return Err(invalid(
                    "TLS needs both a client certificate and its key (FERRY_TLS_CLIENT_CERT, \
                     FERRY_TLS_CLIENT_KEY), or neither",
                ));
            }
        };
        let ca = read(&self.ca_file, "TLS CA file")?;
        // tonic skips what it cannot parse: without this check a bad file would surface only
        // as a failed handshake on the first call.
        if !String::from_utf8_lossy(&ca).contains("-----BEGIN CERTIFICATE-----") {
            return Err(invalid(format!(
                "TLS CA file {} holds no PEM certificate",
                self.ca_file.display()
            )));
        }
        let mut config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
        if let Some(identity) = identity {
            config = config.identity(identity);
        }
        if let Some(name) = &self.server_name {
            config = config.domain_name(name);
        }
        Ok(config)
    }
}

/// Where the token comes from.
#[derive(Clone, PartialEq, Eq)]
enum TokenSource {
    Value(String),
    /// Read by `build()`, so a rotated token reaches a client when it is built again.
    File(PathBuf),
}

/// TLS and a bearer token for [`crate::ClientBuilder::credentials`]. The default is plaintext
/// without a token. Its `Debug` never shows the token.
///
/// The token goes as `authorization: Bearer <token>` with every call. Without TLS the client is
/// built only for a loopback address (127.0.0.0/8, `::1`, `localhost`) or a unix socket: a token
/// sent in clear text elsewhere could be read off the wire.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    tls: Option<Tls>,
    token: Option<TokenSource>,
}

impl Credentials {
    /// Plaintext without a token; add to it with the `with_*` methods.
    pub fn new() -> Self {
        Credentials::default()
    }

    /// The credentials the variables `ferry status` reads describe, for a client inside a pod:
    /// `FERRY_TLS_CA` (turns TLS on), `FERRY_TLS_SERVER_NAME`, `FERRY_TLS_CLIENT_CERT` and
    /// `FERRY_TLS_CLIENT_KEY` (mutual TLS), `FERRY_TOKEN_FILE` (the first token of the first
    /// file of a comma-separated list). Unset or empty variables: plaintext and no token. The
    /// files are read by `build()`.
    pub fn from_env() -> Self {
        Credentials::from_lookup(|name| std::env::var(name).ok())
    }

    /// [`Credentials::from_env`] with the variables looked up by `lookup` instead of in the
    /// process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let var = |name: &str| lookup(name).filter(|value| !value.is_empty());
        let tls = var("FERRY_TLS_CA").map(|ca| Tls {
            ca_file: ca.into(),
            cert_file: var("FERRY_TLS_CLIENT_CERT").map(PathBuf::from),
            key_file: var("FERRY_TLS_CLIENT_KEY").map(PathBuf::from),
            server_name: var("FERRY_TLS_SERVER_NAME"),
        });
        let token = var("FERRY_TOKEN_FILE")
            .map(|files| {
                files
                    .split(',')
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_string()
            })
            .filter(|file| !file.is_empty())
            .map(|file| TokenSource::File(file.into()));
        Credentials { tls, token }
    }

    /// Connect over TLS instead of plaintext.
    pub fn with_tls(mut self, tls: Tls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Send `authorization: Bearer <token>` with every call.
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(TokenSource::Value(token.into()));
        self
    }

    /// [`Credentials::with_token`] with the first token of a file in Ferry's token file format
    /// (see [`read_token_file`]), read by `build()`.
    pub fn with_token_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.token = Some(TokenSource::File(path.into()));
        self
    }

    /// The TLS settings, `None` for plaintext.
    pub fn tls(&self) -> Option<&Tls> {
        self.tls.as_ref()
    }

    /// The file the token is read from, when it comes from one.
    pub fn token_file(&self) -> Option<&Path> {
        match &self.token {
            Some(TokenSource::File(path)) => Some(path),
            _ => None,
        }
    }

    /// Whether a token goes with every call.
    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// The token, read from its file when it comes from one.
    pub(crate) fn resolve_token(&self) -> Result<Option<String>, FerryError> {
        match &self.token {
            None => Ok(None),
            Some(TokenSource::Value(token)) if token.trim().is_empty() => {
                Err(invalid("the bearer token is empty"))
            }
            Some(TokenSource::Value(token)) => Ok(Some(token.clone())),
            Some(TokenSource::File(path)) => read_token_file(path).map(Some),
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let token = match &self.token {
            None => "none".to_string(),
            Some(TokenSource::Value(_)) => "***".to_string(),
            Some(TokenSource::File(path)) => format!("from {}", path.display()),
        };
        f.debug_struct("Credentials")
            .field("tls", &self.tls)
            .field("token", &format_args!("{token}"))
            .finish()
    }
}

/// The first token of a file in Ferry's token file format: one token a line, blank lines and
/// lines starting with `#` skipped. An unreadable file, or one without a token, is an
/// `INVALID_ARGUMENT` error naming the file.
pub fn read_token_file(path: impl AsRef<Path>) -> Result<String, FerryError> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path)
        .map_err(|e| invalid(format!("token file {}: {e}", path.display())))?;
    first_token(&text)
        .map(str::to_string)
        .ok_or_else(|| invalid(format!("token file {} holds no token", path.display())))
}

/// The first line of `text` that is neither blank nor a `#` comment, trimmed.
fn first_token(text: &str) -> Option<&str> {
    text.lines()
        .map(str::trim)
        .find(|line| !line.is_empty() && !line.starts_with('#'))
}

/// Whether `addr` (`host:port`, a URI or `unix:path`) is a unix socket or a loopback host
/// (127.0.0.0/8, `::1`, `localhost`): the only places a token goes without TLS.
pub(crate) fn is_local(addr: &str) -> bool {
    if addr.starts_with("unix:") {
        return true;
    }
    let rest = addr.split_once("://").map_or(addr, |(_, rest)| rest);
    let authority = rest.split('/').next().unwrap_or_default();
    let authority = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let host = match authority.strip_prefix('[') {
        Some(bracketed) => bracketed.split(']').next().unwrap_or_default(),
        None => authority.split(':').next().unwrap_or_default(),
    };
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, FerryError> {
    std::fs::read(path).map_err(|e| invalid(format!("{what} {}: {e}", path.display())))
}

pub(crate) fn invalid(message: impl Into<String>) -> FerryError {
    FerryError::new(Code::InvalidArgument, message)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn from_map(vars: &[(&str, &str)]) -> Credentials {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Credentials::from_lookup(|name| vars.get(name).cloned())
    }

    #[test]
    fn no_variables_mean_plaintext_without_a_token() {
        assert_eq!(from_map(&[]), Credentials::new());
        assert_eq!(
            from_map(&[("FERRY_TLS_CA", ""), ("FERRY_TOKEN_FILE", "")]),
            Credentials::new()
        );
    }

    #[test]
    fn every_variable_maps_to_its_setting() {
        let credentials = from_map(&[
            ("FERRY_TLS_CA", "/tls/ca.pem"),
            ("FERRY_TLS_SERVER_NAME", "ferry.internal"),
            ("FERRY_TLS_CLIENT_CERT", "/tls/client.pem"),
            ("FERRY_TLS_CLIENT_KEY", "/tls/client-key.pem"),
            ("FERRY_TOKEN_FILE", " /secrets/a , /secrets/b"),
        ]);
        let tls = Tls::new("/tls/ca.pem")
            .client_identity("/tls/client.pem", "/tls/client-key.pem")
            .server_name("ferry.internal");
        assert_eq!(
            credentials,
            Credentials::new()
                .with_tls(tls)
                .with_token_file("/secrets/a")
        );
        assert_eq!(credentials.token_file(), Some(Path::new("/secrets/a")));
        assert!(credentials.has_token());
    }

    #[test]
    fn tls_settings_without_the_ca_leave_tls_off() {
        let credentials = from_map(&[
            ("FERRY_TLS_CLIENT_CERT", "/tls/client.pem"),
            ("FERRY_TLS_CLIENT_KEY", "/tls/client-key.pem"),
        ]);
        assert_eq!(credentials.tls(), None);
        assert!(!credentials.has_token());
    }

    #[test]
    fn the_first_token_skips_blank_lines_and_comments() {
        assert_eq!(first_token("# svc\n\n  tok-1  \ntok-2\n"), Some("tok-1"));
        assert_eq!(first_token("\r\n#only\r\nsecret\r\n"), Some("secret"));
        assert_eq!(first_token("# nothing\n\n   \n"), None);
        assert_eq!(first_token(""), None);
    }

    #[test]
    fn token_files_are_read_or_refused_with_their_name() {
        let dir = std::env::temp_dir().join(format!("ferry-token-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good");
        std::fs::write(&good, "# the orders service\nabc123\nother\n").unwrap();
        let empty = dir.join("empty");
        std::fs::write(&empty, "# rotated out\n\n").unwrap();

        assert_eq!(read_token_file(&good).unwrap(), "abc123");
        let err = read_token_file(&empty).unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().contains("holds no token"), "{err}");
        let err = read_token_file(dir.join("missing")).unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().contains("missing"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn loopback_hosts_and_unix_sockets_are_local() {
        for addr in [
            "127.0.0.1:50051",
            "127.8.9.10:1",
            "localhost:50051",
            "LOCALHOST",
            "[::1]:50051",
            "http://127.0.0.1:50051",
            "http://localhost:50051/",
            "https://[::1]:443",
            "unix:/run/ferry.sock",
            "unix:///run/ferry.sock",
        ] {
            assert!(is_local(addr), "{addr}");
        }
        for addr in [
            "10.0.0.1:50051",
            "ferry:50051",
            "ferry.internal:50051",
            "http://192.168.1.2:50051",
            "[2001:db8::1]:50051",
            "localhost.example.com:50051",
            "128.0.0.1:50051",
            "http://localhost@10.0.0.1:50051",
        ] {
            assert!(!is_local(addr), "{addr}");
        }
    }

    #[test]
    fn debug_never_shows_the_token() {
        let credentials = Credentials::new().with_token("very-secret-token");
        let shown = format!("{credentials:?}");
        assert!(!shown.contains("very-secret-token"), "{shown}");
        assert!(shown.contains("***"), "{shown}");
    }

    #[test]
    fn a_certificate_without_its_key_is_refused_before_any_file_is_read() {
        let mut tls = Tls::new("/nowhere/ca.pem");
        tls.cert_file = Some("/nowhere/client.pem".into());
        let err = tls.client_config().unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().contains("both"), "{err}");
    }
}
