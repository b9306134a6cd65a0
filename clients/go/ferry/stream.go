package ferry

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ferry-sidecar/ferry/clients/go/ferryv1"
)

// ErrClosed is the error of a publish on a [StreamPublisher] that is closing or closed.
var ErrClosed = errors.New("ferry: the stream publisher is closed")

// DefaultMaxUnanswered is how many requests a [StreamPublisher] keeps unanswered at most,
// unless [WithMaxUnanswered] says otherwise.
const DefaultMaxUnanswered = 1024

// Pending is the outcome of one publish on a [StreamPublisher]: Ferry's answer once Ready is
// closed. T is what the matching [Client] call returns: *Result for
// [StreamPublisher.Publish], []BatchResult for [StreamPublisher.PublishBatch].
type Pending[T any] struct {
	ready chan struct{}
	val   T
	err   error
}

func newPending[T any]() *Pending[T] { return &Pending[T]{ready: make(chan struct{})} }

func failedPending[T any](err error) *Pending[T] {
	p := newPending[T]()
	p.finish(*new(T), err)
	return p
}

func (p *Pending[T]) finish(val T, err error) {
	p.val, p.err = val, err
	close(p.ready)
}

// Ready is closed once the outcome is known.
func (p *Pending[T]) Ready() <-chan struct{} { return p.ready }

// Get waits for the outcome, or for ctx (which bounds only this wait), and returns it: what
// the matching Client call would return, its error an *Error once retries are over.
func (p *Pending[T]) Get(ctx context.Context) (T, error) {
	select {
	case <-p.ready:
		return p.val, p.err
	default:
	}
	select {
	case <-p.ready:
		return p.val, p.err
	case <-ctx.Done():
		var zero T
		return zero, ctx.Err()
	}
}

// A StreamOption configures a [StreamPublisher].
type StreamOption func(*streamConfig)

type streamConfig struct {
	maxUnanswered int
}

// WithMaxUnanswered sets how many requests a StreamPublisher holds at most before their
// answer (default [DefaultMaxUnanswered]); a publish waits while that many are unanswered.
func WithMaxUnanswered(n int) StreamOption {
	return func(c *streamConfig) { c.maxUnanswered = n }
}

// StreamPublisher publishes over one PublishStream: each publish is a request sent at once,
// without waiting for the answers to earlier ones, and its [Pending] outcome completes when
// Ferry answers it. Ferry logs one stream's requests in the order they arrive, so events with
// the same key keep their publish order.
//
// Every event gets its id before the first send (the caller's, or a UUIDv7), and every
// resend carries the same ids, as with [Client.Publish]. A request Ferry refuses with
// UNAVAILABLE or RESOURCE_EXHAUSTED is sent again after the retry delay (or the backoff)
// while the publish deadline allows; it may then land after requests published later. Other
// refusals fail that request alone. When the stream ends (Ferry draining, a lost connection)
// the StreamPublisher opens a new one with backoff and sends every unanswered request again,
// in publish order: Ferry answers an id it already logged as a duplicate, so nothing is
// written twice within its idempotency window.
//
// A StreamPublisher is safe for concurrent use. Close it before closing its Client.
type StreamPublisher struct {
	c      *Client
	cfg    streamConfig
	ctx    context.Context // cancelled when Close gives up: everything stops
	cancel context.CancelFunc
	slots  chan struct{} // one token per unanswered request
	done   chan struct{} // closed when the stream loop has ended

	mu      sync.Mutex
	cond    *sync.Cond // signalled on every change of the state below
	lastID  uint64
	pending map[uint64]*streamRequest // not yet completed
	queue   []*streamRequest          // to send on the current stream, in this order
	closed  bool
}

// request states
const (
	queued    = iota // waiting for the sender
	sent             // sent on the current stream, no answer yet
	retryWait        // refused, waiting for its retry delay
	completed        // its Pending is ready
)

type streamRequest struct {
	id      uint64
	msg     *ferryv1.PublishStreamRequest
	state   int
	ctx     context.Context // the caller's, bounded by the publish deadline
	stop    func() bool     // stops the AfterFunc watching ctx
	cancel  context.CancelFunc
	backoff *backoff
	timer   *time.Timer // of a retry
	lastErr *Error      // the last refusal or stream end this request saw
	finish  func(entries []*ferryv1.PublishBatchEntry, err error)
}

// NewStreamPublisher returns a StreamPublisher on the Client's connection. It opens its
// stream with the first publish. The Client's backoff and publish deadline
// ([WithBackoff], [WithPublishDeadline]) apply to its retries and reconnects.
func (c *Client) NewStreamPublisher(opts ...StreamOption) (*StreamPublisher, error) {
	cfg := streamConfig{maxUnanswered: DefaultMaxUnanswered}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.maxUnanswered < 1 {
		return nil, errors.New("ferry: a stream publisher needs room for at least 1 unanswered request")
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &StreamPublisher{c: c, cfg: cfg, ctx: ctx, cancel: cancel,
		slots: make(chan struct{}, cfg.maxUnanswered), done: make(chan struct{}),
		pending: map[uint64]*streamRequest{}}
	p.cond = sync.NewCond(&p.mu)
	context.AfterFunc(ctx, p.signal)
	go p.run()
	return p, nil
}

// Publish sends one event on the stream and returns its outcome to come: the *Result
// [Client.Publish] would return, or its error. It waits only while the publisher holds the
// most unanswered requests it may. ctx bounds the publish like [Client.Publish]'s: the wait
// for room, the answer and the resends (cancel it only to give up: the event may be logged
// all the same).
func (p *StreamPublisher) Publish(ctx context.Context, ev Event, opts ...PublishOption) *Pending[*Result] {
	pe, err := toProto(ev)
	if err != nil {
		return failedPending[*Result](err)
	}
	out := newPending[*Result]()
	p.send(ctx, []*ferryv1.Event{pe}, opts, func(entries []*ferryv1.PublishBatchEntry, err error) {
		switch {
		case err != nil:
			out.finish(nil, err)
		case len(entries) != 1:
			out.finish(nil, fmt.Errorf("ferry: %d results for 1 event", len(entries)))
		case entries[0].GetError() != nil:
			out.finish(nil, failureError(entries[0].GetError()))
		default:
			out.finish(fromProto(entries[0].GetResult()), nil)
		}
	})
	return out
}

// PublishBatch sends events as one request on the stream and returns its outcome to come:
// one BatchResult per event, as [Client.PublishBatch] returns. If any event is invalid the
// request fails with INVALID_ARGUMENT and nothing is written. It waits and takes ctx as
// [StreamPublisher.Publish] does.
func (p *StreamPublisher) PublishBatch(ctx context.Context, events []Event, opts ...PublishOption) *Pending[[]BatchResult] {
	pes := make([]*ferryv1.Event, 0, len(events))
	for _, ev := range events {
		pe, err := toProto(ev)
		if err != nil {
			return failedPending[[]BatchResult](err)
		}
		pes = append(pes, pe)
	}
	out := newPending[[]BatchResult]()
	p.send(ctx, pes, opts, func(entries []*ferryv1.PublishBatchEntry, err error) {
		if err != nil {
			out.finish(nil, err)
			return
		}
		out.finish(batchResults(entries, len(events)))
	})
	return out
}

// send takes a slot in the window, queues the request and wakes the stream loop. finish is
// called once, with the answer's entries or the final error.
func (p *StreamPublisher) send(ctx context.Context, events []*ferryv1.Event, opts []PublishOption,
	finish func([]*ferryv1.PublishBatchEntry, error)) {
	var cfg publishConfig
	for _, o := range opts {
		o(&cfg)
	}
	if p.isClosed() {
		finish(nil, ErrClosed)
		return
	}
	select {
	case p.slots <- struct{}{}:
	case <-ctx.Done():
		finish(nil, toError(status.FromContextError(ctx.Err()).Err()))
		return
	case <-p.ctx.Done():
		finish(nil, ErrClosed)
		return
	}
	rctx, cancel := ctx, context.CancelFunc(func() {})
	if p.c.retry.deadline > 0 {
		rctx, cancel = context.WithTimeout(ctx, p.c.retry.deadline)
	}
	r := &streamRequest{ctx: rctx, cancel: cancel, finish: finish,
		msg: &ferryv1.PublishStreamRequest{Events: events, AckLevel: cfg.ackLevel, KafkaWait: cfg.wait()}}

	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || ctx.Err() != nil {
		<-p.slots
		cancel()
		if p.closed {
			finish(nil, ErrClosed)
		} else {
			finish(nil, toError(status.FromContextError(ctx.Err()).Err()))
		}
		return
	}
	p.lastID++
	r.id = p.lastID
	r.msg.RequestId = r.id
	p.pending[r.id] = r
	p.queue = append(p.queue, r)
	r.stop = context.AfterFunc(rctx, func() { p.expire(r) })
	p.cond.Broadcast()
}

// Flush waits until every request published before it was called has its outcome, or until
// ctx is done (then it returns ctx's error and the requests go on).
func (p *StreamPublisher) Flush(ctx context.Context) error {
	stop := context.AfterFunc(ctx, p.signal)
	defer stop()
	p.mu.Lock()
	defer p.mu.Unlock()
	mark := p.lastID
	for {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		older := false
		for id := range p.pending {
			if id <= mark {
				older = true
				break
			}
		}
		if !older {
			return nil
		}
		p.cond.Wait()
	}
}

// Close refuses new publishes ([ErrClosed]), waits for the outcome of every outstanding one,
// then half-closes the stream and waits for Ferry to end it. If ctx is done first, it stops
// everything at once: the publishes still outstanding fail with CANCELLED (they may or may
// not be logged), and Close returns ctx's error.
func (p *StreamPublisher) Close(ctx context.Context) error {
	p.mu.Lock()
	p.closed = true
	p.cond.Broadcast()
	p.mu.Unlock()
	err := p.Flush(ctx)
	if err == nil {
		select {
		case <-p.done:
			return nil
		case <-ctx.Done():
			err = ctx.Err()
		}
	}
	p.abort()
	<-p.done
	return err
}

// abort stops the stream loop and fails every outstanding request.
func (p *StreamPublisher) abort() {
	p.cancel()
	p.mu.Lock()
	defer p.mu.Unlock()
	e := toError(status.Error(codes.Canceled, "ferry: the stream publisher was closed before Ferry answered"))
	for _, r := range p.pending {
		p.complete(r, nil, e)
	}
}

func (p *StreamPublisher) isClosed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.closed
}

func (p *StreamPublisher) signal() {
	p.mu.Lock()
	p.cond.Broadcast()
	p.mu.Unlock()
}

// complete gives r its outcome and frees its slot. p.mu is held.
func (p *StreamPublisher) complete(r *streamRequest, entries []*ferryv1.PublishBatchEntry, err error) {
	if r.state == completed {
		return
	}
	if r.state == queued {
		if i := slices.Index(p.queue, r); i >= 0 {
			p.queue = slices.Delete(p.queue, i, i+1)
		}
	}
	r.state = completed
	delete(p.pending, r.id)
	if r.timer != nil {
		r.timer.Stop()
	}
	r.stop()
	r.cancel()
	r.finish(entries, err)
	<-p.slots
	p.cond.Broadcast()
}

// expire ends a request whose context is done (the caller's, or the publish deadline) with
// the last error it saw, else the context's.
func (p *StreamPublisher) expire(r *streamRequest) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if r.state == completed {
		return
	}
	err := r.lastErr
	if err == nil {
		err = toError(status.FromContextError(r.ctx.Err()).Err())
	}
	p.complete(r, nil, err)
}

// run is the stream loop: it opens a stream when there is something to send, runs it until
// it ends, and opens the next one with backoff, until the publisher is closed and idle.
func (p *StreamPublisher) run() {
	defer close(p.done)
	b := newBackoff(p.c.retry)
	for p.waitForWork() {
		answered, err := p.stream()
		if err == nil {
			continue // ended OK after the half-close
		}
		if p.ctx.Err() != nil {
			return // Close gave up
		}
		if answered {
			b.reset()
		}
		e := toError(err)
		wait := b.wait(e.retryDelay())
		p.c.log.Warn("ferry: publish stream ended, reconnecting", "code", e.Code.String(),
			"reason", e.Reason, "message", e.Message, "wait", wait)
		p.pause(wait)
	}
}

// pause waits d, or less when the publisher stops or is closed with nothing outstanding.
func (p *StreamPublisher) pause(d time.Duration) {
	elapsed := false
	t := time.AfterFunc(d, func() {
		p.mu.Lock()
		elapsed = true
		p.cond.Broadcast()
		p.mu.Unlock()
	})
	defer t.Stop()
	p.mu.Lock()
	defer p.mu.Unlock()
	for !elapsed && p.ctx.Err() == nil && !(p.closed && len(p.pending) == 0) {
		p.cond.Wait()
	}
}

// waitForWork waits until a request is queued (true), or the publisher is closed with
// nothing outstanding, or stopped (false).
func (p *StreamPublisher) waitForWork() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for {
		switch {
		case p.ctx.Err() != nil:
			return false
		case len(p.queue) > 0:
			return true
		case p.closed && len(p.pending) == 0:
			return false
		}
		p.cond.Wait()
	}
}

// stream runs one PublishStream until it ends. answered says whether Ferry answered any
// request on it; a nil error means it ended OK after the publisher's half-close.
func (p *StreamPublisher) stream() (answered bool, err error) {
	sctx, cancel := context.WithCancel(p.ctx)
	defer cancel()
	cl, err := p.c.pub.PublishStream(sctx)
	if err != nil {
		return false, err
	}
	stopSignal := context.AfterFunc(sctx, p.signal)
	defer stopSignal()
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		p.sendLoop(sctx, cl)
	}()
	for {
		resp, err := cl.Recv()
		if err != nil {
			cancel()
			<-sent // no request moves to `sent` on this stream any more
			return answered, p.ended(err)
		}
		answered = true
		p.answer(resp)
	}
}

// sendLoop is the stream's only sender: queued requests in queue order, then the half-close
// once the publisher is closed and every request has its outcome.
func (p *StreamPublisher) sendLoop(ctx context.Context, cl ferryv1.Publisher_PublishStreamClient) {
	for {
		p.mu.Lock()
		for ctx.Err() == nil && len(p.queue) == 0 && !(p.closed && len(p.pending) == 0) {
			p.cond.Wait()
		}
		if ctx.Err() != nil {
			p.mu.Unlock()
			return
		}
		if len(p.queue) == 0 {
			p.mu.Unlock()
			_ = cl.CloseSend()
			return
		}
		r := p.queue[0]
		p.queue = p.queue[1:]
		r.state = sent
		p.mu.Unlock()
		if cl.Send(r.msg) != nil {
			return // the stream is gone; Recv tells why
		}
	}
}

// answer matches each answer a response carries to its request by request_id.
func (p *StreamPublisher) answer(resp *ferryv1.PublishStreamResponse) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, a := range resp.GetAnswers() {
		p.answerOne(a)
	}
}

// answerOne completes (or schedules the retry of) the request a answers. p.mu is held.
func (p *StreamPublisher) answerOne(resp *ferryv1.PublishStreamAnswer) {
	r := p.pending[resp.GetRequestId()]
	if r == nil || r.state != sent {
		if resp.GetError() != nil {
			p.c.log.Warn("ferry: a publish stream answer matches no request", "request_id",
				resp.GetRequestId(), "code", codes.Code(resp.GetError().GetCode()).String(),
				"reason", resp.GetError().GetReason(), "message", resp.GetError().GetMessage())
		}
		return // an answer to a request given up on (its deadline passed)
	}
	f := resp.GetError()
	if f == nil {
		p.complete(r, resp.GetEntries(), nil)
		return
	}
	e := failureError(f, resp.GetAssignedEventIds()...)
	if !requestRetryable(e) {
		p.complete(r, nil, e)
		return
	}
	r.lastErr = e
	if r.backoff == nil {
		r.backoff = newBackoff(p.c.retry)
	}
	wait := r.backoff.wait(e.retryDelay())
	if dl, ok := r.ctx.Deadline(); ok && time.Until(dl) < wait {
		p.c.log.Warn("ferry: giving up, the deadline comes before the next attempt",
			"call", "publish stream", "request_id", r.id, "code", e.Code.String(), "reason", e.Reason)
		p.complete(r, nil, e)
		return
	}
	p.c.log.Info("ferry: retrying", "call", "publish stream", "request_id", r.id,
		"code", e.Code.String(), "reason", e.Reason, "wait", wait)
	r.state = retryWait
	r.timer = time.AfterFunc(wait, func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		if r.state == retryWait {
			r.state = queued
			p.queue = append(p.queue, r)
			p.cond.Broadcast()
		}
	})
}

// requestRetryable says whether a request Ferry refused on the stream may be sent again:
// UNAVAILABLE (LOG_WRITE_FAILED) and RESOURCE_EXHAUSTED with a reason (LOG_FULL,
// TOPIC_SHARE_FULL, DISK_FULL).
func requestRetryable(e *Error) bool {
	return e.Code == codes.Unavailable || (e.Code == codes.ResourceExhausted && e.ErrorInfo != nil)
}

// ended handles the end of the current stream: requests sent on it and unanswered go back to
// the queue, in publish order ahead of the ones not sent yet, when the end is retryable, and
// fail with it when not. It returns nil for an OK end after the publisher's half-close.
func (p *StreamPublisher) ended(err error) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	var unanswered []*streamRequest
	for _, r := range p.pending {
		if r.state == sent {
			unanswered = append(unanswered, r)
		}
	}
	if err == io.EOF {
		if p.closed && len(p.pending) == 0 {
			return nil
		}
		err = status.Error(codes.Unavailable, "ferry: the publish stream ended with requests unanswered")
	}
	e := toError(err)
	if !Retryable(p.ctx, e) {
		for _, r := range unanswered {
			p.complete(r, nil, e)
		}
		return e
	}
	for _, r := range unanswered {
		r.state = queued
		r.lastErr = e
	}
	p.queue = append(unanswered, p.queue...)
	slices.SortFunc(p.queue, func(a, b *streamRequest) int { return cmp.Compare(a.id, b.id) })
	return e
}
