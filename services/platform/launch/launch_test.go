package launch

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"testing"
	"time"
)

func TestReloadOnHangup(t *testing.T) {
	// Catch SIGHUP in the test too: one sent before ReloadOnHangup installs its handler would
	// otherwise end the test process.
	guard := make(chan os.Signal, 16)
	signal.Notify(guard, syscall.SIGHUP)
	defer signal.Stop(guard)
	ctx, cancel := context.WithCancel(context.Background())
	calls := make(chan struct{}, 2)
	done := make(chan struct{})
	go func() {
		defer close(done)
		ReloadOnHangup(ctx, slog.New(slog.DiscardHandler), "test", func() error {
			calls <- struct{}{}
			return errors.New("invalid file: keep the old one")
		})
	}()
	deadline := time.After(10 * time.Second)
	for got := 0; got < 2; {
		if err := syscall.Kill(syscall.Getpid(), syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		select {
		case <-calls:
			got++
		case <-time.After(100 * time.Millisecond): // the handler may not be installed yet
		case <-deadline:
			t.Fatalf("reload called %d times after SIGHUPs, want 2", got)
		}
	}
	cancel()
	<-done
}
