// Command publisher publishes COUNT events to TOPIC through the Ferry at FERRY_ADDR: event ids
// ${ID_PREFIX}-${i}, keys k${i%8}, payloads payload-${i}. PUBLISH_MODE=unary (the default)
// publishes one call at a time; PUBLISH_MODE=stream pipelines them on one PublishStream with
// a StreamPublisher. It prints {"published": COUNT} when every event is answered and exits 1
// on an error the client does not retry. TLS, mutual TLS and a token come from the variables
// ferry.WithEnvCredentials reads (FERRY_TLS_CA, FERRY_TLS_CLIENT_CERT, FERRY_TLS_CLIENT_KEY,
// FERRY_TLS_SERVER_NAME, FERRY_TOKEN_FILE).
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/ferry-sidecar/ferry/clients/go/ferry"
)

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	topic := os.Getenv("TOPIC")
	count, err := strconv.Atoi(os.Getenv("COUNT"))
	mode := os.Getenv("PUBLISH_MODE")
	if topic == "" || err != nil || count < 0 || (mode != "" && mode != "unary" && mode != "stream") {
		log.Error("set TOPIC and COUNT (and FERRY_ADDR, ID_PREFIX, PUBLISH_MODE=unary|stream)")
		os.Exit(2)
	}
	prefix := os.Getenv("ID_PREFIX")

	client, err := ferry.NewClient(ferry.WithLogger(log), ferry.WithEnvCredentials())
	if err != nil {
		log.Error("client", "error", err)
		os.Exit(1)
	}
	defer client.Close()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	event := func(i int) ferry.Event {
		ev := ferry.Event{
			Topic:   topic,
			Key:     fmt.Appendf(nil, "k%d", i%8),
			Payload: fmt.Appendf(nil, "payload-%d", i),
		}
		if prefix != "" {
			ev.EventID = fmt.Sprintf("%s-%d", prefix, i)
		}
		return ev
	}
	if mode == "stream" {
		err = publishStream(ctx, client, count, event)
	} else {
		err = publishUnary(ctx, client, count, event)
	}
	if err != nil {
		log.Error("publish failed", "error", err)
		os.Exit(1)
	}
	fmt.Printf("{\"published\": %d}\n", count)
}

func publishUnary(ctx context.Context, client *ferry.Client, count int, event func(int) ferry.Event) error {
	for i := range count {
		ev := event(i)
		if _, err := client.Publish(ctx, ev); err != nil {
			return fmt.Errorf("event %d (%s): %w", i, ev.EventID, err)
		}
	}
	return nil
}

// publishStream sends every event without waiting for answers; a checker takes the outcomes
// in publish order, so memory stays bounded by the publisher's window.
func publishStream(ctx context.Context, client *ferry.Client, count int, event func(int) ferry.Event) error {
	p, err := client.NewStreamPublisher()
	if err != nil {
		return err
	}
	outcomes := make(chan *ferry.Pending[*ferry.Result], ferry.DefaultMaxUnanswered)
	failed := make(chan error, 1)
	go func() {
		defer close(failed)
		i := 0
		for h := range outcomes {
			if _, err := h.Get(ctx); err != nil {
				failed <- fmt.Errorf("event %d: %w", i, err)
				return
			}
			i++
		}
	}()
	for i := range count {
		select {
		case outcomes <- p.Publish(ctx, event(i)):
		case err := <-failed:
			_ = p.Close(ctx)
			return err
		}
	}
	close(outcomes)
	closeCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := p.Close(closeCtx); err != nil {
		return err
	}
	return <-failed // nil once the checker saw every outcome succeed
}
