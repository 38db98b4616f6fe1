package main

import (
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestCPUProfileEnv: FINCRYPT_CPUPROFILE makes a served mount write a Go
// CPU profile (gzip-compressed protobuf, as go tool pprof reads) when it
// stops; unset, nothing is written; a path that cannot be created is an
// error that names the variable.
func TestCPUProfileEnv(t *testing.T) {
	t.Setenv(envCPUProfile, "")
	stop, err := startCPUProfile()
	if err != nil {
		t.Fatalf("unset: %v", err)
	}
	stop()

	path := filepath.Join(t.TempDir(), "cpu.out")
	t.Setenv(envCPUProfile, path)
	stop, err = startCPUProfile()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("the profile's file is not there while profiling: %v", err)
	}
	stop()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("the profile is not gzip-compressed (%d bytes): %v", len(raw), err)
	}
	pb, err := io.ReadAll(zr)
	if err != nil || len(pb) == 0 {
		t.Fatalf("the profile's protobuf: %d bytes, %v", len(pb), err)
	}
	// A second profile can start: the first was stopped.
	stop, err = startCPUProfile()
	if err != nil {
		t.Fatalf("after stop: %v", err)
	}
	stop()

	t.Setenv(envCPUProfile, filepath.Join(t.TempDir(), "missing", "cpu.out"))
	if _, err := startCPUProfile(); err == nil || !strings.Contains(err.Error(), envCPUProfile) {
		t.Fatalf("a profile path in a missing directory: got %v, want an error naming %s", err, envCPUProfile)
	}
}

// TestHeapProfileOnSignal: with FINCRYPT_HEAPPROFILE set, SIGUSR1 makes the
// mount write a heap profile there (gzip-compressed protobuf); once stopped,
// the signal writes nothing.
func TestHeapProfileOnSignal(t *testing.T) {
	path := filepath.Join(t.TempDir(), "heap.out")
	t.Setenv(envHeapProfile, path)
	stop := heapProfileOnSignal()
	if err := syscall.Kill(os.Getpid(), syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	var raw []byte
	for time.Now().Before(deadline) {
		if raw, _ = os.ReadFile(path); len(raw) > 0 {
			if _, err := gzip.NewReader(bytes.NewReader(raw)); err == nil {
				break
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := gzip.NewReader(bytes.NewReader(raw)); err != nil {
		t.Fatalf("no heap profile after SIGUSR1 (%d bytes): %v", len(raw), err)
	}
	stop()
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	signal.Ignore(syscall.SIGUSR1) // the test binary must not die of it now
	defer signal.Reset(syscall.SIGUSR1)
	if err := syscall.Kill(os.Getpid(), syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("a heap profile written after stop: %v", err)
	}
}
