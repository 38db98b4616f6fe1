package testplanet_test

import (
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/fincrypt/fincrypt/mediator/testplanet"
)

// With NodeProcesses every node is a process of its own: a segment stored
// and fetched goes to their disks through them, each has used CPU of its
// own, StopNode ends the process, and a stopped node's process has
// written its CPU profile (NodeCPUProfile).
func TestNodeProcesses(t *testing.T) {
	prof := filepath.Join(t.TempDir(), "cpu")
	testplanet.Run(t, testplanet.Config{StorageNodes: 5, NodeProcesses: true, NodeCPUProfile: prof}, func(t *testing.T, p *testplanet.Planet) {
		for _, n := range p.Nodes {
			if n.Peer != nil || n.Pid() == 0 || n.Pid() == os.Getpid() || !n.Running() {
				t.Fatalf("node %d: peer %v, pid %d (the test is %d), running %v", n.Index, n.Peer, n.Pid(), os.Getpid(), n.Running())
			}
		}
		ctx := p.Context()
		data := randomData(7, segSize)
		id, err := p.Client.Store(ctx, p.Scheme(), data)
		if err != nil {
			t.Fatal(err)
		}
		got, err := p.Client.Fetch(ctx, id, len(data))
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("fetch: %v", err)
		}
		held := 0
		for _, pc := range p.Segment(id).Pieces {
			if i := p.NodeIndex(pc.Node); i >= 0 && p.HasPiece(i, pc.ID) {
				held++
			}
		}
		if held != p.Scheme().N {
			t.Fatalf("%d pieces on the nodes' disks, want %d", held, p.Scheme().N)
		}
		for _, n := range p.Nodes {
			ticks, err := testplanet.ProcessCPU(n.Pid())
			if err != nil || ticks <= 0 {
				t.Fatalf("node %d's process: %d ticks of CPU, %v", n.Index, ticks, err)
			}
		}
		pid := p.Nodes[0].Pid()
		p.StopNode(0)
		if p.Nodes[0].Running() || p.Nodes[0].Pid() != 0 {
			t.Fatal("node 0 still running after StopNode")
		}
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Fatalf("node 0's process %d after StopNode: %v, want ESRCH", pid, err)
		}
		// A profile (runtime/pprof's gzipped protocol buffer) of node 0,
		// named after its directory.
		f, err := os.Open(prof + "." + filepath.Base(p.Nodes[0].Dir))
		if err != nil {
			t.Fatalf("node 0's CPU profile: %v", err)
		}
		defer f.Close()
		zr, err := gzip.NewReader(f)
		if err != nil {
			t.Fatalf("node 0's CPU profile: %v", err)
		}
		if n, err := io.Copy(io.Discard, zr); err != nil || n == 0 {
			t.Fatalf("node 0's CPU profile: %d bytes, %v", n, err)
		}
	})
}
