package ferry

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/protoadapt"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/ferry-sidecar/ferry/clients/go/ferryv1"
)

// ferryErr builds a status error the way Ferry does: an ErrorInfo (unless reason is empty)
// and the given extra details.
func ferryErr(code codes.Code, reason string, details ...protoadapt.MessageV1) error {
	st := status.New(code, "from the fake")
	var all []protoadapt.MessageV1
	if reason != "" {
		all = append(all, &errdetails.ErrorInfo{Reason: reason, Domain: "ferry.v1"})
	}
	st, err := st.WithDetails(append(all, details...)...)
	if err != nil {
		panic(err)
	}
	return st.Err()
}

func retryInfo(d time.Duration) *errdetails.RetryInfo {
	return &errdetails.RetryInfo{RetryDelay: durationpb.New(d)}
}

func TestRetryable(t *testing.T) {
	live := context.Background()
	done, cancel := context.WithCancel(context.Background())
	cancel()
	cases := []struct {
		name string
		ctx  context.Context
		err  error
		want bool
	}{
		{"unavailable", live, ferryErr(codes.Unavailable, "SHUTTING_DOWN", retryInfo(time.Second)), true},
		{"unavailable from the transport", live, status.Error(codes.Unavailable, "connection refused"), true},
		{"log full", live, ferryErr(codes.ResourceExhausted, "LOG_FULL", retryInfo(time.Second)), true},
		{"over the receive limit", live, status.Error(codes.ResourceExhausted, "message larger than max"), false},
		{"cancelled by the server", live, status.Error(codes.Canceled, "server stopping"), true},
		{"cancelled by the caller", done, status.Error(codes.Canceled, "context canceled"), false},
		{"attempt deadline", live, status.Error(codes.DeadlineExceeded, "deadline"), true},
		{"log commit timeout", live, ferryErr(codes.DeadlineExceeded, "LOG_COMMIT_TIMEOUT"), true},
		{"caller deadline", done, status.Error(codes.DeadlineExceeded, "deadline"), false},
		{"invalid argument", live, ferryErr(codes.InvalidArgument, "FIELD_INVALID"), false},
		{"already exists", live, ferryErr(codes.AlreadyExists, "EVENT_ID_CONFLICT"), false},
		{"failed precondition", live, ferryErr(codes.FailedPrecondition, "NO_DEAD_LETTER_TOPIC"), false},
		{"not found", live, ferryErr(codes.NotFound, "SUBSCRIPTION_NOT_FOUND"), false},
		{"internal", live, ferryErr(codes.Internal, "INTERNAL"), false},
		{"nil", live, nil, false},
	}
	for _, tc := range cases {
		if got := Retryable(tc.ctx, tc.err); got != tc.want {
			t.Errorf("%s: Retryable = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestErrorDecodesDetails(t *testing.T) {
	bad := &errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{
		{Field: "event.topic", Description: "must not be empty"}}}
	e := toError(ferryErr(codes.InvalidArgument, "FIELD_INVALID", bad))
	if e.Code != codes.InvalidArgument || e.Reason != "FIELD_INVALID" || e.ErrorInfo.GetDomain() != "ferry.v1" {
		t.Fatalf("decoded %+v", e)
	}
	if got := e.BadRequest.GetFieldViolations()[0].GetField(); got != "event.topic" {
		t.Fatalf("field violation %q", got)
	}
	e = toError(ferryErr(codes.DeadlineExceeded, "KAFKA_ACK_TIMEOUT",
		&ferryv1.AssignedEventIds{EventIds: []string{"a", "b"}}))
	if len(e.AssignedEventIDs) != 2 || e.AssignedEventIDs[1] != "b" {
		t.Fatalf("assigned ids %v", e.AssignedEventIDs)
	}
	e = toError(ferryErr(codes.Unavailable, "SHUTTING_DOWN", retryInfo(1500*time.Millisecond)))
	if e.retryDelay() != 1500*time.Millisecond {
		t.Fatalf("retry delay %v", e.retryDelay())
	}
	// The error surfaces as a gRPC status error, also when wrapped.
	wrapped := errors.Join(errors.New("context"), e)
	if status.Code(wrapped) != codes.Unavailable {
		t.Fatalf("status.Code = %v", status.Code(wrapped))
	}
	var fe *Error
	if !errors.As(wrapped, &fe) || fe.Reason != "SHUTTING_DOWN" {
		t.Fatalf("errors.As gave %v", fe)
	}
}

func TestBackoffIsCappedAndHonoursRetryInfo(t *testing.T) {
	b := newBackoff(retryConfig{initial: 100 * time.Millisecond, max: time.Second})
	var last time.Duration
	for range 10 {
		last = b.wait(0)
	}
	if last < 800*time.Millisecond || last > 1200*time.Millisecond {
		t.Fatalf("capped backoff %v, want 1 s ± 20%%", last)
	}
	if d := b.wait(3 * time.Second); d != 3*time.Second {
		t.Fatalf("with RetryInfo 3 s: %v", d)
	}
	b.reset()
	if d := b.wait(0); d > 120*time.Millisecond {
		t.Fatalf("after reset: %v", d)
	}
}

// fakePublisher answers each call with the next scripted error, then OK. hang makes an
// attempt wait for its context instead.
type fakePublisher struct {
	ferryv1.UnimplementedPublisherServer
	mu     sync.Mutex
	script []error
	ids    []string
	at     []time.Time
}

var errHang = errors.New("hang")

// seen is the event ids of all attempts so far.
func (f *fakePublisher) seen() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.ids)
}

func (f *fakePublisher) next(ctx context.Context, ids ...string) error {
	f.mu.Lock()
	f.ids = append(f.ids, ids...)
	f.at = append(f.at, time.Now())
	var err error
	if len(f.script) > 0 {
		err, f.script = f.script[0], f.script[1:]
	}
	f.mu.Unlock()
	if err == errHang {
		<-ctx.Done()
		return status.FromContextError(ctx.Err()).Err()
	}
	return err
}

func (f *fakePublisher) Publish(ctx context.Context, req *ferryv1.PublishRequest) (*ferryv1.PublishResponse, error) {
	if err := f.next(ctx, req.GetEvent().GetEventId()); err != nil {
		return nil, err
	}
	return &ferryv1.PublishResponse{Result: &ferryv1.PublishResult{
		EventId: req.GetEvent().GetEventId(), Sequence: int64(len(f.ids))}}, nil
}

func (f *fakePublisher) PublishBatch(ctx context.Context, req *ferryv1.PublishBatchRequest) (*ferryv1.PublishBatchResponse, error) {
	var ids []string
	for _, ev := range req.GetEvents() {
		ids = append(ids, ev.GetEventId())
	}
	if err := f.next(ctx, ids...); err != nil {
		return nil, err
	}
	resp := &ferryv1.PublishBatchResponse{}
	for i, id := range ids {
		entry := &ferryv1.PublishBatchEntry{Outcome: &ferryv1.PublishBatchEntry_Result{
			Result: &ferryv1.PublishResult{EventId: id, Sequence: int64(i + 1)}}}
		if i == 1 {
			entry.Outcome = &ferryv1.PublishBatchEntry_Error{Error: &ferryv1.Failure{
				Code: int32(codes.AlreadyExists), Reason: "EVENT_ID_CONFLICT", Message: "other content"}}
		}
		resp.Entries = append(resp.Entries, entry)
	}
	return resp, nil
}

// serve starts an in-process server with the fakes and returns a Client dialed to it.
func serve(t *testing.T, pub ferryv1.PublisherServer, sub ferryv1.SubscriberServer, opts ...Option) *Client {
	t.Helper()
	lis := bufconn.Listen(1 << 20)
	srv := grpc.NewServer()
	if pub != nil {
		ferryv1.RegisterPublisherServer(srv, pub)
	}
	if sub != nil {
		ferryv1.RegisterSubscriberServer(srv, sub)
	}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	base := []Option{
		WithAddr("passthrough:///fake"),
		WithDialOptions(grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			return lis.DialContext(ctx)
		})),
		WithBackoff(10*time.Millisecond, 50*time.Millisecond),
		WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))),
	}
	c, err := NewClient(append(base, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func TestPublishRetries(t *testing.T) {
	cases := []struct {
		name     string
		script   []error
		attempts int
		code     codes.Code // of the final error; OK for success
	}{
		{"unavailable then ok", []error{ferryErr(codes.Unavailable, "SHUTTING_DOWN", retryInfo(10*time.Millisecond))}, 2, codes.OK},
		{"log full then ok", []error{ferryErr(codes.ResourceExhausted, "LOG_FULL", retryInfo(10*time.Millisecond))}, 2, codes.OK},
		{"over the receive limit", []error{status.Error(codes.ResourceExhausted, "too large")}, 1, codes.ResourceExhausted},
		{"cancelled by the server then ok", []error{status.Error(codes.Canceled, "stopping")}, 2, codes.OK},
		{"log commit timeout then ok", []error{ferryErr(codes.DeadlineExceeded, "LOG_COMMIT_TIMEOUT")}, 2, codes.OK},
		{"attempt hangs then ok", []error{errHang}, 2, codes.OK},
		{"invalid argument", []error{ferryErr(codes.InvalidArgument, "FIELD_INVALID")}, 1, codes.InvalidArgument},
		{"already exists", []error{ferryErr(codes.AlreadyExists, "EVENT_ID_CONFLICT")}, 1, codes.AlreadyExists},
		{"failed precondition", []error{ferryErr(codes.FailedPrecondition, "X")}, 1, codes.FailedPrecondition},
		{"not found", []error{ferryErr(codes.NotFound, "X")}, 1, codes.NotFound},
		{"internal", []error{ferryErr(codes.Internal, "INTERNAL")}, 1, codes.Internal},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fake := &fakePublisher{script: tc.script}
			c := serve(t, fake, nil, WithoutServiceConfig(), WithAttemptTimeout(200*time.Millisecond))
			res, err := c.Publish(context.Background(), Event{Topic: "t", Payload: []byte("p")})
			if status.Code(err) != tc.code {
				t.Fatalf("err = %v, want code %v", err, tc.code)
			}
			if len(fake.ids) != tc.attempts {
				t.Fatalf("%d attempts, want %d", len(fake.ids), tc.attempts)
			}
			// One id, assigned by the client (a UUIDv7), kept across attempts.
			u, perr := uuid.Parse(fake.ids[0])
			if perr != nil || u.Version() != 7 {
				t.Fatalf("event id %q is no UUIDv7", fake.ids[0])
			}
			for _, id := range fake.ids {
				if id != fake.ids[0] {
					t.Fatalf("event ids changed across attempts: %v", fake.ids)
				}
			}
			if err == nil && res.EventID != fake.ids[0] {
				t.Fatalf("result id %q", res.EventID)
			}
			var fe *Error
			if err != nil && (!errors.As(err, &fe) || fe.Code != tc.code) {
				t.Fatalf("error %T %v is no *Error", err, err)
			}
		})
	}
}

func TestPublishHonoursRetryInfo(t *testing.T) {
	fake := &fakePublisher{script: []error{ferryErr(codes.Unavailable, "SHUTTING_DOWN", retryInfo(400*time.Millisecond))}}
	c := serve(t, fake, nil, WithoutServiceConfig())
	if _, err := c.Publish(context.Background(), Event{Topic: "t", EventID: "mine"}); err != nil {
		t.Fatal(err)
	}
	if gap := fake.at[1].Sub(fake.at[0]); gap < 400*time.Millisecond {
		t.Fatalf("retried after %v, RetryInfo said 400 ms", gap)
	}
	if fake.ids[0] != "mine" || fake.ids[1] != "mine" {
		t.Fatalf("ids %v", fake.ids)
	}
}

func TestPublishStopsAtTheDeadline(t *testing.T) {
	var script []error
	for range 1000 {
		script = append(script, ferryErr(codes.Unavailable, "LOG_WRITE_FAILED"))
	}
	fake := &fakePublisher{script: script}
	c := serve(t, fake, nil, WithoutServiceConfig(), WithPublishDeadline(300*time.Millisecond))
	start := time.Now()
	_, err := c.Publish(context.Background(), Event{Topic: "t"})
	// The last attempt's error: the server's, when the deadline fell in a wait between attempts;
	// DeadlineExceeded, when it fell during an attempt (one started with little time left).
	var fe *Error
	if !errors.As(err, &fe) {
		t.Fatalf("err = %v", err)
	}
	refused := fe.Code == codes.Unavailable && fe.Reason == "LOG_WRITE_FAILED"
	if !refused && fe.Code != codes.DeadlineExceeded {
		t.Fatalf("err = %v", err)
	}
	if took := time.Since(start); took > time.Second || len(fake.ids) < 3 {
		t.Fatalf("gave up after %v and %d attempts", took, len(fake.ids))
	}
}

func TestPublishCallerCancelIsNotRetried(t *testing.T) {
	fake := &fakePublisher{script: []error{errHang, errHang}}
	c := serve(t, fake, nil, WithoutServiceConfig())
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := c.Publish(ctx, Event{Topic: "t"})
	if ids := fake.seen(); status.Code(err) != codes.DeadlineExceeded || len(ids) != 1 {
		t.Fatalf("err = %v after %d attempts", err, len(ids))
	}
}

func TestPublishWithServiceConfig(t *testing.T) {
	fake := &fakePublisher{script: []error{
		ferryErr(codes.Unavailable, "SHUTTING_DOWN", retryInfo(10*time.Millisecond)),
		ferryErr(codes.Unavailable, "SHUTTING_DOWN", retryInfo(10*time.Millisecond)),
	}}
	c := serve(t, fake, nil) // the channel's retry policy and the client's loop together
	if _, err := c.Publish(context.Background(), Event{Topic: "t"}); err != nil {
		t.Fatal(err)
	}
	if len(fake.ids) != 3 || fake.ids[0] != fake.ids[2] {
		t.Fatalf("ids %v", fake.ids)
	}
}

func TestPublishBatch(t *testing.T) {
	fake := &fakePublisher{script: []error{ferryErr(codes.Unavailable, "SHUTTING_DOWN")}}
	c := serve(t, fake, nil, WithoutServiceConfig())
	res, err := c.PublishBatch(context.Background(), []Event{{Topic: "t"}, {Topic: "t", EventID: "x"}, {Topic: "t"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(fake.ids) != 6 || fake.ids[0] != fake.ids[3] || fake.ids[1] != "x" || fake.ids[2] != fake.ids[5] {
		t.Fatalf("ids across the two attempts: %v", fake.ids)
	}
	var fe *Error
	if res[0].Err != nil || !errors.As(res[1].Err, &fe) || fe.Reason != "EVENT_ID_CONFLICT" ||
		fe.Code != codes.AlreadyExists || res[2].Result.EventID != fake.ids[2] {
		t.Fatalf("results %+v", res)
	}
}
