package ferry_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/ferry-sidecar/ferry/clients/go/ferry"
	"github.com/ferry-sidecar/ferry/clients/go/ferryv1"
)

const events = 100

// endToEnd returns the running Ferry's address, its Kafka and a unique run name (topic and
// subscription), or skips the test when FERRY_ADDR and KAFKA_BOOTSTRAP are not set.
func endToEnd(t *testing.T, prefix string) (addr, bootstrap, run string) {
	t.Helper()
	addr, bootstrap = os.Getenv("FERRY_ADDR"), os.Getenv("KAFKA_BOOTSTRAP")
	if addr == "" || bootstrap == "" {
		t.Skip("end-to-end test skipped: set FERRY_ADDR (a running Ferry) and KAFKA_BOOTSTRAP (its Kafka) to run it")
	}
	return addr, bootstrap, prefix + strings.ReplaceAll(uuid.NewString(), "-", "")[:12]
}

// TestEndToEnd publishes 100 keyed events through a real Ferry, receives them with the
// subscriber loop (failing one once, which must come back as delivery attempt 2), and reads
// them from Kafka with a plain Kafka client: every event is there, in order per key.
func TestEndToEnd(t *testing.T) {
	addr, bootstrap, run := endToEnd(t, "go-e2e-")
	topic, subscription := run, run
	client, err := ferry.NewClient(ferry.WithAddr(addr))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	id := func(i int) string { return fmt.Sprintf("%s-%d", run, i) }
	event := func(i int) ferry.Event {
		return ferry.Event{Topic: topic, EventID: id(i), Key: fmt.Appendf(nil, "k%d", i%8),
			Payload: fmt.Appendf(nil, "payload-%d", i), Headers: []ferry.Header{{Key: "i", Value: []byte(strconv.Itoa(i))}}}
	}

	// 0-49 one by one, 50-98 in one batch, 99 acknowledged by Kafka.
	for i := range 50 {
		res, err := client.Publish(ctx, event(i))
		if err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
		if res.EventID != id(i) || res.Duplicate || res.Sequence <= 0 || res.PublishTime.IsZero() || res.Kafka != nil {
			t.Fatalf("publish %d: %+v", i, res)
		}
	}
	var batch []ferry.Event
	for i := 50; i < events-1; i++ {
		batch = append(batch, event(i))
	}
	results, err := client.PublishBatch(ctx, batch)
	if err != nil {
		t.Fatalf("publish batch: %v", err)
	}
	for j, r := range results {
		if r.Err != nil || r.Result.EventID != id(50+j) || r.Result.Duplicate {
			t.Fatalf("batch entry %d: %+v %v", j, r.Result, r.Err)
		}
	}
	last, err := client.Publish(ctx, event(events-1), ferry.WithAckLevel(ferry.AckKafka))
	if err != nil || last.Kafka == nil {
		t.Fatalf("publish with ACK_LEVEL_KAFKA: %+v %v", last, err)
	}
	again, err := client.Publish(ctx, event(0))
	if err != nil || !again.Duplicate {
		t.Fatalf("publishing event 0 again: %+v %v", again, err)
	}

	// Subscribe: ack everything but the first delivery of one chosen event.
	chosen := id(42)
	var mu sync.Mutex
	acked := map[string]bool{}
	var chosenAttempts []int32
	subCtx, stop := context.WithCancel(ctx)
	defer stop()
	handler := func(_ context.Context, m *ferry.Message) error {
		mu.Lock()
		defer mu.Unlock()
		i, err := strconv.Atoi(strings.TrimPrefix(m.EventID, run+"-"))
		if err != nil || m.Topic != topic || !m.PublishedByFerry || m.PublishTime.IsZero() ||
			string(m.Key) != fmt.Sprintf("k%d", i%8) || string(m.Payload) != fmt.Sprintf("payload-%d", i) ||
			len(m.Headers) != 1 || string(m.Headers[0].Value) != strconv.Itoa(i) {
			t.Errorf("unexpected delivery %+v", m)
		}
		if m.EventID == chosen {
			chosenAttempts = append(chosenAttempts, m.DeliveryAttempt)
			if m.DeliveryAttempt == 1 {
				return fmt.Errorf("failing %s once on purpose", chosen)
			}
		}
		acked[m.EventID] = true
		if len(acked) == events {
			stop()
		}
		return nil
	}
	err = client.Subscribe(subCtx, subscription, []string{topic}, handler,
		ferry.WithStartPosition(ferryv1.StartPosition_START_POSITION_EARLIEST),
		ferry.WithNackDelay(200*time.Millisecond))
	if err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
	mu.Lock()
	if len(acked) != events {
		t.Fatalf("acked %d of %d events before the deadline", len(acked), events)
	}
	if len(chosenAttempts) != 2 || chosenAttempts[0] != 1 || chosenAttempts[1] != 2 {
		t.Fatalf("the failed event's delivery attempts: %v, want [1 2]", chosenAttempts)
	}
	mu.Unlock()

	// Kafka itself holds every event, in publish order per key.
	readBack(ctx, t, bootstrap, topic, run, events, func(i int, r *kgo.Record) {
		if i == events-1 && (r.Partition != last.Kafka.Partition || r.Offset != last.Kafka.Offset) {
			t.Errorf("event %d at %d/%d, publish said %d/%d", i, r.Partition, r.Offset,
				last.Kafka.Partition, last.Kafka.Offset)
		}
	})
}

// readBack reads topic from Kafka with a plain Kafka client until it has found events
// run-0 .. run-(n-1), each with payload-<i>, checks that the first copies of each key's
// events come in publish order, and calls each on every event's first copy.
func readBack(ctx context.Context, t *testing.T, bootstrap, topic, run string, n int, each func(i int, r *kgo.Record)) {
	t.Helper()
	kc, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(bootstrap, ",")...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer kc.Close()
	first := map[string]int{}     // event id -> its index, at its first copy in Kafka
	lastOfKey := map[string]int{} // key -> index of the newest event seen for it
	for len(first) < n && ctx.Err() == nil {
		fetches := kc.PollFetches(ctx)
		for _, fe := range fetches.Errors() {
			if ctx.Err() == nil {
				t.Fatalf("kafka fetch: %v", fe.Err)
			}
		}
		fetches.EachRecord(func(r *kgo.Record) {
			var eventID string
			for _, h := range r.Headers {
				if h.Key == "ferry-event-id" {
					eventID = string(h.Value)
				}
			}
			i, err := strconv.Atoi(strings.TrimPrefix(eventID, run+"-"))
			if err != nil || !bytes.Equal(r.Value, fmt.Appendf(nil, "payload-%d", i)) {
				t.Fatalf("unexpected record %q = %q at %d/%d", eventID, r.Value, r.Partition, r.Offset)
			}
			if _, dup := first[eventID]; dup {
				return // an at-least-once duplicate comes after its first copy
			}
			first[eventID] = i
			if prev, ok := lastOfKey[string(r.Key)]; ok && prev > i {
				t.Errorf("key %s: event %d after event %d in Kafka", r.Key, i, prev)
			}
			lastOfKey[string(r.Key)] = i
			if each != nil {
				each(i, r)
			}
		})
	}
	if len(first) != n {
		t.Fatalf("found %d of %d events in Kafka", len(first), n)
	}
}

const streamEvents = 400

// TestStreamEndToEnd publishes 400 keyed events through a StreamPublisher on a real Ferry
// (most one event per request, some in batches, all pipelined) and reads them back from
// Kafka: every event is there, in publish order per key.
func TestStreamEndToEnd(t *testing.T) {
	addr, bootstrap, run := endToEnd(t, "go-stream-")
	topic := run
	client, err := ferry.NewClient(ferry.WithAddr(addr))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	p, err := client.NewStreamPublisher(ferry.WithMaxUnanswered(64))
	if err != nil {
		t.Fatal(err)
	}

	id := func(i int) string { return fmt.Sprintf("%s-%d", run, i) }
	event := func(i int) ferry.Event {
		return ferry.Event{Topic: topic, EventID: id(i), Key: fmt.Appendf(nil, "k%d", i%8),
			Payload: fmt.Appendf(nil, "payload-%d", i)}
	}
	// 0-299 one per request, 300-399 in batches of 10, the last batch acknowledged by Kafka.
	var singles []*ferry.Pending[*ferry.Result]
	for i := range 300 {
		singles = append(singles, p.Publish(ctx, event(i)))
	}
	var batches []*ferry.Pending[[]ferry.BatchResult]
	for start := 300; start < streamEvents; start += 10 {
		var batch []ferry.Event
		for i := start; i < start+10; i++ {
			batch = append(batch, event(i))
		}
		var opts []ferry.PublishOption
		if start+10 == streamEvents {
			opts = append(opts, ferry.WithAckLevel(ferry.AckKafka))
		}
		batches = append(batches, p.PublishBatch(ctx, batch, opts...))
	}
	if err := p.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	var lastSequence int64
	for i, h := range singles {
		res, err := h.Get(ctx)
		if err != nil || res.EventID != id(i) || res.Duplicate || res.PublishTime.IsZero() {
			t.Fatalf("publish %d: %+v %v", i, res, err)
		}
		if res.Sequence <= lastSequence {
			t.Fatalf("publish %d: sequence %d after %d: the stream's order is the log's", i, res.Sequence, lastSequence)
		}
		lastSequence = res.Sequence
	}
	for b, h := range batches {
		results, err := h.Get(ctx)
		if err != nil || len(results) != 10 {
			t.Fatalf("batch %d: %v (%d results)", b, err, len(results))
		}
		for j, r := range results {
			i := 300 + 10*b + j
			if r.Err != nil || r.Result.EventID != id(i) || r.Result.Duplicate || r.Result.Sequence <= lastSequence {
				t.Fatalf("batch %d entry %d: %+v %v", b, j, r.Result, r.Err)
			}
			lastSequence = r.Result.Sequence
			if (b == len(batches)-1) != (r.Result.Kafka != nil) {
				t.Fatalf("batch %d entry %d: Kafka position %+v", b, j, r.Result.Kafka)
			}
		}
	}

	readBack(ctx, t, bootstrap, topic, run, streamEvents, nil)
}
