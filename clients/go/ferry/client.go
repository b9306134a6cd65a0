// Package ferry is a thin client for Ferry, the gRPC sidecar that gives at-least-once
// publish and subscribe on Apache Kafka.
//
// A Client publishes with [Client.Publish] and [Client.PublishBatch], retrying what can be
// retried with the same event ids (so a retry never creates a duplicate), pipelines
// publishes over one stream with a [StreamPublisher], and runs a subscriber loop with
// [Client.Subscribe]. The generated stubs are in package ferryv1 for
// everything this package does not wrap.
package ferry

import (
	_ "embed"
	"errors"
	"log/slog"
	"os"
	"time"

	"google.golang.org/grpc"
	grpcbackoff "google.golang.org/grpc/backoff"

	"github.com/ferry-sidecar/ferry/clients/go/ferryv1"
)

// DefaultAddr is Ferry's address when neither [WithAddr] nor $FERRY_ADDR gives one.
const DefaultAddr = "127.0.0.1:50051"

// ServiceConfig is Ferry's gRPC service config (proto/ferry/v1/grpc_service_config.json): a
// retry policy for UNAVAILABLE on every unary RPC and RESOURCE_EXHAUSTED on the publish RPCs.
// The Client loads it as the channel's default unless [WithoutServiceConfig] is given.
//
//go:embed grpc_service_config.json
var ServiceConfig string

// Client talks to one Ferry. It is safe for concurrent use.
type Client struct {
	conn   grpc.ClientConnInterface
	closer func() error
	pub    ferryv1.PublisherClient
	sub    ferryv1.SubscriberClient
	retry  retryConfig
	log    *slog.Logger
}

type clientConfig struct {
	addr          string
	conn          grpc.ClientConnInterface
	dialOpts      []grpc.DialOption
	tls           *TLS
	token         string
	tokenFile     string
	serviceConfig bool
	retry         retryConfig
	log           *slog.Logger
}

type retryConfig struct {
	initial, max   time.Duration // capped exponential backoff between attempts
	deadline       time.Duration // overall, over all attempts (0: only the caller's)
	attemptTimeout time.Duration // of one attempt (0: none)
}

// An Option configures a Client.
type Option func(*clientConfig)

// WithAddr sets Ferry's address (host:port, or any gRPC target), overriding $FERRY_ADDR.
func WithAddr(addr string) Option { return func(c *clientConfig) { c.addr = addr } }

// WithConn makes the Client use conn instead of dialing; Close leaves conn open. The dial
// options ([WithTLS], [WithToken], [WithDialOptions], ...) do not apply to it.
func WithConn(conn grpc.ClientConnInterface) Option {
	return func(c *clientConfig) { c.conn = conn }
}

// WithDialOptions adds options for dialing Ferry, after the Client's own (plaintext or
// [WithTLS], [WithToken], reconnect backoff as [WithBackoff], the default service config), so
// they can override them.
func WithDialOptions(opts ...grpc.DialOption) Option {
	return func(c *clientConfig) { c.dialOpts = append(c.dialOpts, opts...) }
}

// WithoutServiceConfig leaves out [ServiceConfig], so that only the Client's own retry loop
// retries.
func WithoutServiceConfig() Option { return func(c *clientConfig) { c.serviceConfig = false } }

// WithBackoff sets the backoff between publish attempts and between subscriber reconnects:
// initial, doubling up to max, each with ±20% jitter (defaults 100 ms and 5 s). A
// google.rpc.RetryInfo delay longer than the backoff is waited instead. The connection's own
// reconnect backoff uses the same bounds.
func WithBackoff(initial, max time.Duration) Option {
	return func(c *clientConfig) { c.retry.initial, c.retry.max = initial, max }
}

// WithPublishDeadline bounds a publish over all its attempts (default 60 s; 0: only the
// caller's context bounds it). The caller's context deadline wins when it is sooner.
func WithPublishDeadline(d time.Duration) Option {
	return func(c *clientConfig) { c.retry.deadline = d }
}

// WithAttemptTimeout bounds one publish attempt (default 15 s; 0: none), so that a call that
// hangs is tried again with the same event ids.
func WithAttemptTimeout(d time.Duration) Option {
	return func(c *clientConfig) { c.retry.attemptTimeout = d }
}

// WithLogger sets where the Client logs retries, reconnects and refused acks (default
// slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(c *clientConfig) { c.log = l } }

// NewClient returns a Client for the Ferry at [WithAddr], else $FERRY_ADDR, else
// [DefaultAddr], over plaintext gRPC unless [WithTLS] is given. Like grpc.NewClient it does
// not connect yet; it reads the TLS and token files at once.
func NewClient(opts ...Option) (*Client, error) {
	cfg := clientConfig{
		addr:          os.Getenv("FERRY_ADDR"),
		serviceConfig: true,
		retry: retryConfig{
			initial:        100 * time.Millisecond,
			max:            5 * time.Second,
			deadline:       60 * time.Second,
			attemptTimeout: 15 * time.Second,
		},
		log: slog.Default(),
	}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.addr == "" {
		cfg.addr = DefaultAddr
	}
	if cfg.retry.initial <= 0 || cfg.retry.max < cfg.retry.initial {
		return nil, errors.New("ferry: backoff needs 0 < initial <= max")
	}
	c := &Client{retry: cfg.retry, log: cfg.log, closer: func() error { return nil }}
	if cfg.conn != nil {
		c.conn = cfg.conn
	} else {
		if err := cfg.readToken(); err != nil {
			return nil, err
		}
		creds, err := cfg.transportCredentials()
		if err != nil {
			return nil, err
		}
		dial := []grpc.DialOption{
			grpc.WithTransportCredentials(creds),
			// Reconnect as soon as the client's own retries would, not after gRPC's default
			// backoff (up to 120 s): a restarted Ferry is back within seconds.
			grpc.WithConnectParams(grpc.ConnectParams{
				Backoff: grpcbackoff.Config{BaseDelay: cfg.retry.initial, Multiplier: 1.6, Jitter: 0.2,
					MaxDelay: cfg.retry.max},
				MinConnectTimeout: 5 * time.Second,
			}),
		}
		if cfg.token != "" {
			dial = append(dial, grpc.WithPerRPCCredentials(newBearerToken(cfg.token, cfg.tls != nil)))
		}
		if cfg.serviceConfig {
			dial = append(dial, grpc.WithDefaultServiceConfig(ServiceConfig))
		}
		conn, err := grpc.NewClient(cfg.addr, append(dial, cfg.dialOpts...)...)
		if err != nil {
			return nil, err
		}
		c.conn, c.closer = conn, conn.Close
	}
	c.pub = ferryv1.NewPublisherClient(c.conn)
	c.sub = ferryv1.NewSubscriberClient(c.conn)
	return c, nil
}

// Close closes the connection the Client dialed (not one given with [WithConn]).
func (c *Client) Close() error { return c.closer() }

// Publisher is the generated Publisher stub on the Client's connection.
func (c *Client) Publisher() ferryv1.PublisherClient { return c.pub }

// Subscriber is the generated Subscriber stub on the Client's connection.
func (c *Client) Subscriber() ferryv1.SubscriberClient { return c.sub }
