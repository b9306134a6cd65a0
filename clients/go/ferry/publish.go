package ferry

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/ferry-sidecar/ferry/clients/go/ferryv1"
)

// Header is one Kafka record header; a nil Value is a null value.
type Header struct {
	Key   string
	Value []byte
}

// Event is one event to publish.
type Event struct {
	Topic string
	// Key is the Kafka record key: nil is a null key, empty and non-nil an empty key. Events
	// with the same key keep their publish order in Kafka.
	Key []byte
	// Payload is the record value: nil is a null value (a tombstone), non-nil empty is empty.
	Payload []byte
	Headers []Header
	// EventID is the idempotency key. When empty the Client assigns a UUIDv7 once, and every
	// retry carries that same id, so a retry never writes the event twice.
	EventID string
}

// Result is an accepted event.
type Result struct {
	EventID  string
	Sequence int64 // Ferry's write-ahead log sequence number
	// Duplicate is true when Ferry already knew the event id: nothing new was written.
	Duplicate   bool
	PublishTime time.Time
	// Kafka is where Kafka stored the event; set only with [AckKafka].
	Kafka *KafkaPosition
}

// KafkaPosition is where Kafka stored a record.
type KafkaPosition struct {
	Partition int32
	Offset    int64
}

// BatchResult is the outcome of one event of a batch: a Result, or an *Error (code
// ALREADY_EXISTS, reason EVENT_ID_CONFLICT) when that event alone was refused.
type BatchResult struct {
	Result *Result
	Err    error
}

// Ack levels: when Ferry answers a publish.
const (
	// AckDurable answers once the event is fsynced in Ferry's write-ahead log (the default).
	AckDurable = ferryv1.AckLevel_ACK_LEVEL_DURABLE
	// AckKafka answers once Kafka stored the event, with its partition and offset.
	AckKafka = ferryv1.AckLevel_ACK_LEVEL_KAFKA
)

// A PublishOption configures one Publish or PublishBatch call.
type PublishOption func(*publishConfig)

type publishConfig struct {
	ackLevel  ferryv1.AckLevel
	kafkaWait time.Duration
}

// WithAckLevel sets when Ferry answers ([AckDurable] or [AckKafka]).
func WithAckLevel(l ferryv1.AckLevel) PublishOption {
	return func(p *publishConfig) { p.ackLevel = l }
}

// WithKafkaWait sets, with [AckKafka], how long Ferry waits for Kafka in one attempt before
// answering DEADLINE_EXCEEDED (the event is still delivered; the Client asks again).
func WithKafkaWait(d time.Duration) PublishOption {
	return func(p *publishConfig) { p.kafkaWait = d }
}

func (p *publishConfig) wait() *durationpb.Duration {
	if p.kafkaWait <= 0 {
		return nil
	}
	return durationpb.New(p.kafkaWait)
}

// Publish publishes one event and returns Ferry's answer, retrying with the same event id
// while [Retryable] says so, within the publish deadline. A final failure is an *Error.
func (c *Client) Publish(ctx context.Context, ev Event, opts ...PublishOption) (*Result, error) {
	var cfg publishConfig
	for _, o := range opts {
		o(&cfg)
	}
	pe, err := toProto(ev)
	if err != nil {
		return nil, err
	}
	req := &ferryv1.PublishRequest{Event: pe, AckLevel: cfg.ackLevel, KafkaWait: cfg.wait()}
	var resp *ferryv1.PublishResponse
	err = c.withRetries(ctx, "publish", func(ctx context.Context) (err error) {
		resp, err = c.pub.Publish(ctx, req)
		return err
	})
	if err != nil {
		return nil, err
	}
	return fromProto(resp.GetResult()), nil
}

// PublishBatch publishes events in one write and returns one BatchResult per event, in
// order, retrying the whole batch with the same event ids like [Client.Publish]. If any
// event is invalid the batch fails with INVALID_ARGUMENT and nothing is written.
func (c *Client) PublishBatch(ctx context.Context, events []Event, opts ...PublishOption) ([]BatchResult, error) {
	var cfg publishConfig
	for _, o := range opts {
		o(&cfg)
	}
	req := &ferryv1.PublishBatchRequest{AckLevel: cfg.ackLevel, KafkaWait: cfg.wait()}
	for _, ev := range events {
		pe, err := toProto(ev)
		if err != nil {
			return nil, err
		}
		req.Events = append(req.Events, pe)
	}
	var resp *ferryv1.PublishBatchResponse
	err := c.withRetries(ctx, "publish batch", func(ctx context.Context) (err error) {
		resp, err = c.pub.PublishBatch(ctx, req)
		return err
	})
	if err != nil {
		return nil, err
	}
	return batchResults(resp.GetEntries(), len(events))
}

// batchResults turns the entries of a batch (or of a stream request) of n events into one
// BatchResult per event.
func batchResults(entries []*ferryv1.PublishBatchEntry, n int) ([]BatchResult, error) {
	out := make([]BatchResult, len(entries))
	for i, e := range entries {
		if f := e.GetError(); f != nil {
			out[i].Err = failureError(f)
		} else {
			out[i].Result = fromProto(e.GetResult())
		}
	}
	if len(out) != n {
		return out, fmt.Errorf("ferry: %d results for %d events", len(out), n)
	}
	return out, nil
}

// withRetries runs call until it succeeds, fails for good, or the deadline passes; each
// attempt gets the attempt timeout. The error is the last attempt's *Error.
func (c *Client) withRetries(ctx context.Context, what string, call func(context.Context) error) error {
	if c.retry.deadline > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.retry.deadline)
		defer cancel()
	}
	b := newBackoff(c.retry)
	for attempt := 1; ; attempt++ {
		actx, cancel := ctx, context.CancelFunc(func() {})
		if c.retry.attemptTimeout > 0 {
			actx, cancel = context.WithTimeout(ctx, c.retry.attemptTimeout)
		}
		err := call(actx)
		cancel()
		if err == nil {
			return nil
		}
		e := toError(err)
		if !Retryable(ctx, e) {
			return e
		}
		wait := b.wait(e.retryDelay())
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < wait {
			c.log.Warn("ferry: giving up, the deadline comes before the next attempt",
				"call", what, "attempt", attempt, "code", e.Code.String(), "reason", e.Reason)
			return e
		}
		c.log.Info("ferry: retrying", "call", what, "attempt", attempt, "code", e.Code.String(),
			"reason", e.Reason, "wait", wait)
		if !sleep(ctx, wait) {
			return e
		}
	}
}

func toProto(ev Event) (*ferryv1.Event, error) {
	id := ev.EventID
	if id == "" {
		u, err := uuid.NewV7()
		if err != nil {
			return nil, fmt.Errorf("ferry: event id: %w", err)
		}
		id = u.String()
	}
	pe := &ferryv1.Event{Topic: ev.Topic, Key: ev.Key, Payload: ev.Payload, EventId: id}
	for _, h := range ev.Headers {
		pe.Headers = append(pe.Headers, &ferryv1.Header{Key: h.Key, Value: h.Value})
	}
	return pe, nil
}

func fromProto(r *ferryv1.PublishResult) *Result {
	out := &Result{EventID: r.GetEventId(), Sequence: r.GetSequence(), Duplicate: r.GetDuplicate()}
	if r.GetPublishTime() != nil {
		out.PublishTime = r.GetPublishTime().AsTime()
	}
	if p := r.GetKafkaPosition(); p != nil {
		out.Kafka = &KafkaPosition{Partition: p.GetPartition(), Offset: p.GetOffset()}
	}
	return out
}

func headersFromProto(hs []*ferryv1.Header) []Header {
	out := make([]Header, len(hs))
	for i, h := range hs {
		out[i] = Header{Key: h.GetKey(), Value: h.GetValue()}
	}
	return out
}
