package ferry

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/credentials/local"
)

// TLS says how the Client reaches a Ferry that serves TLS (--tls-cert, --tls-key) and, with
// --tls-client-ca, requires a client certificate (mutual TLS). Files are PEM.
type TLS struct {
	// CAFile holds the CA certificates Ferry's certificate must chain to; "" trusts the
	// system's CA certificates.
	CAFile string
	// CertFile and KeyFile are the client certificate and its private key, for mutual TLS;
	// both or neither.
	CertFile, KeyFile string
	// ServerName is the name Ferry's certificate must hold; "" takes the address's host.
	ServerName string
}

// WithTLS makes the Client connect over TLS (mutual TLS with a client certificate), instead of
// plaintext. The files are read by NewClient, which fails when one cannot be loaded.
func WithTLS(t TLS) Option { return func(c *clientConfig) { c.tls = &t } }

// WithToken sends "authorization: Bearer <token>" with every call, for a Ferry started with
// --token-file or FERRY_TOKENS. Over TLS the token goes only on TLS connections; without
// [WithTLS] the Client connects only to a loopback address or a unix socket (a token sent in
// the clear elsewhere could be read off the wire), and dialing anything else fails.
func WithToken(token string) Option {
	return func(c *clientConfig) { c.token, c.tokenFile = token, "" }
}

// WithTokenFile is [WithToken] with the first token of a file in Ferry's token file format
// (one token a line; blank lines and lines starting with # are skipped), read by NewClient.
// A rotated token reaches the Client when it is created again.
func WithTokenFile(path string) Option {
	return func(c *clientConfig) { c.token, c.tokenFile = "", path }
}

// WithEnvCredentials reads TLS and token settings from the variables `ferry status` reads,
// for a Client inside a pod: FERRY_TLS_CA (turns TLS on), FERRY_TLS_SERVER_NAME,
// FERRY_TLS_CLIENT_CERT and FERRY_TLS_CLIENT_KEY (mutual TLS), FERRY_TOKEN_FILE (the first
// token of the first file listed). Unset variables leave the Client as it is; options given
// after this one override it.
func WithEnvCredentials() Option {
	return func(c *clientConfig) {
		if ca := os.Getenv("FERRY_TLS_CA"); ca != "" {
			c.tls = &TLS{
				CAFile:     ca,
				CertFile:   os.Getenv("FERRY_TLS_CLIENT_CERT"),
				KeyFile:    os.Getenv("FERRY_TLS_CLIENT_KEY"),
				ServerName: os.Getenv("FERRY_TLS_SERVER_NAME"),
			}
		}
		if files := os.Getenv("FERRY_TOKEN_FILE"); files != "" {
			c.token, c.tokenFile = "", strings.TrimSpace(strings.Split(files, ",")[0])
		}
	}
}

// transportCredentials are what the dial options of cfg say: TLS, or plaintext (restricted to
// local addresses when a token goes with every call).
func (cfg *clientConfig) transportCredentials() (credentials.TransportCredentials, error) {
	if cfg.tls == nil {
		if cfg.token != "" {
			return local.NewCredentials(), nil
		}
		return insecure.NewCredentials(), nil
	}
	t := cfg.tls
	conf := &tls.Config{ServerName: t.ServerName, MinVersion: tls.VersionTLS12}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("ferry: TLS CA file: %w", err)
		}
		conf.RootCAs = x509.NewCertPool()
		if !conf.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("ferry: TLS CA file %s holds no PEM certificate", t.CAFile)
		}
	}
	if (t.CertFile == "") != (t.KeyFile == "") {
		return nil, errors.New("ferry: TLS needs both CertFile and KeyFile, or neither")
	}
	if t.CertFile != "" {
		pair, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("ferry: TLS client certificate: %w", err)
		}
		conf.Certificates = []tls.Certificate{pair}
	}
	return credentials.NewTLS(conf), nil
}

// readToken sets cfg.token from cfg.tokenFile, when one is given.
func (cfg *clientConfig) readToken() error {
	if cfg.tokenFile == "" {
		return nil
	}
	data, err := os.ReadFile(cfg.tokenFile)
	if err != nil {
		return fmt.Errorf("ferry: token file: %w", err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			cfg.token = line
			return nil
		}
	}
	return fmt.Errorf("ferry: token file %s holds no token", cfg.tokenFile)
}

// bearerToken is a per-call credential: "authorization: Bearer <token>".
type bearerToken struct {
	header map[string]string
	secure bool // only on connections with privacy and integrity (TLS)
}

func newBearerToken(token string, secure bool) *bearerToken {
	return &bearerToken{header: map[string]string{"authorization": "Bearer " + token}, secure: secure}
}

func (b *bearerToken) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return b.header, nil
}

func (b *bearerToken) RequireTransportSecurity() bool { return b.secure }

// String keeps the token out of anything that prints the credential.
func (b *bearerToken) String() string { return "ferry.bearerToken(***)" }
