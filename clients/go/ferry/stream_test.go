package ferry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/ferry-sidecar/ferry/clients/go/ferryv1"
)

// fakeStreamPublisher plays PublishStream: stream n (1, 2, ...) runs play(n, call), and every
// request read is recorded per stream with the time it came.
type fakeStreamPublisher struct {
	ferryv1.UnimplementedPublisherServer
	play func(n int, c *fakeStreamCall) error

	mu         sync.Mutex
	streams    [][]*ferryv1.PublishStreamRequest
	at         map[uint64][]time.Time // request id -> when each copy came
	halfClosed int
}

func (f *fakeStreamPublisher) PublishStream(srv ferryv1.Publisher_PublishStreamServer) error {
	f.mu.Lock()
	f.streams = append(f.streams, nil)
	n := len(f.streams)
	f.mu.Unlock()
	return f.play(n, &fakeStreamCall{f: f, n: n, srv: srv})
}

// requests is what stream n (from 1) read.
func (f *fakeStreamPublisher) requests(n int) []*ferryv1.PublishStreamRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	if n > len(f.streams) {
		return nil
	}
	return slices.Clone(f.streams[n-1])
}

func (f *fakeStreamPublisher) halfCloses() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.halfClosed
}

// sentAt is when each copy of request id came.
func (f *fakeStreamPublisher) sentAt(id uint64) []time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.at[id])
}

func (f *fakeStreamPublisher) streamCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.streams)
}

type fakeStreamCall struct {
	f   *fakeStreamPublisher
	n   int
	srv ferryv1.Publisher_PublishStreamServer
}

// recv reads and records one request; io.EOF once the client half-closed.
func (c *fakeStreamCall) recv() (*ferryv1.PublishStreamRequest, error) {
	req, err := c.srv.Recv()
	c.f.mu.Lock()
	defer c.f.mu.Unlock()
	if err == io.EOF {
		c.f.halfClosed++
	}
	if err != nil {
		return nil, err
	}
	c.f.streams[c.n-1] = append(c.f.streams[c.n-1], req)
	if c.f.at == nil {
		c.f.at = map[uint64][]time.Time{}
	}
	c.f.at[req.GetRequestId()] = append(c.f.at[req.GetRequestId()], time.Now())
	return req, nil
}

// recvN reads n requests.
func (c *fakeStreamCall) recvN(n int) ([]*ferryv1.PublishStreamRequest, error) {
	var out []*ferryv1.PublishStreamRequest
	for range n {
		req, err := c.recv()
		if err != nil {
			return nil, err
		}
		out = append(out, req)
	}
	return out, nil
}

// accepted is the answer accepting req: each event's result has its id and sequence
// request_id*100 + index.
func accepted(req *ferryv1.PublishStreamRequest) *ferryv1.PublishStreamAnswer {
	a := &ferryv1.PublishStreamAnswer{RequestId: req.GetRequestId()}
	for i, ev := range req.GetEvents() {
		a.Entries = append(a.Entries, &ferryv1.PublishBatchEntry{Outcome: &ferryv1.PublishBatchEntry_Result{
			Result: &ferryv1.PublishResult{EventId: ev.GetEventId(), Sequence: int64(req.GetRequestId())*100 + int64(i)}}})
	}
	return a
}

// send sends answers in one response.
func (c *fakeStreamCall) send(answers ...*ferryv1.PublishStreamAnswer) error {
	return c.srv.Send(&ferryv1.PublishStreamResponse{Answers: answers})
}

// ok accepts req in a response of its own.
func (c *fakeStreamCall) ok(req *ferryv1.PublishStreamRequest) error { return c.send(accepted(req)) }

func (c *fakeStreamCall) refuse(req *ferryv1.PublishStreamRequest, f *ferryv1.Failure, assigned ...string) error {
	return c.send(&ferryv1.PublishStreamAnswer{RequestId: req.GetRequestId(), Error: f, AssignedEventIds: assigned})
}

// answerAll accepts every request until the client half-closes, then ends the stream OK.
func (c *fakeStreamCall) answerAll() error {
	for {
		req, err := c.recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if err := c.ok(req); err != nil {
			return err
		}
	}
}

func eventIDs(req *ferryv1.PublishStreamRequest) []string {
	var ids []string
	for _, ev := range req.GetEvents() {
		ids = append(ids, ev.GetEventId())
	}
	return ids
}

func newStreamPublisher(t *testing.T, fake *fakeStreamPublisher, sopts []StreamOption, opts ...Option) *StreamPublisher {
	t.Helper()
	c := serve(t, fake, nil, append([]Option{WithoutServiceConfig()}, opts...)...)
	p, err := c.NewStreamPublisher(sopts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = p.Close(ctx)
	})
	return p
}

func closePublisher(t *testing.T, p *StreamPublisher) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

func get[T any](t *testing.T, h *Pending[T]) (T, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	v, err := h.Get(ctx)
	if errors.Is(err, context.DeadlineExceeded) && ctx.Err() != nil {
		t.Fatal("no outcome within 30 s")
	}
	return v, err
}

func isReady[T any](h *Pending[T]) bool {
	select {
	case <-h.Ready():
		return true
	default:
		return false
	}
}

func TestStreamMatchesAnswersByRequestID(t *testing.T) {
	fake := &fakeStreamPublisher{play: func(n int, c *fakeStreamCall) error {
		// All four arrive before any answer (the client does not wait in between); the
		// answers come in another order, the first two in one response.
		reqs, err := c.recvN(4)
		if err != nil {
			return err
		}
		if err := c.send(accepted(reqs[3]), accepted(reqs[2])); err != nil { // two in one response
			return err
		}
		for _, i := range []int{0, 1} {
			if err := c.ok(reqs[i]); err != nil {
				return err
			}
		}
		return c.answerAll()
	}}
	p := newStreamPublisher(t, fake, nil)
	var hs []*Pending[*Result]
	for i := range 4 {
		hs = append(hs, p.Publish(context.Background(), Event{Topic: "t", EventID: fmt.Sprintf("e%d", i)}))
	}
	closePublisher(t, p)
	reqs := fake.requests(1)
	if len(reqs) != 4 || fake.streamCount() != 1 || fake.halfCloses() != 1 {
		t.Fatalf("%d requests on %d streams, %d half-closes", len(reqs), fake.streamCount(), fake.halfCloses())
	}
	for i, h := range hs {
		res, err := get(t, h)
		if err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
		// request ids are a counter from 1, in publish order
		if res.EventID != fmt.Sprintf("e%d", i) || res.Sequence != int64(i+1)*100 || reqs[i].GetRequestId() != uint64(i+1) {
			t.Fatalf("publish %d: %+v (request id %d)", i, res, reqs[i].GetRequestId())
		}
	}
}

func TestStreamRetriesAfterRetryDelay(t *testing.T) {
	const delay = 300 * time.Millisecond
	fake := &fakeStreamPublisher{play: func(n int, c *fakeStreamCall) error {
		req, err := c.recv()
		if err != nil {
			return err
		}
		if err := c.refuse(req, &ferryv1.Failure{Code: int32(codes.ResourceExhausted), Reason: "LOG_FULL",
			Message: "the log is full", RetryDelay: durationpb.New(delay)}); err != nil {
			return err
		}
		return c.answerAll()
	}}
	p := newStreamPublisher(t, fake, nil)
	h := p.PublishBatch(context.Background(), []Event{{Topic: "t"}, {Topic: "t", EventID: "mine"}})
	res, err := get(t, h)
	if err != nil {
		t.Fatal(err)
	}
	closePublisher(t, p)
	reqs := fake.requests(1)
	if len(reqs) != 2 || fake.streamCount() != 1 {
		t.Fatalf("%d requests on %d streams", len(reqs), fake.streamCount())
	}
	first, again := eventIDs(reqs[0]), eventIDs(reqs[1])
	if !slices.Equal(first, again) || first[1] != "mine" {
		t.Fatalf("event ids %v, then %v", first, again)
	}
	if u, err := uuid.Parse(first[0]); err != nil || u.Version() != 7 {
		t.Fatalf("event id %q is no UUIDv7", first[0])
	}
	if res[0].Result.EventID != first[0] || res[1].Result.EventID != "mine" {
		t.Fatalf("results %+v %+v", res[0].Result, res[1].Result)
	}
	at := fake.sentAt(reqs[0].GetRequestId())
	if len(at) != 2 || at[1].Sub(at[0]) < delay {
		t.Fatalf("sent again after %v, retry_delay said %v", at[1].Sub(at[0]), delay)
	}
}

func TestStreamResendsUnansweredAfterShutdown(t *testing.T) {
	fake := &fakeStreamPublisher{play: func(n int, c *fakeStreamCall) error {
		if n > 1 {
			return c.answerAll()
		}
		// Ferry draining: it answers what it logged and ends the stream; the last three
		// requests were never read into its log.
		reqs, err := c.recvN(5)
		if err != nil {
			return err
		}
		for _, req := range reqs[:2] {
			if err := c.ok(req); err != nil {
				return err
			}
		}
		return ferryErr(codes.Unavailable, "SHUTTING_DOWN", retryInfo(10*time.Millisecond))
	}}
	p := newStreamPublisher(t, fake, nil)
	var hs []*Pending[*Result]
	for i := range 5 {
		hs = append(hs, p.Publish(context.Background(), Event{Topic: "t", Key: fmt.Appendf(nil, "k%d", i%2)}))
	}
	var results []*Result
	for i, h := range hs {
		res, err := get(t, h)
		if err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
		results = append(results, res)
	}
	closePublisher(t, p)
	first, second := fake.requests(1), fake.requests(2)
	if len(first) != 5 || len(second) != 3 || fake.streamCount() != 2 {
		t.Fatalf("streams read %d and %d requests (%d streams)", len(first), len(second), fake.streamCount())
	}
	for i, req := range second {
		// the unanswered ones, in their original order, with the same ids
		if req.GetRequestId() != first[2+i].GetRequestId() || !slices.Equal(eventIDs(req), eventIDs(first[2+i])) {
			t.Fatalf("resend %d: request %d %v, first sent as request %d %v", i, req.GetRequestId(),
				eventIDs(req), first[2+i].GetRequestId(), eventIDs(first[2+i]))
		}
	}
	for i, res := range results {
		if res.EventID != eventIDs(first[i])[0] {
			t.Fatalf("result %d has id %s, the request had %v", i, res.EventID, eventIDs(first[i]))
		}
	}
}

func TestStreamRefusalFailsOnlyThatRequest(t *testing.T) {
	fake := &fakeStreamPublisher{play: func(n int, c *fakeStreamCall) error {
		reqs, err := c.recvN(4)
		if err != nil {
			return err
		}
		if err := c.ok(reqs[0]); err != nil {
			return err
		}
		if err := c.refuse(reqs[1], &ferryv1.Failure{Code: int32(codes.InvalidArgument), Reason: "FIELD_INVALID",
			Field: "events[0].topic", Message: "not a topic"}); err != nil {
			return err
		}
		if err := c.refuse(reqs[2], &ferryv1.Failure{Code: int32(codes.DeadlineExceeded), Reason: "KAFKA_ACK_TIMEOUT",
			Message: "Kafka did not answer"}, eventIDs(reqs[2])...); err != nil {
			return err
		}
		conflict := &ferryv1.PublishStreamAnswer{RequestId: reqs[3].GetRequestId(), Entries: []*ferryv1.PublishBatchEntry{
			{Outcome: &ferryv1.PublishBatchEntry_Error{Error: &ferryv1.Failure{Code: int32(codes.AlreadyExists),
				Reason: "EVENT_ID_CONFLICT", Message: "other content"}}}}}
		if err := c.send(conflict); err != nil {
			return err
		}
		return c.answerAll()
	}}
	p := newStreamPublisher(t, fake, nil)
	ctx := context.Background()
	good := p.Publish(ctx, Event{Topic: "t", EventID: "good"})
	invalid := p.Publish(ctx, Event{Topic: "not a topic!", EventID: "bad"})
	slow := p.Publish(ctx, Event{Topic: "t", EventID: "slow"}, WithAckLevel(AckKafka))
	conflict := p.Publish(ctx, Event{Topic: "t", EventID: "known"})
	after := p.Publish(ctx, Event{Topic: "t", EventID: "after"})

	if res, err := get(t, good); err != nil || res.EventID != "good" {
		t.Fatalf("good: %+v %v", res, err)
	}
	var fe *Error
	if _, err := get(t, invalid); !errors.As(err, &fe) || fe.Code != codes.InvalidArgument ||
		fe.Reason != "FIELD_INVALID" || fe.BadRequest.GetFieldViolations()[0].GetField() != "events[0].topic" ||
		status.Code(err) != codes.InvalidArgument {
		t.Fatalf("invalid: %v", err)
	}
	if _, err := get(t, slow); !errors.As(err, &fe) || fe.Code != codes.DeadlineExceeded ||
		fe.Reason != "KAFKA_ACK_TIMEOUT" || !slices.Equal(fe.AssignedEventIDs, []string{"slow"}) {
		t.Fatalf("slow: %v", err)
	}
	if _, err := get(t, conflict); !errors.As(err, &fe) || fe.Code != codes.AlreadyExists || fe.Reason != "EVENT_ID_CONFLICT" {
		t.Fatalf("conflict: %v", err)
	}
	if res, err := get(t, after); err != nil || res.EventID != "after" {
		t.Fatalf("after: %+v %v", res, err)
	}
	closePublisher(t, p)
	if reqs := fake.requests(1); len(reqs) != 5 || fake.streamCount() != 1 {
		t.Fatalf("%d requests on %d streams: refused requests are not sent again", len(reqs), fake.streamCount())
	}
	if reqs := fake.requests(1); reqs[2].GetAckLevel() != AckKafka {
		t.Fatalf("ack level %v", reqs[2].GetAckLevel())
	}
}

func TestStreamWindowBoundsUnansweredRequests(t *testing.T) {
	arrived := make(chan *ferryv1.PublishStreamRequest, 16)
	calls := make(chan *fakeStreamCall, 1)
	fake := &fakeStreamPublisher{play: func(n int, c *fakeStreamCall) error {
		calls <- c
		for {
			req, err := c.recv()
			if err == io.EOF {
				return nil
			}
			if err != nil {
				return err
			}
			arrived <- req
		}
	}}
	p := newStreamPublisher(t, fake, []StreamOption{WithMaxUnanswered(3)})
	ctx := context.Background()
	var hs []*Pending[*Result]
	for i := range 3 {
		hs = append(hs, p.Publish(ctx, Event{Topic: "t", EventID: fmt.Sprintf("e%d", i)}))
	}
	var reqs []*ferryv1.PublishStreamRequest
	for range 3 {
		reqs = append(reqs, <-arrived)
	}
	c := <-calls

	// The window is full: a publish waits for room, here until its context ends.
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	blocked := p.Publish(short, Event{Topic: "t", EventID: "blocked"})
	if !isReady(blocked) {
		t.Fatal("Publish returned with the window full")
	}
	if _, err := blocked.Get(ctx); status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("publish into a full window: %v", err)
	}
	select {
	case req := <-arrived:
		t.Fatalf("request %v sent past the window", eventIDs(req))
	default:
	}

	// One answer makes room for one more request.
	if err := c.ok(reqs[0]); err != nil {
		t.Fatal(err)
	}
	if _, err := get(t, hs[0]); err != nil {
		t.Fatal(err)
	}
	hs = append(hs, p.Publish(ctx, Event{Topic: "t", EventID: "e3"}))
	reqs = append(reqs, <-arrived)
	if got := eventIDs(reqs[3]); !slices.Equal(got, []string{"e3"}) {
		t.Fatalf("next request %v", got)
	}
	if isReady(hs[1]) || isReady(hs[2]) {
		t.Fatal("an unanswered request completed")
	}
	for _, req := range reqs[1:] {
		if err := c.ok(req); err != nil {
			t.Fatal(err)
		}
	}
	for i, h := range hs {
		if res, err := get(t, h); err != nil || res.EventID != fmt.Sprintf("e%d", i) {
			t.Fatalf("publish %d: %+v %v", i, res, err)
		}
	}
	closePublisher(t, p)
}

func TestStreamEndThatIsNotRetryableFailsUnanswered(t *testing.T) {
	fake := &fakeStreamPublisher{play: func(n int, c *fakeStreamCall) error {
		if n > 1 {
			return c.answerAll()
		}
		if _, err := c.recvN(2); err != nil {
			return err
		}
		return ferryErr(codes.Internal, "INTERNAL")
	}}
	p := newStreamPublisher(t, fake, nil)
	ctx := context.Background()
	a, b := p.Publish(ctx, Event{Topic: "t"}), p.Publish(ctx, Event{Topic: "t"})
	for _, h := range []*Pending[*Result]{a, b} {
		var fe *Error
		if _, err := get(t, h); !errors.As(err, &fe) || fe.Code != codes.Internal || fe.Reason != "INTERNAL" {
			t.Fatalf("err = %v", err)
		}
	}
	// The publisher goes on, on a new stream.
	if res, err := get(t, p.Publish(ctx, Event{Topic: "t", EventID: "next"})); err != nil || res.EventID != "next" {
		t.Fatalf("next: %+v %v", res, err)
	}
	closePublisher(t, p)
	if len(fake.requests(2)) != 1 {
		t.Fatalf("second stream read %d requests, want only the new one", len(fake.requests(2)))
	}
}

func TestStreamDeadlineAndClose(t *testing.T) {
	fake := &fakeStreamPublisher{play: func(n int, c *fakeStreamCall) error {
		for { // read everything, answer nothing
			if _, err := c.recv(); err != nil {
				if err == io.EOF {
					return nil
				}
				return err
			}
		}
	}}
	p := newStreamPublisher(t, fake, nil, WithPublishDeadline(300*time.Millisecond))
	if _, err := get(t, p.Publish(context.Background(), Event{Topic: "t"})); status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("unanswered publish past the publish deadline: %v", err)
	}

	// Close waits for outstanding publishes; when its context ends first it fails them.
	q := newStreamPublisher(t, fake, nil, WithPublishDeadline(0))
	h := q.Publish(context.Background(), Event{Topic: "t"})
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := q.Close(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Close: %v", err)
	}
	if _, err := get(t, h); status.Code(err) != codes.Canceled {
		t.Fatalf("outstanding publish after Close gave up: %v", err)
	}
	if _, err := get(t, q.Publish(context.Background(), Event{Topic: "t"})); !errors.Is(err, ErrClosed) {
		t.Fatalf("publish after Close: %v", err)
	}
	closePublisher(t, p)
}
