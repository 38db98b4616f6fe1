package storagenode_test

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/btcsuite/btcd/chaincfg"

	"github.com/fincrypt/fincrypt/challenge"
	realmediator "github.com/fincrypt/fincrypt/mediator"
	fnet "github.com/fincrypt/fincrypt/net"
	"github.com/fincrypt/fincrypt/storagenode"
)

func TestPutGetStatDelete(t *testing.T) {
	t.Parallel()
	med := newMediator(t)
	n := startNode(t, med, nodeOpts{})
	c := dialNode(t, n.addr)
	ctx := ctxT(t)
	for i, size := range []int{1, challenge.LeafSize, 100_000, 1<<20 + 3} {
		data, id := piece(t, uint64(i), size)
		if err := put(ctx, c, med, n.addr.ID, id, data); err != nil {
			t.Fatalf("put %d bytes: %v", size, err)
		}
		if err := put(ctx, c, med, n.addr.ID, id, data); err != nil {
			t.Fatalf("second put of the same piece: %v", err)
		}
		got, err := get(ctx, c, med, n.addr.ID, id, int64(size), 0, 0)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("get %d bytes: %v (equal %v)", size, err, bytes.Equal(got, data))
		}
		for _, r := range [][2]uint64{{0, 1}, {uint64(size) - 1, 1}, {uint64(size) / 3, uint64(size) / 2}, {uint64(size) / 2, 0}} {
			if r[1] == 0 && r[0] == uint64(size) {
				continue
			}
			got, err := get(ctx, c, med, n.addr.ID, id, int64(size), r[0], r[1])
			want := data[r[0]:]
			if r[1] > 0 {
				want = data[r[0] : r[0]+r[1]]
			}
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("range %v of %d: %v", r, size, err)
			}
		}
		if _, err := get(ctx, c, med, n.addr.ID, id, int64(size), uint64(size), 1); !isErr(err, fnet.ErrBadRequest) {
			t.Fatalf("range past the end: %v", err)
		}
		st, err := stat(ctx, c, med, n.addr.ID, id)
		if err != nil || st.Size != uint64(size) || time.Since(st.StoredAt) > time.Minute {
			t.Fatalf("stat: %+v %v", st, err)
		}
		if i%2 == 0 {
			_, err := fnet.CallFor[*fnet.DeleteReply](ctx, c, &fnet.DeleteRequest{Piece: id, Ticket: med.ticket(n.addr.ID, id, fnet.OpDelete, int64(size))})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := stat(ctx, c, med, n.addr.ID, id); !isErr(err, fnet.ErrNotFound) {
				t.Fatalf("stat after delete: %v", err)
			}
			if _, err := get(ctx, c, med, n.addr.ID, id, int64(size), 0, 0); !isErr(err, fnet.ErrNotFound) {
				t.Fatalf("get after delete: %v", err)
			}
		}
	}
	// Bytes that do not match the piece id are refused and not stored.
	data, id := piece(t, 99, 50_000)
	bad := bytes.Clone(data)
	bad[40_000] ^= 1
	if err := put(ctx, c, med, n.addr.ID, id, bad); !isErr(err, fnet.ErrMismatch) {
		t.Fatalf("mismatching put: %v", err)
	}
	if _, err := stat(ctx, c, med, n.addr.ID, id); !isErr(err, fnet.ErrNotFound) {
		t.Fatalf("mismatching piece visible: %v", err)
	}
	// Fewer bytes than announced are refused.
	err := c.Put(ctx, &fnet.PutRequest{Piece: id, Ticket: med.ticket(n.addr.ID, id, fnet.OpPut, int64(len(data)))}, bytes.NewReader(data[:100]))
	if err == nil {
		t.Fatal("short put accepted")
	}
	if _, err := stat(ctx, c, med, n.addr.ID, id); !isErr(err, fnet.ErrNotFound) {
		t.Fatalf("short piece visible: %v", err)
	}
	// Malformed frames get an error and the node keeps serving.
	s, _ := c.OpenStream(ctx)
	s.Write([]byte{fnet.Version, byte(fnet.TypePutRequest), 0, 0, 0, 3, 1, 2, 3})
	s.Close()
	if m, err := fnet.ReadMessage(s); err != nil || m.(*fnet.ErrorReply).Code != fnet.CodeBadRequest {
		t.Fatalf("malformed: %v %v", m, err)
	}
	if err := put(ctx, c, med, n.addr.ID, id, data); err != nil {
		t.Fatalf("put after bad input: %v", err)
	}
	storedFiles(t, n.dir, 3) // the two kept pieces plus the last
}

// storedFiles checks that DIR/pieces holds want piece files and DIR/tmp none.
func storedFiles(t testing.TB, dir string, want int) []string {
	t.Helper()
	var files []string
	filepath.WalkDir(filepath.Join(dir, "pieces"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			files = append(files, p)
		}
		return nil
	})
	if want >= 0 && len(files) != want {
		t.Fatalf("%d piece files, want %d: %v", len(files), want, files)
	}
	return files
}

func tmpFiles(t testing.TB, dir string) int {
	ents, err := os.ReadDir(filepath.Join(dir, "tmp"))
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

func TestTicketsRefused(t *testing.T) {
	t.Parallel()
	med := newMediator(t)
	other := newMediator(t)
	n := startNode(t, med, nodeOpts{})
	c := dialNode(t, n.addr)
	ctx := ctxT(t)
	data, id := piece(t, 1, 10_000)
	if err := put(ctx, c, med, n.addr.ID, id, data); err != nil {
		t.Fatal(err)
	}
	data2, id2 := piece(t, 2, 10_000)
	size := int64(len(data))
	forged := med.ticket(n.addr.ID, id, fnet.OpGet, size)
	forged.Signature[5] ^= 1
	tampered := med.ticket(n.addr.ID, id2, fnet.OpPut, size)
	tampered.Account[0] ^= 1
	expired := fnet.SignTicket(med.id, fnet.Ticket{Node: n.addr.ID, Piece: id, Op: fnet.OpGet, Size: size, Expires: time.Now().Add(-time.Second)})
	cases := []struct {
		name string
		call func() error
	}{
		{"forged get", func() error {
			_, _, err := c.Get(ctx, &fnet.GetRequest{Piece: id, Ticket: forged})
			return err
		}},
		{"expired get", func() error {
			_, _, err := c.Get(ctx, &fnet.GetRequest{Piece: id, Ticket: expired})
			return err
		}},
		{"get with a ticket for another piece", func() error {
			_, _, err := c.Get(ctx, &fnet.GetRequest{Piece: id, Ticket: med.ticket(n.addr.ID, id2, fnet.OpGet, size)})
			return err
		}},
		{"get with a ticket from another mediator", func() error {
			_, _, err := c.Get(ctx, &fnet.GetRequest{Piece: id, Ticket: other.ticket(n.addr.ID, id, fnet.OpGet, size)})
			return err
		}},
		{"get with a ticket for another node", func() error {
			_, _, err := c.Get(ctx, &fnet.GetRequest{Piece: id, Ticket: med.ticket(med.id.ID(), id, fnet.OpGet, size)})
			return err
		}},
		{"get with a put ticket", func() error {
			_, _, err := c.Get(ctx, &fnet.GetRequest{Piece: id, Ticket: med.ticket(n.addr.ID, id, fnet.OpPut, size)})
			return err
		}},
		{"get with the wrong size", func() error {
			_, _, err := c.Get(ctx, &fnet.GetRequest{Piece: id, Ticket: med.ticket(n.addr.ID, id, fnet.OpGet, size+1)})
			return err
		}},
		{"delete with a get ticket", func() error {
			_, err := c.Call(ctx, &fnet.DeleteRequest{Piece: id, Ticket: med.ticket(n.addr.ID, id, fnet.OpGet, size)})
			return err
		}},
		{"delete from another mediator", func() error {
			_, err := c.Call(ctx, &fnet.DeleteRequest{Piece: id, Ticket: other.ticket(n.addr.ID, id, fnet.OpDelete, size)})
			return err
		}},
		{"stat forged", func() error {
			tk := med.ticket(n.addr.ID, id, fnet.OpStat, size)
			tk.Expires = tk.Expires.Add(time.Hour)
			_, err := c.Call(ctx, &fnet.StatRequest{Piece: id, Ticket: tk})
			return err
		}},
		{"put tampered", func() error {
			return c.Put(ctx, &fnet.PutRequest{Piece: id2, Ticket: tampered}, bytes.NewReader(data2))
		}},
		{"put from another mediator", func() error {
			return c.Put(ctx, &fnet.PutRequest{Piece: id2, Ticket: other.ticket(n.addr.ID, id2, fnet.OpPut, size)}, bytes.NewReader(data2))
		}},
		{"put with a ticket for another piece", func() error {
			return c.Put(ctx, &fnet.PutRequest{Piece: id2, Ticket: med.ticket(n.addr.ID, id, fnet.OpPut, size)}, bytes.NewReader(data2))
		}},
		{"challenge from a client", func() error {
			_, err := c.Call(ctx, &fnet.ChallengeRequest{Openings: 1, Pieces: []challenge.PieceID{id}})
			return err
		}},
	}
	for _, tc := range cases {
		if err := tc.call(); !isErr(err, fnet.ErrUnauthorized) {
			t.Errorf("%s: got %v, want unauthorized", tc.name, err)
		}
	}
	// Nothing changed: the piece is intact and the refused put left nothing.
	if got, err := get(ctx, c, med, n.addr.ID, id, size, 0, 0); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("piece after refused requests: %v", err)
	}
	if _, err := stat(ctx, c, med, n.addr.ID, id2); !isErr(err, fnet.ErrNotFound) {
		t.Fatalf("refused put stored something: %v", err)
	}
	storedFiles(t, n.dir, 1)
}

// A ticket is not a bearer token: only its account or its issuer may use
// it, and a piece is deleted only for the account that stored it or by the
// mediator.
func TestTicketsBoundToAccount(t *testing.T) {
	t.Parallel()
	med := newMediator(t)
	n := startNode(t, med, nodeOpts{})
	owner := dialNode(t, n.addr)
	mallory, _ := fnet.GenerateIdentity()
	thief := dialAs(t, mallory, n.addr)
	ctx := ctxT(t)
	data, id := piece(t, 11, 10_000)
	size := int64(len(data))
	if err := put(ctx, owner, med, n.addr.ID, id, data); err != nil {
		t.Fatal(err)
	}
	data2, id2 := piece(t, 12, 10_000)
	mine := fnet.AccountID(mallory.ID())
	cases := []struct {
		name string
		call func() error
	}{
		{"get with the owner's ticket", func() error {
			_, err := get(ctx, thief, med, n.addr.ID, id, size, 0, 0)
			return err
		}},
		{"stat with the owner's ticket", func() error {
			_, err := stat(ctx, thief, med, n.addr.ID, id)
			return err
		}},
		{"put with the owner's ticket", func() error {
			return put(ctx, thief, med, n.addr.ID, id2, data2)
		}},
		{"delete with the owner's ticket", func() error {
			_, err := thief.Call(ctx, &fnet.DeleteRequest{Piece: id, Ticket: med.ticket(n.addr.ID, id, fnet.OpDelete, size)})
			return err
		}},
		{"delete of another account's piece", func() error {
			_, err := thief.Call(ctx, &fnet.DeleteRequest{Piece: id, Ticket: med.ticketFor(mine, n.addr.ID, id, fnet.OpDelete, size)})
			return err
		}},
	}
	for _, tc := range cases {
		if err := tc.call(); !isErr(err, fnet.ErrUnauthorized) {
			t.Errorf("%s: got %v, want unauthorized", tc.name, err)
		}
	}
	if got, err := get(ctx, owner, med, n.addr.ID, id, size, 0, 0); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("piece after refused requests: %v", err)
	}
	if _, err := stat(ctx, owner, med, n.addr.ID, id2); !isErr(err, fnet.ErrNotFound) {
		t.Fatalf("refused put stored something: %v", err)
	}
	// With a ticket of its own, the other account gets its own pieces.
	if err := thief.Put(ctx, &fnet.PutRequest{Piece: id2, Ticket: med.ticketFor(mine, n.addr.ID, id2, fnet.OpPut, size)}, bytes.NewReader(data2)); err != nil {
		t.Fatalf("put under its own ticket: %v", err)
	}
	// The mediator, the tickets' issuer, reads and deletes any account's
	// pieces (repair and release) over its own connection.
	mc := dialWith(t, med.tr, n.addr)
	if got, err := get(ctx, mc, med, n.addr.ID, id, size, 0, 0); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("mediator get: %v", err)
	}
	if _, err := mc.Call(ctx, &fnet.DeleteRequest{Piece: id2, Ticket: med.ticketFor(mine, n.addr.ID, id2, fnet.OpDelete, size)}); err != nil {
		t.Fatalf("mediator delete: %v", err)
	}
	// The owner deletes its own piece.
	if _, err := owner.Call(ctx, &fnet.DeleteRequest{Piece: id, Ticket: med.ticket(n.addr.ID, id, fnet.OpDelete, size)}); err != nil {
		t.Fatalf("owner delete: %v", err)
	}
	storedFiles(t, n.dir, 0)
}

func TestChallengeOverQUIC(t *testing.T) {
	t.Parallel()
	med := newMediator(t)
	n := startNode(t, med, nodeOpts{})
	c := dialNode(t, n.addr)
	ctx := ctxT(t)
	type held struct {
		id   challenge.PieceID
		size int64
	}
	var pieces []held
	for i, size := range []int{3000, 5 * challenge.LeafSize, 333_333} {
		data, id := piece(t, uint64(10+i), size)
		if err := put(ctx, c, med, n.addr.ID, id, data); err != nil {
			t.Fatal(err)
		}
		pieces = append(pieces, held{id, int64(size)})
	}
	_, missing := piece(t, 77, 1000)
	mc := dialWith(t, med.tr, n.addr)
	req := &fnet.ChallengeRequest{Nonce: challenge.Nonce{1, 2, 3}, Openings: 8,
		Pieces: []challenge.PieceID{pieces[0].id, pieces[1].id, pieces[2].id, missing}}
	rep, err := fnet.CallFor[*fnet.ChallengeResponse](ctx, mc, req)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Nonce != req.Nonce || len(rep.Proofs) != 4 {
		t.Fatalf("bad response shape")
	}
	for i, p := range pieces {
		if rep.Proofs[i].Status != fnet.ProofOK {
			t.Fatalf("piece %d: status %d", i, rep.Proofs[i].Status)
		}
		if err := challenge.Verify(p.id, p.size, req.Nonce, 8, rep.Proofs[i].Proof); err != nil {
			t.Fatalf("piece %d: %v", i, err)
		}
	}
	if rep.Proofs[3].Status != fnet.ProofMissing {
		t.Fatalf("missing piece: status %d", rep.Proofs[3].Status)
	}
	// Flip one byte of the single-leaf piece on disk: every nonce opens
	// that leaf, so the next challenge fails verification.
	path := filepath.Join(n.dir, "pieces", pieces[0].id.String()[:2], pieces[0].id.String()+".piece")
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 1)
	f.ReadAt(b, 64+1000)
	b[0] ^= 0x80
	f.WriteAt(b, 64+1000)
	f.Close()
	req.Nonce[0] = 9
	rep, err = fnet.CallFor[*fnet.ChallengeResponse](ctx, mc, req)
	if err != nil {
		t.Fatal(err)
	}
	if err := challenge.Verify(pieces[0].id, pieces[0].size, req.Nonce, 8, rep.Proofs[0].Proof); !errors.Is(err, challenge.ErrProof) {
		t.Fatalf("corrupted piece passed: status %d, %v", rep.Proofs[0].Status, err)
	}
	if err := challenge.Verify(pieces[1].id, pieces[1].size, req.Nonce, 8, rep.Proofs[1].Proof); err != nil {
		t.Fatalf("intact piece failed: %v", err)
	}
	// The mediator can also challenge over the connection the node dialled
	// to register (nodes behind NAT).
	var in *fnet.Conn
	waitFor(t, "the node to register", 10*time.Second, func() bool {
		med.mu.Lock()
		defer med.mu.Unlock()
		in = med.inbound[n.addr.ID]
		return in != nil && med.registered[n.addr.ID] != nil
	})
	req.Nonce[0] = 10
	rep, err = fnet.CallFor[*fnet.ChallengeResponse](ctx, in, req)
	if err != nil {
		t.Fatal(err)
	}
	res, err := fnet.CheckChallenge(req, rep, []int64{pieces[0].size, pieces[1].size, pieces[2].size, 1000})
	if err != nil {
		t.Fatal(err)
	}
	if !errors.Is(res[0], challenge.ErrProof) || res[1] != nil || res[2] != nil || !errors.Is(res[3], fnet.ErrPieceMissing) {
		t.Fatalf("challenge over the inbound connection: %v", res)
	}
}

func TestRegisterRetriesAndHeartbeats(t *testing.T) {
	t.Parallel()
	// Reserve a port and an identity for a mediator that starts later.
	medID, _ := fnet.GenerateIdentity()
	probe, err := fnet.Listen(medID, "127.0.0.1:0", fnet.Config{})
	if err != nil {
		t.Fatal(err)
	}
	hp := probe.Addr().String()
	probe.Close()
	placeholder := newMediator(t) // only for startNode's defaults
	n := startNode(t, placeholder, nodeOpts{mediator: medID.ID().String() + "@" + hp, capacity: "64MiB"})
	// The node retries against nothing (each dial waits for the handshake timeout).
	waitFor(t, "a logged retry", 20*time.Second, func() bool {
		b, _ := os.ReadFile(n.log)
		return strings.Contains(string(b), "mediator unreachable")
	})
	med := newMediatorAt(t, medID, hp)
	waitFor(t, "registration and two heartbeats", 15*time.Second, func() bool {
		_, hb := med.registration(n.addr.ID)
		return hb >= 2
	})
	reg, _ := med.registration(n.addr.ID)
	if reg.Address != n.addr.String() || reg.Capacity != 64<<20 || reg.Price != 1500 ||
		reg.PayoutAddress != payoutAddress(t) || reg.Network != "simnet" {
		t.Fatalf("registration: %+v", reg)
	}
	// A mediator that forgets the node makes it register again.
	med.mu.Lock()
	delete(med.registered, n.addr.ID)
	med.mu.Unlock()
	waitFor(t, "re-registration", 10*time.Second, func() bool {
		r, _ := med.registration(n.addr.ID)
		return r != nil
	})
}

func TestCapacityFull(t *testing.T) {
	t.Parallel()
	med := newMediator(t)
	n := startNode(t, med, nodeOpts{capacity: "64KiB"})
	c := dialNode(t, n.addr)
	ctx := ctxT(t)
	a, ida := piece(t, 1, 40<<10)
	b, idb := piece(t, 2, 30<<10)
	if err := put(ctx, c, med, n.addr.ID, ida, a); err != nil {
		t.Fatal(err)
	}
	err := put(ctx, c, med, n.addr.ID, idb, b)
	if !isErr(err, fnet.ErrFull) || !strings.Contains(err.Error(), "full") {
		t.Fatalf("put over capacity: %v", err)
	}
	if got, err := get(ctx, c, med, n.addr.ID, ida, int64(len(a)), 0, 0); err != nil || !bytes.Equal(got, a) {
		t.Fatalf("held piece after refusal: %v", err)
	}
	if _, err := c.Call(ctx, &fnet.DeleteRequest{Piece: ida, Ticket: med.ticket(n.addr.ID, ida, fnet.OpDelete, int64(len(a)))}); err != nil {
		t.Fatal(err)
	}
	if err := put(ctx, c, med, n.addr.ID, idb, b); err != nil {
		t.Fatalf("put after freeing space: %v", err)
	}
}

// TestDiskFull runs the node on a small tmpfs whose space runs out before
// the configured capacity.
func TestDiskFull(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a small tmpfs")
	}
	t.Parallel()
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
	med := newMediator(t)
	n := startNode(t, med, nodeOpts{dir: dir, capacity: "1GiB"})
	c := dialNode(t, n.addr)
	ctx := ctxT(t)
	var stored [][]byte
	var ids []challenge.PieceID
	var fullErr error
	for i := range 20 {
		data, id := piece(t, uint64(i), 3<<20)
		if err := put(ctx, c, med, n.addr.ID, id, data); err != nil {
			fullErr = err
			break
		}
		stored, ids = append(stored, data), append(ids, id)
	}
	if !isErr(fullErr, fnet.ErrFull) || !strings.Contains(fullErr.Error(), "disk full") {
		t.Fatalf("want a disk-full error, got %v after %d pieces", fullErr, len(stored))
	}
	if len(stored) == 0 {
		t.Fatal("nothing fit")
	}
	if tmpFiles(t, dir) != 0 {
		t.Fatal("failed upload left a temporary file")
	}
	for i, data := range stored {
		if got, err := get(ctx, c, med, n.addr.ID, ids[i], int64(len(data)), 0, 0); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("piece %d lost after disk full: %v", i, err)
		}
	}
	// Freeing space makes uploads work again.
	if _, err := c.Call(ctx, &fnet.DeleteRequest{Piece: ids[0], Ticket: med.ticket(n.addr.ID, ids[0], fnet.OpDelete, int64(len(stored[0])))}); err != nil {
		t.Fatal(err)
	}
	small, sid := piece(t, 1000, 1<<20)
	if err := put(ctx, c, med, n.addr.ID, sid, small); err != nil {
		t.Fatalf("put after freeing space: %v", err)
	}
}

func TestGarbageCollection(t *testing.T) {
	t.Parallel()
	med := newMediator(t)
	med.setPolicy(fnet.NodePolicy{HeartbeatInterval: 100 * time.Millisecond, GracePeriod: 600 * time.Millisecond, GCInterval: 100 * time.Millisecond})
	n := startNode(t, med, nodeOpts{})
	c := dialNode(t, n.addr)
	ctx := ctxT(t)
	live, liveID := piece(t, 1, 5000)
	dead, deadID := piece(t, 2, 5000)
	med.setLive(liveID, true)
	start := time.Now()
	for _, p := range []struct {
		b  []byte
		id challenge.PieceID
	}{{live, liveID}, {dead, deadID}} {
		if err := put(ctx, c, med, n.addr.ID, p.id, p.b); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the dead piece to be collected", 15*time.Second, func() bool {
		_, err := stat(ctx, c, med, n.addr.ID, deadID)
		return isErr(err, fnet.ErrNotFound)
	})
	if el := time.Since(start); el < 600*time.Millisecond {
		t.Fatalf("collected after %v, before the grace period", el)
	}
	if _, err := stat(ctx, c, med, n.addr.ID, liveID); err != nil {
		t.Fatalf("live piece collected: %v", err)
	}
	storedFiles(t, n.dir, 1)
}

// TestKill9DuringUploads kills the node while uploads are in flight,
// restarts it on the same directory, and checks that every acknowledged
// piece is intact, no partial piece is served, and index and files agree.
func TestKill9DuringUploads(t *testing.T) {
	t.Parallel()
	med := newMediator(t)
	dir := t.TempDir()
	type up struct {
		data []byte
		id   challenge.PieceID
	}
	var ups []up
	for i := range 24 {
		data, id := piece(t, uint64(i), 200_000+i*37_000)
		ups = append(ups, up{data, id})
	}
	acked := make([]bool, len(ups))
	// Every third upload stalls halfway until the node has been killed, so
	// that partial uploads are certainly in flight; the others finish
	// (and are acknowledged) before the kill.
	stalls := func(i int) bool { return i%3 == 0 }
	for round := range 2 {
		n := startNode(t, med, nodeOpts{dir: dir})
		c := dialNode(t, n.addr)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		gate := make(chan struct{})
		var mu sync.Mutex
		var finishing, stalled sync.WaitGroup
		for i := round; i < len(ups); i += 2 {
			wg := &finishing
			r := &slowReader{r: bytes.NewReader(ups[i].data), chunk: 16 << 10, stallAt: -1}
			if stalls(i) {
				wg = &stalled
				r.stallAt, r.gate = int64(len(ups[i].data)/2), gate
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				err := c.Put(ctx, &fnet.PutRequest{Piece: ups[i].id, Ticket: med.ticket(n.addr.ID, ups[i].id, fnet.OpPut, int64(len(ups[i].data)))}, r)
				mu.Lock()
				acked[i] = err == nil
				mu.Unlock()
			}()
		}
		finishing.Wait()
		// The stalled uploads' first halves reach the node in their own
		// time (a loaded machine can take long): kill only once one of
		// them is on disk, so that the kill certainly cuts a partial
		// upload (a stalled upload keeps its temporary file until the
		// gate opens, which is after the kill).
		waitFor(t, "a stalled upload's partial file on the node's disk", 30*time.Second, func() bool {
			return tmpFiles(t, dir) > 0
		})
		n.kill()
		if tmpFiles(t, dir) == 0 {
			t.Fatal("no partial upload was on disk when the node was killed")
		}
		close(gate)
		c.Close() // in-flight uploads fail now rather than at the idle timeout
		stalled.Wait()
		cancel()
	}
	for i := range ups {
		if acked[i] == stalls(i) {
			t.Fatalf("upload %d: acknowledged %v, stalled %v", i, acked[i], stalls(i))
		}
	}
	// Partial uploads were under way when the node died.
	n := startNode(t, med, nodeOpts{dir: dir})
	c := dialNode(t, n.addr)
	ctx := ctxT(t)
	if tmpFiles(t, dir) != 0 {
		t.Fatal("temporary files survived the restart")
	}
	held := 0
	for i, u := range ups {
		_, err := stat(ctx, c, med, n.addr.ID, u.id)
		switch {
		case err == nil:
			held++
			got, err := get(ctx, c, med, n.addr.ID, u.id, int64(len(u.data)), 0, 0)
			if err != nil || !bytes.Equal(got, u.data) {
				t.Fatalf("piece %d served wrong bytes: %v", i, err)
			}
		case isErr(err, fnet.ErrNotFound):
			if acked[i] {
				t.Fatalf("acknowledged piece %d lost", i)
			}
		default:
			t.Fatal(err)
		}
	}
	nacked := 0
	for _, a := range acked {
		if a {
			nacked++
		}
	}
	t.Logf("%d acknowledged, %d held after restart, of %d: %v", nacked, held, len(ups), acked)
	if held != nacked {
		t.Fatalf("%d pieces held, %d acknowledged: a partial upload became visible", held, nacked)
	}
	storedFiles(t, dir, held) // no stray piece files beside the index
}

// slowReader hands out chunk bytes per read and, once stallAt bytes are
// read, blocks until gate closes.
type slowReader struct {
	r       *bytes.Reader
	chunk   int
	stallAt int64
	gate    chan struct{}
	n       int64
}

func (s *slowReader) Read(p []byte) (int, error) {
	if s.stallAt >= 0 && s.n >= s.stallAt {
		<-s.gate
	}
	k := min(len(p), s.chunk)
	if s.stallAt >= 0 && s.n < s.stallAt {
		k = min(k, int(s.stallAt-s.n))
	}
	n, err := s.r.Read(p[:k])
	s.n += int64(n)
	return n, err
}

func TestConfigValidate(t *testing.T) {
	med, _ := fnet.GenerateIdentity()
	base := storagenode.Config{Dir: t.TempDir(), Listen: "127.0.0.1:0",
		Mediator: fnet.Address{ID: med.ID(), HostPort: "127.0.0.1:1"}, Capacity: 1 << 30,
		Payout: payoutAddress(t), Network: "simnet"}
	if err := base.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, f := range map[string]func(c *storagenode.Config){
		"mainnet with simnet address": func(c *storagenode.Config) { c.Network = "mainnet" },
		"unknown network":             func(c *storagenode.Config) { c.Network = "moon" },
		"garbage address":             func(c *storagenode.Config) { c.Payout = "not-an-address" },
		"no capacity":                 func(c *storagenode.Config) { c.Capacity = 0 },
		"no mediator":                 func(c *storagenode.Config) { c.Mediator = fnet.Address{} },
		"garbage address, no network": func(c *storagenode.Config) { c.Payout, c.Network = "not-an-address", "" },
		"zero mediator id":            func(c *storagenode.Config) { c.Mediator.ID = fnet.NodeID{} },
	} {
		c := base
		f(&c)
		if err := c.Validate(); !errors.Is(err, storagenode.ErrConfig) {
			t.Errorf("%s: %v", name, err)
		}
	}
	c := base
	c.Mediator.ID = fnet.NodeID{}
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "all zeros") {
		t.Errorf("zero mediator id: %v", err)
	}
}

func TestCLIRejectsBadFlags(t *testing.T) {
	med := newMediator(t)
	out, err := exec.Command(fincryptBin, "storage", "--dir", t.TempDir(), "--listen", "127.0.0.1:0",
		"--mediator", med.tr.Address().String(), "--capacity", "1GiB", "--price", "1",
		"--payout-address", payoutAddress(t), "--network", "mainnet").CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 || !strings.Contains(string(out), "payout address") {
		t.Fatalf("simnet address on mainnet: %v\n%s", err, out)
	}
	// An all-zero mediator id is named as such, not as a missing address.
	zero := strings.Repeat("a", fnet.NodeIDLen) + "@127.0.0.1:7770"
	out, err = exec.Command(fincryptBin, "storage", "--dir", t.TempDir(), "--listen", "127.0.0.1:0",
		"--mediator", zero, "--capacity", "1GiB", "--price", "1", "--network", "simnet",
		"--payout-address", payoutAddress(t)).CombinedOutput()
	assertUsageLine(t, "all-zero mediator id", out, err, "all zeros")
	// Missing flags are named, with exit 2.
	out, err = exec.Command(fincryptBin, "storage", "--dir", t.TempDir(), "--price", "1").CombinedOutput()
	assertUsageLine(t, "storage without flags", out, err, "missing --mediator, --capacity, --payout-address")
	// An upload rate that is no rate is refused.
	out, err = exec.Command(fincryptBin, "storage", "--dir", t.TempDir(), "--listen", "127.0.0.1:0",
		"--mediator", med.tr.Address().String(), "--capacity", "1GiB", "--price", "1", "--network", "simnet",
		"--payout-address", payoutAddress(t), "--min-upload-rate", "0").CombinedOutput()
	assertUsageLine(t, "zero upload rate", out, err, "--min-upload-rate")
	// id without --dir is a usage error on one line.
	out, err = exec.Command(fincryptBin, "id").CombinedOutput()
	assertUsageLine(t, "id without --dir", out, err, "--dir is required")

	dir := t.TempDir()
	out, err = exec.Command(fincryptBin, "id", "--dir", dir).Output()
	if err != nil {
		t.Fatal(err)
	}
	id, err := fnet.LoadIdentity(dir)
	if err != nil || strings.TrimSpace(string(out)) != id.ID().String() {
		t.Fatalf("id prints %q, identity %v", out, err)
	}
}

// A registration the mediator refuses for good (here: another bitcoin
// network) ends the daemon with exit code 2 and one line saying why.
func TestRegistrationRefusedExits(t *testing.T) {
	t.Parallel()
	med := newMediator(t)
	med.mu.Lock()
	med.network = "regtest"
	med.mu.Unlock()
	n := startNode(t, med, nodeOpts{}) // --network simnet
	select {
	case <-n.done:
	case <-time.After(20 * time.Second):
		t.Fatal("node still running after a refused registration")
	}
	if code := n.cmd.ProcessState.ExitCode(); code != 2 {
		t.Fatalf("exit code %d, want 2", code)
	}
	b, _ := os.ReadFile(n.log)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	last := lines[len(lines)-1]
	if !strings.HasPrefix(last, "fincrypt: ") || !strings.Contains(last, "refused the registration") ||
		!strings.Contains(last, `this mediator on "regtest"`) {
		t.Fatalf("last line %q", last)
	}
	if req, _ := med.registration(n.addr.ID); req != nil {
		t.Fatal("registered anyway")
	}
}

// Without --network the node learns the mediator's network: it offers each
// network its payout address is valid on until the mediator accepts one.
func TestRegistrationLearnsNetwork(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		mediator string
		payout   *chaincfg.Params
	}{
		{"regtest", &chaincfg.TestNet3Params}, // a base58 testnet address is also a regtest one
		{"testnet3", &chaincfg.TestNet3Params},
		{"simnet", &chaincfg.SimNetParams},
		{"", &chaincfg.MainNetParams}, // a mediator without payments accepts any
	} {
		med := newMediator(t)
		med.mu.Lock()
		med.network = tc.mediator
		med.mu.Unlock()
		n := startNode(t, med, nodeOpts{network: "-", payout: payoutOn(t, tc.payout)})
		var req *fnet.RegisterRequest
		waitFor(t, "registration on "+tc.mediator, 10*time.Second, func() bool {
			req, _ = med.registration(n.addr.ID)
			return req != nil
		})
		want := tc.mediator
		if want == "" {
			want = "mainnet"
		}
		if req.Network != want {
			t.Errorf("mediator on %q: node registered on %q, want %q", tc.mediator, req.Network, want)
		}
		n.kill()
	}
}

// The reviewer's case against the real mediator: a mainnet node and a
// regtest mediator. Run returns ErrRegistrationRefused instead of retrying
// for ever.
func TestRealMediatorRefusesOtherNetwork(t *testing.T) {
	t.Parallel()
	mident, _ := fnet.GenerateIdentity()
	med, err := realmediator.New(quietLog(), mident, realmediator.Config{Dir: t.TempDir(), Listen: "127.0.0.1:0", Network: "regtest"})
	if err != nil {
		t.Fatal(err)
	}
	mctx, mcancel := context.WithCancel(context.Background())
	mdone := make(chan error, 1)
	go func() { mdone <- med.Run(mctx) }()
	t.Cleanup(func() { mcancel(); <-mdone; med.Close() })

	ident, _ := fnet.GenerateIdentity()
	peer, err := storagenode.New(quietLog(), ident, storagenode.Config{Dir: t.TempDir(), Listen: "127.0.0.1:0",
		Mediator: med.Address(), Capacity: 1 << 30, Payout: payoutOn(t, &chaincfg.MainNetParams), Network: "mainnet",
		RetryMin: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err = peer.Run(ctx)
	if !errors.Is(err, storagenode.ErrRegistrationRefused) || ctx.Err() != nil || !strings.Contains(err.Error(), "regtest") {
		t.Fatalf("Run: %v (ctx %v)", err, ctx.Err())
	}

	// The same node without --network registers if its address is valid
	// on the mediator's network.
	ident2, _ := fnet.GenerateIdentity()
	peer2, err := storagenode.New(quietLog(), ident2, storagenode.Config{Dir: t.TempDir(), Listen: "127.0.0.1:0",
		Mediator: med.Address(), Capacity: 1 << 30, Payout: payoutOn(t, &chaincfg.TestNet3Params)})
	if err != nil {
		t.Fatal(err)
	}
	defer peer2.Close()
	ctx2, cancel2 := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- peer2.Run(ctx2) }()
	waitFor(t, "registration", 10*time.Second, func() bool { _, ok := peer2.Contact.Policy(); return ok })
	cancel2()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// assertUsageLine checks a CLI run that must exit 2 with one line naming
// the problem.
func assertUsageLine(t *testing.T, what string, out []byte, err error, words string) {
	t.Helper()
	var ee *exec.ExitError
	msg := strings.TrimRight(string(out), "\n")
	if !errors.As(err, &ee) || ee.ExitCode() != 2 || strings.Contains(msg, "\n") || !strings.Contains(msg, words) {
		t.Fatalf("%s: %v, want exit 2 and one line with %q:\n%s", what, err, words, out)
	}
}

// TestInProcessPeer runs the node inside the test process (as the devnet
// will), so that the race detector sees the daemon's own goroutines.
func TestInProcessPeer(t *testing.T) {
	t.Parallel()
	med := newMediator(t)
	med.setPolicy(fnet.NodePolicy{HeartbeatInterval: 50 * time.Millisecond, GracePeriod: time.Hour, GCInterval: 50 * time.Millisecond})
	ident, _ := fnet.GenerateIdentity()
	peer, err := storagenode.New(quietLog(), ident, storagenode.Config{Dir: t.TempDir(), Listen: "127.0.0.1:0",
		Mediator: med.tr.Address(), Capacity: 1 << 30, Payout: payoutAddress(t), Network: "simnet", Price: 1})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- peer.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
		peer.Close()
	})
	addr := peer.Address()
	c := dialNode(t, addr)
	var wg sync.WaitGroup
	for i := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			data, id := piece(t, uint64(i), 50_000+i)
			if err := put(ctxT(t), c, med, addr.ID, id, data); err != nil {
				t.Error(err)
				return
			}
			got, err := get(ctxT(t), c, med, addr.ID, id, int64(len(data)), 0, 0)
			if err != nil || !bytes.Equal(got, data) {
				t.Errorf("get: %v", err)
			}
		}()
	}
	wg.Wait()
	waitFor(t, "heartbeats and a GC pass", 10*time.Second, func() bool {
		_, hb := med.registration(addr.ID)
		med.mu.Lock()
		asked := med.liveAsked
		med.mu.Unlock()
		return hb >= 2 && asked >= 1
	})
	if _, n := peer.Store.Usage(); n != 6 {
		t.Fatalf("%d pieces held", n)
	}
}
