// Command publisher publishes COUNT events to TOPIC through the Ferry at FERRY_ADDR, one call
// at a time: event ids ${ID_PREFIX}-${i}, keys k${i%8}, payloads payload-${i}. It prints
// {"published": COUNT} when done and exits 1 on an error the client does not retry.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	"github.com/ferry-sidecar/ferry/clients/go/ferry"
)

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	topic := os.Getenv("TOPIC")
	count, err := strconv.Atoi(os.Getenv("COUNT"))
	if topic == "" || err != nil || count < 0 {
		log.Error("set TOPIC and COUNT (and FERRY_ADDR, ID_PREFIX)")
		os.Exit(2)
	}
	prefix := os.Getenv("ID_PREFIX")

	client, err := ferry.NewClient(ferry.WithLogger(log))
	if err != nil {
		log.Error("client", "error", err)
		os.Exit(1)
	}
	defer client.Close()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	for i := range count {
		ev := ferry.Event{
			Topic:   topic,
			Key:     fmt.Appendf(nil, "k%d", i%8),
			Payload: fmt.Appendf(nil, "payload-%d", i),
		}
		if prefix != "" {
			ev.EventID = fmt.Sprintf("%s-%d", prefix, i)
		}
		if _, err := client.Publish(ctx, ev); err != nil {
			log.Error("publish failed", "event_id", ev.EventID, "error", err)
			os.Exit(1)
		}
	}
	fmt.Printf("{\"published\": %d}\n", count)
}
