package replicate

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"github.com/fincrypt/fincrypt/challenge"
	"io"
	"io/fs"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fincrypt/fincrypt/chunkstore"
	ffs "github.com/fincrypt/fincrypt/fs"
	"github.com/fincrypt/fincrypt/mediator"
	"github.com/fincrypt/fincrypt/mediator/testplanet"
	"github.com/fincrypt/fincrypt/meta"
	fnet "github.com/fincrypt/fincrypt/net"
	"github.com/fincrypt/fincrypt/vault"
)

const (
	marker     = "FINCRYPT-PLAINTEXT-MARKER-7c1e"
	secretName = "secret-name-marker-4b2a.txt"
)

var testPassword = []byte("correct horse battery staple")

func fastConfig() Config {
	return Config{
		ScanInterval: 100 * time.Millisecond, FlushAfter: 200 * time.Millisecond,
		RetryMin: 100 * time.Millisecond, RetryMax: 500 * time.Millisecond,
		CheckInterval: time.Second, MaintainInterval: 300 * time.Millisecond, CountInterval: 100 * time.Millisecond,
		SnapshotInterval: 300 * time.Millisecond, ReleaseDelay: time.Hour,
		PieceTimeout: 3 * time.Second, HedgeAfter: time.Second, CallTimeout: 2 * time.Second,
	}
}

// client is a mounted vault with its replicator.
type client struct {
	t    testing.TB
	p    *testplanet.Planet
	v    *vault.Vault
	mnt  string
	m    *ffs.Mounted
	rep  *Replicator
	mc   *mediator.Client
	ctl  *Control
	home string
}

// mediatorAddr is the planet's mediator address, which survives restarts.
func mediatorAddr(p *testplanet.Planet) fnet.Address {
	return p.Mediator.Address()
}

func newVault(t testing.TB, home string) { newVaultChunks(t, home, 64<<10) }

// planetAndVault starts a network of five storage nodes and creates a vault
// to mount on it; it skips the test where FUSE cannot mount.
func planetAndVault(t *testing.T) (*testplanet.Planet, string) {
	return planetWithVault(t, testplanet.Config{StorageNodes: 5})
}

// planetWithVault is planetAndVault for a planet of the given shape.
func planetWithVault(t *testing.T, pc testplanet.Config) (*testplanet.Planet, string) {
	t.Helper()
	if _, err := os.Stat("/dev/fuse"); err != nil || os.Geteuid() != 0 {
		t.Skip("needs /dev/fuse and root")
	}
	p := testplanet.New(t, pc)
	home := filepath.Join(t.TempDir(), "home")
	newVault(t, home)
	return p, home
}

func newVaultChunks(t testing.TB, home string, chunkSize uint32) {
	t.Helper()
	if err := vault.Create(home, testPassword, vault.CreateOptions{KDF: vault.KDFParams{Time: 1, MemoryK: 8 << 10, Threads: 1}, ChunkSize: chunkSize}); err != nil {
		t.Fatal(err)
	}
}

func mount(t testing.TB, p *testplanet.Planet, home string, cfg Config) *client {
	t.Helper()
	v, err := vault.Open(home, testPassword, vault.OpenOptions{Lock: true})
	if err != nil {
		t.Fatal(err)
	}
	id, err := AccountIdentity(v)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := fnet.NewDialer(id, fnet.Config{HandshakeTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	mc, err := mediator.NewClient(id, mediatorAddr(p), tr)
	if err != nil {
		t.Fatal(err)
	}
	if p.Mediator.Peer != nil { // registration belongs to init; a remount may be offline
		if _, err := mc.RegisterAccount(p.Context()); err != nil {
			t.Fatal(err)
		}
	}
	c := &client{t: t, p: p, v: v, mc: mc, home: home, mnt: filepath.Join(t.TempDir(), "mnt")}
	os.MkdirAll(c.mnt, 0o700)
	c.m, err = ffs.Mount(v, c.mnt, ffs.Options{Attach: func(idx *meta.Index, store *chunkstore.Store) (io.Closer, error) {
		c.rep, err = New(v, idx, store, mc, cfg)
		return c.rep, err
	}})
	if err != nil {
		t.Fatal(err)
	}
	c.ctl, err = ServeControl(home, c.rep)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.unmount)
	return c
}

func (c *client) unmount() {
	if c.m == nil {
		return
	}
	c.ctl.Close()
	if err := c.m.Unmount(); err != nil {
		c.t.Errorf("unmount: %v", err)
	}
	c.mc.Close()
	c.v.Close()
	c.m = nil
}

// waitSynced waits until nothing is pending and a snapshot covers the data.
// The bound is generous (the wait ends when synced): under -race on a
// loaded machine 41 MB took over 40 s to upload.
func (c *client) waitSynced(what string) *Status { return c.waitSyncedFor(c.t, what, 3*time.Minute) }

// synced reports whether st shows everything written so far uploaded and
// covered by a stored snapshot. close(2) returns before the mount's
// RELEASE has put a file's writes in the index: until then they are only
// in the open file, counted as unsaved (UnsavedOpenFiles, their chunks in
// PendingChunks), and no snapshot covers them (Restorable is false).
func synced(st *Status) bool {
	return st.Restorable && st.UnsavedOpenFiles == 0 && st.PendingChunks == 0 && st.PendingFiles == 0 &&
		st.SegmentsDurable > 0 && st.LastSnapshot != nil && st.LastSync != nil && st.LastSnapshot.After(*st.LastSync)
}

func (c *client) waitSyncedFor(t testing.TB, what string, timeout time.Duration) *Status {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		st, err := QueryStatus(c.home)
		if err != nil {
			t.Fatal(err)
		}
		if synced(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not synced after %s: %+v", what, timeout, st)
		}
		c.rep.Kick()
		time.Sleep(100 * time.Millisecond)
	}
}

func writeTree(t *testing.T, root string, seed int64) map[string][]byte {
	t.Helper()
	rng := rand.New(rand.NewSource(seed))
	files := map[string][]byte{}
	add := func(name string, data []byte) {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		files[name] = data
	}
	for i := 0; i < 8; i++ {
		b := make([]byte, rng.Intn(5000)+1)
		rng.Read(b)
		add(fmt.Sprintf("docs/small-%d-%d", seed, i), b)
	}
	big := make([]byte, 300<<10+123)
	rng.Read(big)
	add(fmt.Sprintf("media/big-%d.bin", seed), big)
	add(fmt.Sprintf("notes/%d/%s", seed, secretName), []byte(strings.Repeat(marker+"\n", 50)))
	return files
}

func checkTree(t *testing.T, root string, files map[string][]byte) {
	t.Helper()
	for name, want := range files {
		got, err := os.ReadFile(filepath.Join(root, name))
		if err != nil {
			t.Fatalf("read %s: %v", name, err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("%s: %d bytes differ from the %d written", name, len(got), len(want))
		}
	}
}

// dropCaches evicts every durable chunk and makes the kernel forget the
// mount's pages, so the next reads go to the network.
func (c *client) dropCaches(t *testing.T) {
	t.Helper()
	// Degraded segments keep their chunks: wait for the repair. A node
	// stopped mid-upload leaves several, and a loaded machine (or -race)
	// repairs slowly: the bound is generous, the wait ends when done.
	const repairBound = 4 * time.Minute
	start := time.Now()
	deadline := start.Add(repairBound)
	for {
		st, err := QueryStatus(c.home)
		if err != nil {
			t.Fatal(err)
		}
		if st.SegmentsDegraded == 0 && st.SegmentsDurable > 0 {
			t.Logf("dropCaches: no segment degraded after %v (bound %v)", time.Since(start).Round(time.Millisecond), repairBound)
			break
		}
		if time.Now().After(deadline) {
			dumpNetwork(t, c.p, c.rep.idx)
			t.Fatalf("segments still degraded after %v: %+v", repairBound, st)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if _, err := c.rep.EvictAll(); err != nil {
		t.Fatal(err)
	}
	refs := map[meta.ChunkID]bool{}
	c.rep.idx.Walk(meta.Visitor{Chunk: func(_, _ uint64, ref meta.ChunkRef) { refs[ref.ID] = true }})
	n := 0
	c.rep.store.List(func(id meta.ChunkID) error {
		if refs[id] { // superseded chunks wait for the file system's next sync
			n++
		}
		return nil
	}, nil)
	if n != 0 {
		t.Fatalf("%d chunks left in the local store after evicting durable ones", n)
	}
	os.WriteFile("/proc/sys/vm/drop_caches", []byte("1"), 0)
}

func segmentPieces(t *testing.T, idx *meta.Index) []meta.Segment {
	var segs []meta.Segment
	if err := idx.Segments(func(s meta.Segment) error { segs = append(segs, s); return nil }); err != nil {
		t.Fatal(err)
	}
	return segs
}

func TestReplication(t *testing.T) {
	p, home := planetAndVault(t)
	c := mount(t, p, home, fastConfig())
	files := writeTree(t, c.mnt, 1)
	c.waitSynced("first tree")
	top := t // mounts made in subtests outlive them

	t.Run("nothing leaks", func(t *testing.T) {
		classes := map[int64]bool{}
		for _, cl := range SizeClasses {
			classes[int64(cl/DefaultScheme.K)] = true
		}
		pieces := 0
		for i, n := range p.Nodes {
			filepath.WalkDir(n.Dir, func(path string, d fs.DirEntry, err error) error {
				if err != nil || d.IsDir() {
					return nil
				}
				b, _ := os.ReadFile(path)
				if bytes.Contains(b, []byte(marker)) || bytes.Contains(b, []byte(secretName)) {
					t.Errorf("node %d file %s holds plaintext", i, path)
				}
				if strings.HasSuffix(path, ".piece") && len(b) >= 64 {
					pieces++
					if size := int64(binary.BigEndian.Uint64(b[16:])); !classes[size] {
						t.Errorf("node %d piece %s is %d bytes, not a size class share", i, path, size)
					}
				}
				return nil
			})
		}
		if pieces == 0 {
			t.Fatal("no pieces on any node")
		}
		filepath.WalkDir(p.Mediator.Dir, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return nil
			}
			b, _ := os.ReadFile(path)
			if bytes.Contains(b, []byte(marker)) || bytes.Contains(b, []byte(secretName)) {
				t.Errorf("mediator file %s holds plaintext", path)
			}
			return nil
		})
	})

	t.Run("offline writes catch up after a restart", func(t *testing.T) {
		p.StopMediator()
		more := writeTree(t, c.mnt, 2)
		for k, v := range more {
			files[k] = v
		}
		deadline := time.Now().Add(20 * time.Second)
		for {
			st, err := QueryStatus(home)
			if err != nil {
				t.Fatal(err)
			}
			if st.PendingFiles >= len(more) && st.PendingBytes > 0 && len(st.Errors) > 0 && !st.Online {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("offline status shows no pending work or errors: %+v", st)
			}
			time.Sleep(200 * time.Millisecond)
		}
		checkTree(t, c.mnt, files) // the mount works offline
		c.unmount()
		c = mount(top, p, home, fastConfig())
		p.RestartMediator()
		c.waitSynced("after the mediator came back")
		checkTree(t, c.mnt, files)
	})

	t.Run("corrupt piece is skipped", func(t *testing.T) {
		c.dropCaches(t)
		type flipped struct {
			node  int
			piece challenge.PieceID
		}
		var flips []flipped
		for _, s := range segmentPieces(t, c.rep.idx) {
			for i, pc := range s.Pieces {
				if i >= DefaultScheme.K {
					break // corrupt the data pieces, which are tried first
				}
				if n := p.NodeIndex(fnet.NodeID(pc.Node)); n >= 0 && p.HasPiece(n, pc.Piece) {
					p.FlipByte(n, pc.Piece, 10)
					flips = append(flips, flipped{n, pc.Piece})
					break
				}
			}
		}
		if len(flips) == 0 {
			t.Fatal("no piece to corrupt: the test proves nothing")
		}
		checkTree(t, c.mnt, files)
		// Undo the damage (unless the mediator already moved the piece), so
		// that the next subtests lose only what they take away themselves.
		for _, f := range flips {
			if p.HasPiece(f.node, f.piece) {
				p.FlipByte(f.node, f.piece, 10)
			}
		}
	})

	t.Run("read back with nodes down", func(t *testing.T) {
		c.dropCaches(t)
		tolerated := DefaultScheme.N - DefaultScheme.K
		for i := 0; i < tolerated; i++ {
			p.StopNode(i)
		}
		checkTree(t, c.mnt, files)
		n := 0
		c.rep.store.List(func(meta.ChunkID) error { n++; return nil }, nil)
		if n == 0 {
			t.Fatal("reading evicted files cached no chunk: the reads did not go through the fetcher")
		}
		for i := 0; i < tolerated; i++ {
			p.StartNode(i)
		}
	})

	t.Run("restore into a fresh home", func(t *testing.T) {
		acct := fnet.AccountID(c.rep.client.Account())
		c.unmount()
		if err := os.RemoveAll(home); err != nil {
			t.Fatal(err)
		}
		home2 := filepath.Join(t.TempDir(), "restored")
		if _, err := Restore(p.Context(), RestoreOptions{Home: home2, Mediator: mediatorAddr(p), Account: acct, Password: []byte("wrong")}); !errors.Is(err, vault.ErrWrongPassword) {
			t.Fatalf("restore with a wrong password: %v", err)
		}
		if _, err := os.Stat(filepath.Join(home2, vault.KeyFileName)); err == nil {
			t.Fatal("a failed restore left a key file")
		}
		res, err := Restore(p.Context(), RestoreOptions{Home: home2, Mediator: mediatorAddr(p), Account: acct, Password: testPassword})
		if err != nil {
			t.Fatal(err)
		}
		if res.Records == 0 || res.Segments == 0 {
			t.Fatalf("restore result %+v", res)
		}
		c2 := mount(top, p, home2, fastConfig())
		checkTree(t, c2.mnt, files)
		if _, err := Restore(context.Background(), RestoreOptions{Home: home2, Mediator: mediatorAddr(p), Account: acct, Password: testPassword}); !errors.Is(err, ErrHomeNotEmpty) {
			t.Fatalf("restore over a vault: %v", err)
		}
		c2.unmount() // before this subtest's TempDir, which holds home2, is removed
	})
}

// dumpNetwork logs the mediator's view of the nodes and of our segments.
func dumpNetwork(t *testing.T, p *testplanet.Planet, idx *meta.Index) {
	for _, n := range p.Status().Nodes {
		t.Logf("node %s online=%v passed=%d failed=%d used=%d", n.ID[:8], n.Online, n.Passed, n.Failed, n.Used)
	}
	for _, s := range segmentPieces(t, idx) {
		ms := p.Segment(fnet.SegmentID(s.ID))
		if ms == nil {
			t.Logf("segment %s: unknown to the mediator", s.ID)
			continue
		}
		for _, pc := range ms.Pieces {
			t.Logf("segment %s piece %d node %s state %d passed %d failed %d", s.ID, pc.Index, pc.Node.String()[:8], pc.State, pc.Passed, pc.Failed)
		}
	}
}
