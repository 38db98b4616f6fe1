package chunkstore

import (
	"sync"

	"github.com/fincrypt/fincrypt/meta"
)

// Admission is which chunks fetched from the network the store keeps
// (docs/FORMAT.md, "Local chunk store": what a read keeps). A chunk read
// by a small or random read, or in the first Head bytes of a sequential
// run through a file, is kept at once. Past Head, a streaming reader's
// chunk is kept only on its second fetch while the store still remembers
// the first: it remembers the ids (not the bytes) of the last Window bytes
// of chunks it passed on without keeping. So streaming through a file once
// neither costs the store's writes nor pushes what is in it out; a file
// streamed again within the window is kept on that read; and a file
// larger than the window (the cache) is never kept past its head, however
// often it is streamed: its second read reaches each chunk after the
// chunks streamed since pushed it out of the window.
type Admission struct {
	// Head is how far into a sequential run chunks are kept at once.
	Head uint64
	// Window is the bytes of passed-on chunks remembered; 0 turns the rule
	// off (every fetched chunk is kept, as without SetAdmission).
	Window uint64
}

// maxPassed bounds the ids remembered (about 50 bytes each), whatever the
// window: 2^17 chunks is 128 GiB of 1 MiB chunks.
const maxPassed = 1 << 17

// admitter applies an Admission. Guarded by its own mutex: fetches of
// several readers decide at once.
type admitter struct {
	mu     sync.Mutex
	rule   Admission
	passed map[meta.ChunkID]passedChunk // id -> its entry in fifo
	fifo   []passedChunk                // oldest first
	bytes  uint64                       // of the chunks in passed
	seq    uint64

	kept, skipped uint64 // stream fetches kept (second reads), passed on
}

type passedChunk struct {
	id  meta.ChunkID
	n   uint64
	seq uint64
}

// SetAdmission sets the rule for keeping fetched chunks; the zero
// Admission keeps every one. What the store remembered is forgotten.
func (s *Store) SetAdmission(a Admission) {
	s.admit.mu.Lock()
	defer s.admit.mu.Unlock()
	s.admit.rule = a
	s.admit.passed, s.admit.fifo, s.admit.bytes = nil, nil, 0
}

// StreamCounts returns how many chunks streaming readers fetched that the
// store passed on without keeping, and how many it kept on their second
// fetch within the window.
func (s *Store) StreamCounts() (passed, kept uint64) {
	s.admit.mu.Lock()
	defer s.admit.mu.Unlock()
	return s.admit.skipped, s.admit.kept
}

// admits reports whether a chunk fetched for a reader runPos bytes into a
// sequential run (0: not streaming) is kept: not streaming, within the
// head, or on its second fetch within the window (which forgets the
// first).
func (a *admitter) admits(id meta.ChunkID, runPos uint64) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.rule.Window == 0 || runPos == 0 || runPos < a.rule.Head {
		return true
	}
	e, ok := a.passed[id]
	if !ok {
		return false
	}
	// The entry left in fifo is skipped when it comes out.
	delete(a.passed, id)
	a.bytes -= e.n
	a.kept++
	return true
}

// pass remembers a chunk of n bytes that was fetched and not kept, and
// forgets the oldest ones past the window.
func (a *admitter) pass(id meta.ChunkID, n int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.skipped++
	if _, ok := a.passed[id]; ok {
		return // two readers fetched it at once
	}
	if a.passed == nil {
		a.passed = map[meta.ChunkID]passedChunk{}
	}
	a.seq++
	e := passedChunk{id: id, n: uint64(n), seq: a.seq}
	a.passed[id] = e
	a.fifo = append(a.fifo, e)
	a.bytes += e.n
	for len(a.fifo) > 0 && (a.bytes > a.rule.Window || len(a.passed) > maxPassed || len(a.fifo) > 2*maxPassed) {
		a.pop()
	}
}

// pop drops the oldest entry of fifo (and its id, if still remembered).
func (a *admitter) pop() {
	e := a.fifo[0]
	a.fifo[0] = passedChunk{}
	a.fifo = a.fifo[1:]
	if cur, ok := a.passed[e.id]; ok && cur.seq == e.seq {
		delete(a.passed, e.id)
		a.bytes -= e.n
	}
	if len(a.fifo) == 0 {
		a.fifo = nil
	}
}
