package ferry

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/ferry-sidecar/ferry/clients/go/ferryv1"
)

// Message is one delivery: a Kafka record leased to this subscriber.
type Message struct {
	// EventID is the publisher's event id, or "<topic>/<partition>/<offset>" for a record
	// not published through Ferry. A record can be delivered more than once.
	EventID string
	Topic   string
	// Key and Payload are nil when the record's key or value is null.
	Key, Payload []byte
	Headers      []Header
	// PublishTime is when Ferry logged the event (zero for records not published by Ferry).
	PublishTime      time.Time
	PublishedByFerry bool
	KafkaTime        time.Time
	Partition        int32
	Offset           int64
	// DeliveryAttempt is 1 on the first delivery and grows by one on each redelivery.
	DeliveryAttempt int32
	AckID           string
}

// A Handler processes one message. Returning nil acks it; an error (or a panic) nacks it so
// that Ferry delivers it again. ctx is cancelled only when a stop outlasts the stop timeout.
type Handler func(ctx context.Context, m *Message) error

// A SubscribeOption configures [Client.Subscribe].
type SubscribeOption func(*subscribeConfig)

type subscribeConfig struct {
	open        *ferryv1.OpenSubscription
	concurrency int
	nackDelay   time.Duration
	stopTimeout time.Duration
}

// WithConcurrency sets how many handlers run at once (default 16).
func WithConcurrency(n int) SubscribeOption {
	return func(c *subscribeConfig) { c.concurrency = n }
}

// WithLeaseDuration sets the lease of each delivery (Ferry's default: 30 s). Leases of
// messages waiting for or inside a handler are extended every half lease.
func WithLeaseDuration(d time.Duration) SubscribeOption {
	return func(c *subscribeConfig) { c.open.LeaseDuration = durationpb.New(d) }
}

// WithMaxOutstanding sets the most messages leased to the stream at once (Ferry's default:
// 1000).
func WithMaxOutstanding(n int32) SubscribeOption {
	return func(c *subscribeConfig) { c.open.MaxOutstandingEvents = n }
}

// WithStartPosition sets where a subscription without committed offsets starts (Ferry's
// default: earliest).
func WithStartPosition(p ferryv1.StartPosition) SubscribeOption {
	return func(c *subscribeConfig) { c.open.StartPosition = p }
}

// WithDeliveryOrder sets the subscription's delivery order (Ferry's default: unordered).
func WithDeliveryOrder(o ferryv1.DeliveryOrder) SubscribeOption {
	return func(c *subscribeConfig) { c.open.DeliveryOrder = o }
}

// WithNackDelay sets how long a nacked message waits before it is delivered again (default:
// the subscription's redelivery backoff).
func WithNackDelay(d time.Duration) SubscribeOption {
	return func(c *subscribeConfig) { c.nackDelay = d }
}

// WithStopTimeout sets how long a stop waits for running handlers before it cancels their
// context (default 10 s).
func WithStopTimeout(d time.Duration) SubscribeOption {
	return func(c *subscribeConfig) { c.stopTimeout = d }
}

// WithOpen edits the OpenSubscription request directly, for the settings without an option
// (dead-letter topic, redelivery backoff, outstanding bytes).
func WithOpen(edit func(*ferryv1.OpenSubscription)) SubscribeOption {
	return func(c *subscribeConfig) { edit(c.open) }
}

// Subscribe receives the subscription's messages from topics and calls h for each, at most
// the concurrency at once: it acks a message when h returns nil and nacks it when h fails.
// When the stream ends it reconnects with backoff (Ferry redelivers what was not acked).
//
// Subscribe runs until ctx is cancelled, then stops cleanly: no new handler starts, running
// handlers finish and their acks are sent, the stream is half-closed, and Subscribe returns
// nil. It returns an *Error when Ferry refuses the subscription for good (INVALID_ARGUMENT,
// FAILED_PRECONDITION).
func (c *Client) Subscribe(ctx context.Context, subscription string, topics []string, h Handler, opts ...SubscribeOption) error {
	cfg := subscribeConfig{
		open:        &ferryv1.OpenSubscription{Subscription: subscription, Topics: topics},
		concurrency: 16,
		stopTimeout: 10 * time.Second,
	}
	for _, o := range opts {
		o(&cfg)
	}
	if h == nil || cfg.concurrency < 1 {
		return errors.New("ferry: Subscribe needs a handler and a concurrency of at least 1")
	}
	hctx, cancelHandlers := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelHandlers()
	s := &subscriber{c: c, cfg: cfg, h: h, hctx: hctx, cancelHandlers: cancelHandlers,
		sem: make(chan struct{}, cfg.concurrency)}
	b := newBackoff(c.retry)
	for {
		opened, err := s.stream(ctx)
		if ctx.Err() != nil {
			s.waitHandlers()
			return nil
		}
		e := toError(err)
		if e.Code == codes.InvalidArgument || e.Code == codes.FailedPrecondition {
			s.waitHandlers()
			return e
		}
		if opened {
			b.reset()
		}
		wait := b.wait(e.retryDelay())
		c.log.Warn("ferry: subscribe stream ended, reconnecting", "subscription", subscription,
			"code", e.Code.String(), "reason", e.Reason, "message", e.Message, "wait", wait)
		if !sleep(ctx, wait) {
			s.waitHandlers()
			return nil
		}
	}
}

type subscriber struct {
	c              *Client
	cfg            subscribeConfig
	h              Handler
	hctx           context.Context
	cancelHandlers context.CancelFunc
	// sem holds one token per running handler, across streams; a stop takes all of them.
	sem      chan struct{}
	stopOnce sync.Once
}

// waitHandlers waits for running handlers (cancelling their context after the stop timeout)
// and keeps any new one from starting.
func (s *subscriber) waitHandlers() {
	s.stopOnce.Do(func() {
		deadline := time.NewTimer(s.cfg.stopTimeout)
		defer deadline.Stop()
		cancelled := false
		for taken := 0; taken < cap(s.sem); {
			select {
			case s.sem <- struct{}{}:
				taken++
			case <-deadline.C:
				if cancelled {
					s.c.log.Warn("ferry: handlers ignore their cancelled context; stopping without them")
					return
				}
				s.c.log.Warn("ferry: handlers still running at the stop timeout; cancelling their context")
				s.cancelHandlers()
				cancelled = true
				deadline.Reset(time.Second)
			}
		}
	})
}

// stream runs one Subscribe stream until it ends, or until ctx is cancelled and the stream
// is wound down. opened says whether Ferry opened it.
func (s *subscriber) stream(ctx context.Context) (opened bool, err error) {
	// The stream outlives ctx so that the acks of a stop still go out on it.
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	// Until the stream is open, a stop simply drops it.
	stopOpening := context.AfterFunc(ctx, cancel)
	defer stopOpening()
	cl, err := s.c.sub.Subscribe(sctx)
	if err != nil {
		return false, err
	}
	if err := cl.Send(&ferryv1.SubscribeRequest{Request: &ferryv1.SubscribeRequest_Open{
		Open: proto.CloneOf(s.cfg.open)}}); err != nil {
		_, err = cl.Recv() // a failed Send leaves the stream's status to Recv
		return false, err
	}
	first, err := cl.Recv()
	if err != nil {
		return false, err
	}
	if first.GetOpened() == nil {
		return false, status.Error(codes.Internal, "the stream's first message is not `opened`")
	}
	if !stopOpening() {
		return true, nil // stopped while opening: no handler has run
	}
	lease := first.GetOpened().GetLeaseDuration().AsDuration()
	st := &stream{s: s, cl: cl, ctx: sctx, lease: lease,
		outstanding: map[string]struct{}{}, wake: make(chan struct{}, 1),
		ending: make(chan struct{}), flush: make(chan struct{}), sent: make(chan struct{}),
		answered: make(chan struct{}, 1)}
	go st.sendLoop()
	go func() {
		select {
		case <-ctx.Done():
		case <-sctx.Done():
			return
		}
		st.end()
		s.waitHandlers()
		close(st.flush)
		<-st.sent
		t := time.NewTimer(5 * time.Second)
		defer t.Stop()
		for st.requests.Load() > st.answers.Load() {
			select {
			case <-st.answered:
			case <-t.C:
				s.c.log.Warn("ferry: no answer to the last acks before the stop timeout")
				cancel()
				return
			case <-sctx.Done():
				return
			}
		}
		cancel()
	}()
	defer st.end()
	for {
		resp, err := cl.Recv()
		if err != nil {
			if ctx.Err() != nil {
				return true, nil
			}
			return true, err
		}
		switch r := resp.GetResponse().(type) {
		case *ferryv1.SubscribeResponse_Deliveries:
			for _, d := range r.Deliveries.GetDeliveries() {
				st.dispatch(d)
			}
		case *ferryv1.SubscribeResponse_AckResults:
			for _, res := range r.AckResults.GetResults() {
				if res.GetStatus() != ferryv1.AckIdStatus_ACK_ID_STATUS_APPLIED &&
					res.GetStatus() != ferryv1.AckIdStatus_ACK_ID_STATUS_ALREADY_ACKED {
					s.c.log.Warn("ferry: ack, nack or extend not applied", "ack_id", res.GetAckId(),
						"status", res.GetStatus().String())
				}
			}
			st.answer()
		case *ferryv1.SubscribeResponse_Rejected:
			s.c.log.Warn("ferry: request on the stream rejected", "reason", r.Rejected.GetReason(),
				"field", r.Rejected.GetField(), "message", r.Rejected.GetMessage())
			st.answer()
		}
	}
}

// stream is the state of one open Subscribe stream.
type stream struct {
	s     *subscriber
	cl    ferryv1.Subscriber_SubscribeClient
	ctx   context.Context // done once the stream is gone
	lease time.Duration

	mu          sync.Mutex
	acks, nacks []string
	outstanding map[string]struct{} // leased here and not yet acked or nacked

	wake     chan struct{} // acks or nacks are waiting
	ending   chan struct{} // closed when no new handler may start
	endOnce  sync.Once
	flush    chan struct{} // closed to make the sender send the last acks and half-close
	sent     chan struct{} // closed when the sender is done
	answered chan struct{} // an answer came

	requests, answers atomic.Int64 // ack/nack/extend requests sent, and answers received
}

func (st *stream) end() { st.endOnce.Do(func() { close(st.ending) }) }

func (st *stream) answer() {
	st.answers.Add(1)
	select {
	case st.answered <- struct{}{}:
	default:
	}
}

// dispatch runs the handler for d once a concurrency token is free, unless the stream ends
// first (then Ferry delivers d again).
func (st *stream) dispatch(d *ferryv1.Delivery) {
	m := toMessage(d)
	st.mu.Lock()
	st.outstanding[m.AckID] = struct{}{}
	st.mu.Unlock()
	go func() {
		select {
		case st.s.sem <- struct{}{}:
		case <-st.ending:
			return
		}
		defer func() { <-st.s.sem }()
		select {
		case <-st.ending:
			return
		default:
		}
		err := st.s.call(m)
		if err != nil {
			st.s.c.log.Warn("ferry: handler failed, nacking", "event_id", m.EventID,
				"delivery_attempt", m.DeliveryAttempt, "error", err)
		}
		st.settle(m.AckID, err == nil)
	}()
}

func (s *subscriber) call(m *Message) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("ferry: handler panicked: %v", r)
		}
	}()
	return s.h(s.hctx, m)
}

func (st *stream) settle(ackID string, ok bool) {
	st.mu.Lock()
	delete(st.outstanding, ackID)
	if ok {
		st.acks = append(st.acks, ackID)
	} else {
		st.nacks = append(st.nacks, ackID)
	}
	st.mu.Unlock()
	select {
	case st.wake <- struct{}{}:
	default:
	}
}

// sendLoop is the stream's only sender: acks and nacks as handlers settle them, and lease
// extensions for every outstanding message each half lease.
func (st *stream) sendLoop() {
	defer close(st.sent)
	var tick <-chan time.Time
	if st.lease > 0 {
		t := time.NewTicker(st.lease / 2)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-st.wake:
		case <-tick:
			st.mu.Lock()
			ids := make([]string, 0, len(st.outstanding))
			for id := range st.outstanding {
				ids = append(ids, id)
			}
			st.mu.Unlock()
			if st.send(ids, func(ids []string) *ferryv1.SubscribeRequest {
				return &ferryv1.SubscribeRequest{Request: &ferryv1.SubscribeRequest_Extend{
					Extend: &ferryv1.ExtendIds{AckIds: ids, LeaseDuration: durationpb.New(st.lease)}}}
			}) != nil {
				return
			}
		case <-st.flush:
			if st.sendSettled() == nil {
				_ = st.cl.CloseSend()
			}
			return
		case <-st.ctx.Done():
			return
		}
		if st.sendSettled() != nil {
			return
		}
	}
}

func (st *stream) sendSettled() error {
	st.mu.Lock()
	acks, nacks := st.acks, st.nacks
	st.acks, st.nacks = nil, nil
	st.mu.Unlock()
	if err := st.send(acks, func(ids []string) *ferryv1.SubscribeRequest {
		return &ferryv1.SubscribeRequest{Request: &ferryv1.SubscribeRequest_Ack{
			Ack: &ferryv1.AckIds{AckIds: ids}}}
	}); err != nil {
		return err
	}
	var delay *durationpb.Duration
	if st.s.cfg.nackDelay > 0 {
		delay = durationpb.New(st.s.cfg.nackDelay)
	}
	return st.send(nacks, func(ids []string) *ferryv1.SubscribeRequest {
		return &ferryv1.SubscribeRequest{Request: &ferryv1.SubscribeRequest_Nack{
			Nack: &ferryv1.NackIds{AckIds: ids, RedeliveryDelay: delay}}}
	})
}

// maxIDsPerRequest is Ferry's limit of ack ids in one ack, nack or extend request.
const maxIDsPerRequest = 10000

// send sends ids in requests of at most maxIDsPerRequest. An error means the stream is
// gone; the receiver sees why.
func (st *stream) send(ids []string, req func([]string) *ferryv1.SubscribeRequest) error {
	for len(ids) > 0 {
		n := min(len(ids), maxIDsPerRequest)
		st.requests.Add(1)
		if err := st.cl.Send(req(ids[:n])); err != nil {
			return err
		}
		ids = ids[n:]
	}
	return nil
}

func toMessage(d *ferryv1.Delivery) *Message {
	ev := d.GetEvent()
	m := &Message{
		EventID: ev.GetEventId(), Topic: ev.GetTopic(), Key: ev.GetKey(), Payload: ev.GetPayload(),
		Headers: headersFromProto(ev.GetHeaders()), PublishedByFerry: ev.GetPublishedByFerry(),
		Partition: d.GetPartition(), Offset: d.GetOffset(), DeliveryAttempt: d.GetDeliveryAttempt(),
		AckID: d.GetAckId(),
	}
	if ev.GetPublishTime() != nil {
		m.PublishTime = ev.GetPublishTime().AsTime()
	}
	if ev.GetKafkaTime() != nil {
		m.KafkaTime = ev.GetKafkaTime().AsTime()
	}
	return m
}
