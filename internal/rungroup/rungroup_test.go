package rungroup

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestFirstFailureStopsTheOthers(t *testing.T) {
	g := New(context.Background())
	boom := errors.New("boom")
	stopped := make(chan struct{})
	g.Go("waiter", func(ctx context.Context) error {
		<-ctx.Done()
		close(stopped)
		return ctx.Err() // after the stop: dropped
	})
	g.Go("failer", func(context.Context) error { return boom })
	err := g.Wait()
	if !errors.Is(err, boom) || err.Error() != "failer: boom" {
		t.Fatalf("Wait: %v", err)
	}
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		t.Fatal("the other service was not stopped")
	}
}

func TestCancelStopsCleanly(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	g := New(ctx)
	g.Go("a", func(ctx context.Context) error { <-ctx.Done(); return errors.New("late") })
	cancel()
	if err := g.Wait(); err != nil {
		t.Fatalf("a cancelled group reported %v", err)
	}
}
