package chunkstore

import (
	"testing"

	"github.com/fincrypt/fincrypt/meta"
)

// TestAdmitterWindowEdges: the admitter remembers passed chunks up to
// exactly its limits: Window bytes, maxPassed ids, and 2*maxPassed entries
// of its fifo (entries of chunks kept since stay there until they come
// out). One past each limit forgets the oldest.
func TestAdmitterWindowEdges(t *testing.T) {
	const head = 10
	idOf := func(i int) meta.ChunkID {
		var id meta.ChunkID
		id[0], id[1], id[2], id[3] = byte(i), byte(i>>8), byte(i>>16), 0xa5
		return id
	}

	// Window: three chunks of 1000 bytes fill a window of 3000 exactly.
	a := &admitter{rule: Admission{Head: head, Window: 3000}}
	for i := range 3 {
		a.pass(idOf(i), 1000)
	}
	if a.bytes != 3000 || len(a.passed) != 3 {
		t.Fatalf("3000 bytes passed into a window of 3000: %d bytes, %d ids remembered; want all three", a.bytes, len(a.passed))
	}
	if !a.admits(idOf(0), head) {
		t.Fatal("the oldest of a window filled exactly was forgotten")
	}
	a.pass(idOf(3), 1000)
	a.pass(idOf(4), 1000) // 4000 bytes: the oldest left (1) goes
	if a.admits(idOf(1), head) {
		t.Fatal("a chunk pushed past the window was kept")
	}

	// maxPassed ids: exactly maxPassed are all remembered.
	a = &admitter{rule: Admission{Head: head, Window: 1 << 62}}
	for i := range maxPassed {
		a.pass(idOf(i), 1)
	}
	if len(a.passed) != maxPassed {
		t.Fatalf("%d ids passed: %d remembered, want all", maxPassed, len(a.passed))
	}
	a.pass(idOf(maxPassed), 1)
	if len(a.passed) != maxPassed || a.admits(idOf(0), head) || !a.admits(idOf(1), head) {
		t.Fatalf("one id past maxPassed: %d remembered; want %d, the oldest forgotten", len(a.passed), maxPassed)
	}

	// 2*maxPassed fifo entries: chunks passed and kept at once leave
	// their entries in the fifo; the one chunk still remembered stays
	// until the fifo holds one entry more than 2*maxPassed.
	a = &admitter{rule: Admission{Head: head, Window: 1 << 62}}
	a.pass(idOf(0), 1)
	for i := 1; i < 2*maxPassed; i++ {
		a.pass(idOf(i), 1)
		if !a.admits(idOf(i), head) {
			t.Fatalf("chunk %d passed then fetched again at once was not kept", i)
		}
	}
	if len(a.fifo) != 2*maxPassed || len(a.passed) != 1 {
		t.Fatalf("fifo %d entries, %d ids; want %d and 1", len(a.fifo), len(a.passed), 2*maxPassed)
	}
	if _, ok := a.passed[idOf(0)]; !ok {
		t.Fatal("a fifo of exactly 2*maxPassed entries forgot its oldest chunk")
	}
	a.pass(idOf(2*maxPassed), 1)
	if _, ok := a.passed[idOf(0)]; ok {
		t.Fatal("a fifo past 2*maxPassed entries kept its oldest chunk")
	}
	if a.bytes != 1 {
		t.Fatalf("%d bytes remembered, want 1 (the last chunk)", a.bytes)
	}
}

// TestNoteKickSteps: a pack's early writeback is queued once writebackStep
// bytes (page-aligned) were written since the last queued range, exactly
// at the step, and a range starts where the last one ended.
func TestNoteKickSteps(t *testing.T) {
	ps := &packSet{}
	p := &pack{size: writebackStep + 100}
	ps.noteKick(p, false)
	if len(ps.kicks) != 1 || ps.kicks[0].off != 0 || ps.kicks[0].n != writebackStep || p.kicked != writebackStep {
		t.Fatalf("a pack of exactly the step (and a partial page): kicks %+v, kicked %d; want one range [0, %d)", ps.kicks, p.kicked, writebackStep)
	}
	p.size = writebackStep + writebackStep/2
	ps.noteKick(p, false)
	if len(ps.kicks) != 1 || p.kicked != writebackStep {
		t.Fatalf("half a step more: kicks %+v, kicked %d; want nothing queued", ps.kicks, p.kicked)
	}
	p.size = 2 * writebackStep
	ps.noteKick(p, false)
	if len(ps.kicks) != 2 || ps.kicks[1].off != writebackStep || ps.kicks[1].n != writebackStep || p.kicked != 2*writebackStep {
		t.Fatalf("a second step: kicks %+v, kicked %d; want [%d, %d)", ps.kicks, p.kicked, writebackStep, 2*writebackStep)
	}
	p.size += 10
	ps.noteKick(p, true)
	if len(ps.kicks) != 3 || ps.kicks[2].off != 2*writebackStep || ps.kicks[2].n != 10 {
		t.Fatalf("all of a sealed pack: kicks %+v; want the last 10 bytes", ps.kicks)
	}
	ps.noteKick(p, true)
	if len(ps.kicks) != 3 {
		t.Fatalf("nothing more written: kicks %+v", ps.kicks)
	}
}
