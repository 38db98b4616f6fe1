package fault

import (
	"errors"
	"strings"
	"testing"
)

func TestRunContainsPanicsAndRecordsFaults(t *testing.T) {
	b := New(nil)
	err := b.Run("upload", func() error {
		var m map[string]int
		m["x"] = 1 // a nil map: a runtime panic
		return nil
	})
	if !errors.Is(err, ErrPanic) || !strings.Contains(err.Error(), "upload") {
		t.Fatalf("panic came back as %v", err)
	}
	boom := errors.New("mediator unreachable")
	if err := b.Run("upload", func() error { return boom }); err != boom {
		t.Fatalf("error came back as %v", err)
	}
	b.Run("evict", func() error { return nil })
	l := b.List()
	if len(l) != 1 || l[0].Work != "upload" || l[0].Failures != 2 || l[0].Panics != 1 || l[0].Err != boom.Error() {
		t.Fatalf("faults %+v", l)
	}
	since := l[0].Since
	b.Run("upload", func() error { return boom })
	if l := b.List(); l[0].Since != since || l[0].Failures != 3 {
		t.Fatalf("a failure in a row moved since or lost the count: %+v", l)
	}
	if err := b.Run("upload", func() error { return nil }); err != nil {
		t.Fatal(err)
	}
	if l := b.List(); len(l) != 0 {
		t.Fatalf("a success left faults: %+v", l)
	}
	// The hook runs inside the protection.
	b.SetHook(func(work string) {
		if work == "snapshot" {
			panic("injected")
		}
	})
	if err := b.Run("snapshot", func() error { return nil }); !errors.Is(err, ErrPanic) {
		t.Fatalf("injected panic came back as %v", err)
	}
	if err := b.Run("evict", func() error { return nil }); err != nil {
		t.Fatal(err)
	}
	// A nil board contains panics too.
	var nb *Board
	if err := nb.Run("x", func() error { panic("nil board") }); !errors.Is(err, ErrPanic) {
		t.Fatalf("nil board: %v", err)
	}
}
