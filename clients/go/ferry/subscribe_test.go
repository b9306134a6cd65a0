package ferry

import (
	"context"
	"errors"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/ferry-sidecar/ferry/clients/go/ferryv1"
)

// fakeSubscriber plays two streams: the first delivers e1 and e2, waits for their ack and
// nack, then ends UNAVAILABLE as Ferry does when it drains; the second delivers e2 again and
// answers until the client half-closes.
type fakeSubscriber struct {
	ferryv1.UnimplementedSubscriberServer
	openErr  error
	hangOpen bool // never answer the open

	mu        sync.Mutex
	streams   int
	open      *ferryv1.OpenSubscription
	acks      []string
	nacks     []string
	nackDelay time.Duration
	extends   []string
}

func delivery(ackID, eventID string, attempt int32) *ferryv1.Delivery {
	return &ferryv1.Delivery{AckId: ackID, DeliveryAttempt: attempt, Partition: 3, Offset: 7,
		Event: &ferryv1.ReceivedEvent{EventId: eventID, Topic: "t", Key: []byte{}, PublishedByFerry: true,
			Headers: []*ferryv1.Header{{Key: "h"}}}}
}

func (f *fakeSubscriber) Subscribe(srv ferryv1.Subscriber_SubscribeServer) error {
	req, err := srv.Recv()
	if err != nil {
		return err
	}
	if f.openErr != nil {
		return f.openErr
	}
	if f.hangOpen {
		<-srv.Context().Done()
		return nil
	}
	f.mu.Lock()
	f.streams++
	n := f.streams
	f.open = req.GetOpen()
	f.mu.Unlock()
	lease := time.Second
	if err := srv.Send(&ferryv1.SubscribeResponse{Response: &ferryv1.SubscribeResponse_Opened{
		Opened: &ferryv1.SubscriptionOpened{LeaseDuration: durationpb.New(lease)}}}); err != nil {
		return err
	}
	ds := []*ferryv1.Delivery{delivery("a1", "e1", 1), delivery("a2", "e2", 1)}
	if n > 1 {
		ds = []*ferryv1.Delivery{delivery("b2", "e2", 2)}
	}
	if err := srv.Send(&ferryv1.SubscribeResponse{Response: &ferryv1.SubscribeResponse_Deliveries{
		Deliveries: &ferryv1.Deliveries{Deliveries: ds}}}); err != nil {
		return err
	}
	for {
		req, err := srv.Recv()
		if err == io.EOF {
			<-srv.Context().Done() // like Ferry: the stream stays open
			return nil
		}
		if err != nil {
			return err
		}
		f.mu.Lock()
		var ids []string
		switch r := req.GetRequest().(type) {
		case *ferryv1.SubscribeRequest_Ack:
			ids = r.Ack.GetAckIds()
			f.acks = append(f.acks, ids...)
		case *ferryv1.SubscribeRequest_Nack:
			ids = r.Nack.GetAckIds()
			f.nacks = append(f.nacks, ids...)
			f.nackDelay = r.Nack.GetRedeliveryDelay().AsDuration()
		case *ferryv1.SubscribeRequest_Extend:
			ids = r.Extend.GetAckIds()
			f.extends = append(f.extends, ids...)
		}
		settled := slices.Contains(f.acks, "a1") && slices.Contains(f.nacks, "a2")
		f.mu.Unlock()
		results := &ferryv1.AckResults{}
		for _, id := range ids {
			results.Results = append(results.Results, &ferryv1.AckIdResult{AckId: id,
				Status: ferryv1.AckIdStatus_ACK_ID_STATUS_APPLIED})
		}
		if err := srv.Send(&ferryv1.SubscribeResponse{Response: &ferryv1.SubscribeResponse_AckResults{
			AckResults: results}}); err != nil {
			return err
		}
		if n == 1 && settled {
			return ferryErr(codes.Unavailable, "SHUTTING_DOWN", retryInfo(10*time.Millisecond))
		}
	}
}

// halfCloses counts the client's half-closes of Subscribe streams as the client makes them:
// the server side may see the cancel that follows the last answer instead of the half-close
// queued before it.
type halfCloses struct{ n atomic.Int32 }

func (h *halfCloses) option() Option {
	return WithDialOptions(grpc.WithStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc,
		cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		cs, err := streamer(ctx, desc, cc, method, opts...)
		if err != nil || method != ferryv1.Subscriber_Subscribe_FullMethodName {
			return cs, err
		}
		return &halfCloseRecorder{ClientStream: cs, h: h}, nil
	}))
}

type halfCloseRecorder struct {
	grpc.ClientStream
	h *halfCloses
}

func (r *halfCloseRecorder) CloseSend() error {
	r.h.n.Add(1)
	return r.ClientStream.CloseSend()
}

func TestSubscribeLoop(t *testing.T) {
	fake := &fakeSubscriber{}
	var closes halfCloses
	c := serve(t, nil, fake, closes.option())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var mu sync.Mutex
	var handled []string
	handler := func(_ context.Context, m *Message) error {
		mu.Lock()
		handled = append(handled, m.AckID)
		mu.Unlock()
		if m.Key == nil || m.Payload != nil || m.Headers[0].Value != nil {
			t.Errorf("null versus empty lost: key %v payload %v header %v", m.Key, m.Payload, m.Headers[0].Value)
		}
		switch {
		case m.EventID == "e2" && m.DeliveryAttempt == 1:
			panic("a handler bug") // nacked, and the loop goes on
		case m.EventID == "e2":
			time.Sleep(1200 * time.Millisecond) // past the 1 s lease: extended meanwhile
			cancel()
		}
		return nil
	}
	err := c.Subscribe(ctx, "sub", []string{"t"}, handler, WithNackDelay(250*time.Millisecond),
		WithStartPosition(ferryv1.StartPosition_START_POSITION_EARLIEST))
	if err != nil {
		t.Fatalf("Subscribe: %v", err)
	}
	fake.mu.Lock()
	defer fake.mu.Unlock()
	if fake.streams != 2 {
		t.Fatalf("%d streams, want a reconnect", fake.streams)
	}
	if fake.open.GetSubscription() != "sub" || fake.open.GetTopics()[0] != "t" ||
		fake.open.GetStartPosition() != ferryv1.StartPosition_START_POSITION_EARLIEST {
		t.Fatalf("open %v", fake.open)
	}
	if !slices.Contains(fake.acks, "a1") || !slices.Contains(fake.acks, "b2") || !slices.Equal(fake.nacks, []string{"a2"}) {
		t.Fatalf("acks %v nacks %v", fake.acks, fake.nacks)
	}
	if fake.nackDelay != 250*time.Millisecond {
		t.Fatalf("nack delay %v", fake.nackDelay)
	}
	if !slices.Contains(fake.extends, "b2") {
		t.Fatalf("the slow handler's lease was not extended: %v", fake.extends)
	}
	if n := closes.n.Load(); n != 1 {
		t.Fatalf("%d half-closes, want one: of the last stream, on stop", n)
	}
}

func TestSubscribeSurfacesFailedPrecondition(t *testing.T) {
	fake := &fakeSubscriber{openErr: ferryErr(codes.FailedPrecondition, "SUBSCRIPTION_SETTINGS_CONFLICT")}
	c := serve(t, nil, fake)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := c.Subscribe(ctx, "sub", []string{"t"}, func(context.Context, *Message) error { return nil })
	var fe *Error
	if !errors.As(err, &fe) || fe.Code != codes.FailedPrecondition || fe.Reason != "SUBSCRIPTION_SETTINGS_CONFLICT" {
		t.Fatalf("err = %v", err)
	}
}

func TestSubscribeReconnectsUntilStopped(t *testing.T) {
	fake := &fakeSubscriber{openErr: ferryErr(codes.Unavailable, "SHUTTING_DOWN")}
	c := serve(t, nil, fake)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := c.Subscribe(ctx, "sub", []string{"t"}, func(context.Context, *Message) error { return nil }); err != nil {
		t.Fatalf("err = %v, want nil after a stop", err)
	}
}

func TestSubscribeStopsWhileOpening(t *testing.T) {
	c := serve(t, nil, &fakeSubscriber{hangOpen: true})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := c.Subscribe(ctx, "sub", []string{"t"}, func(context.Context, *Message) error { return nil }); err != nil {
		t.Fatalf("err = %v, want nil after a stop", err)
	}
	if took := time.Since(start); took > time.Second {
		t.Fatalf("stopping took %v", took)
	}
}
