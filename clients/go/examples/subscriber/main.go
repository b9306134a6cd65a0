// Command subscriber reads TOPIC on subscription SUBSCRIPTION (from the earliest record)
// through the Ferry at FERRY_ADDR and acks every message. Once it has handled EXPECT
// distinct event ids it stops cleanly, prints {"received": EXPECT} and exits 0; it exits 1
// after TIMEOUT_S seconds without that. TLS, mutual TLS and a token come from the variables
// ferry.WithEnvCredentials reads, as for the publisher.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/ferry-sidecar/ferry/clients/go/ferry"
	"github.com/ferry-sidecar/ferry/clients/go/ferryv1"
)

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	topic, subscription := os.Getenv("TOPIC"), os.Getenv("SUBSCRIPTION")
	expect, err1 := strconv.Atoi(os.Getenv("EXPECT"))
	timeoutS, err2 := strconv.ParseFloat(os.Getenv("TIMEOUT_S"), 64)
	if topic == "" || subscription == "" || err1 != nil || err2 != nil {
		log.Error("set TOPIC, SUBSCRIPTION, EXPECT and TIMEOUT_S (and FERRY_ADDR)")
		os.Exit(2)
	}

	client, err := ferry.NewClient(ferry.WithLogger(log), ferry.WithEnvCredentials())
	if err != nil {
		log.Error("client", "error", err)
		os.Exit(1)
	}
	defer client.Close()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, time.Duration(timeoutS*float64(time.Second)))
	defer cancel()

	var mu sync.Mutex
	seen := map[string]bool{}
	handler := func(_ context.Context, m *ferry.Message) error {
		mu.Lock()
		defer mu.Unlock()
		seen[m.EventID] = true
		if len(seen) >= expect {
			cancel() // a clean stop: this ack and the others in flight are still sent
		}
		return nil
	}
	err = client.Subscribe(ctx, subscription, []string{topic}, handler,
		ferry.WithStartPosition(ferryv1.StartPosition_START_POSITION_EARLIEST))
	mu.Lock()
	received := len(seen)
	mu.Unlock()
	if err != nil || received < expect {
		log.Error("subscriber stopped short", "received", received, "expect", expect, "error", err)
		os.Exit(1)
	}
	fmt.Printf("{\"received\": %d}\n", expect)
}
