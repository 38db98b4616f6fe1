package main

import (
	"io"
	"testing"

	"github.com/fincrypt/fincrypt/fs"
	"github.com/fincrypt/fincrypt/replicate"
)

// TestWrappedEngineKeepsHooks: the mount hands its hooks to the attached
// service it gets back, which the status page and `backup watch` wrap;
// each wrapping must still reach the engine (the engine's own service
// once lacked them, and `fincrypt sync` did not commit open files).
func TestWrappedEngineKeepsHooks(t *testing.T) {
	rep := new(replicate.Replicator)
	svc := &replicationService{rep: rep}
	closed := 0
	inner := wrapEngine(svc, func() error { closed++; return nil })
	for name, cl := range map[string]io.Closer{"the service": svc, "wrapped": inner,
		"wrapped twice": wrapEngine(inner, func() error { closed += 10; return inner.Close() })} {
		if _, ok := cl.(fs.CommitBeforeSyncer); !ok {
			t.Errorf("%s: no CommitBeforeSync", name)
		}
		if _, ok := cl.(fs.UnsavedReporter); !ok {
			t.Errorf("%s: no ReportUnsaved", name)
		}
		if e, ok := cl.(interface{ engine() *replicate.Replicator }); !ok || e.engine() != rep {
			t.Errorf("%s: the engine is not reachable", name)
		}
	}
	if err := wrapEngine(inner, func() error { closed += 10; return inner.Close() }).Close(); err != nil || closed != 11 {
		t.Fatalf("closing the outer wrapper: %v, closes %d (want 11: its own and the inner one)", err, closed)
	}
	if _, ok := wrapEngine(closerFunc(func() error { return nil }), func() error { return nil }).(fs.CommitBeforeSyncer); ok {
		t.Fatal("a wrapper of a service without an engine claims hooks")
	}
}
