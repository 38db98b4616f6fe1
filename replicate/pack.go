package replicate

import (
	"crypto/rand"
	"errors"
	"fmt"

	"github.com/fincrypt/fincrypt/chunkstore"
	"github.com/fincrypt/fincrypt/meta"
)

// chunkGetter appends a sealed chunk to dst (chunkstore.Store.Get).
type chunkGetter func(id meta.ChunkID, dst []byte) ([]byte, error)

// packedSegment is the content of a data segment before padding: the sealed
// chunks back to back, and where each one sits.
type packedSegment struct {
	content []byte
	locs    []meta.Location // offset and length of ids[i]; Segment unset
	ids     []meta.ChunkID
}

// packSegment reads the planned chunks from the store into one buffer, in
// plan order, taking no more than limit bytes. The plan's sizes come from
// an earlier scan of the index and the bytes from the store now, so it
// trusts only the bytes: a chunk deleted since the scan (superseded) is left
// out, and a chunk that no longer fits is left for a later segment (it
// stays pending) with an error in skipped. Only a failed read is an error:
// the segment is not built and its chunks are tried again.
func packSegment(get chunkGetter, chunks []pendingChunk, limit int) (p packedSegment, skipped []error, err error) {
	// The plan is a hint for the first allocation only; the buffer grows
	// if the chunks turn out bigger.
	return packSegmentInto(get, chunks, limit, make([]byte, 0, max(0, min(plannedBytes(chunks), limit))))
}

// plannedBytes is the sealed size the plan expects of chunks.
func plannedBytes(chunks []pendingChunk) int {
	planned := 0
	for _, c := range chunks {
		planned += c.size
	}
	return planned
}

// packSegmentInto is packSegment appending to buf (from its length 0): a
// buffer with room for the padding and the parity pieces after the content
// lets put pad and erasure-code it in place.
func packSegmentInto(get chunkGetter, chunks []pendingChunk, limit int, buf []byte) (p packedSegment, skipped []error, err error) {
	buf = buf[:0]
	p.locs = make([]meta.Location, 0, len(chunks))
	p.ids = make([]meta.ChunkID, 0, len(chunks))
	for _, c := range chunks {
		off := len(buf)
		// Get appends past buf's length only, so buf[:off] stays as it was
		// whatever it returns.
		nb, err := get(c.id, buf)
		if errors.Is(err, chunkstore.ErrNotFound) {
			continue // superseded and deleted since the scan
		}
		if err != nil {
			return packedSegment{}, skipped, fmt.Errorf("reading chunk %s: %w", c.id, err)
		}
		n := len(nb) - off
		if n < 0 || len(nb) > limit {
			skipped = append(skipped, fmt.Errorf("chunk %s is %d bytes (the index implies %d) and does not fit the segment after %d bytes: left for another", c.id, n, c.size, off))
			continue
		}
		buf = nb
		p.locs = append(p.locs, meta.Location{Offset: uint32(off), Length: uint32(n)})
		p.ids = append(p.ids, c.id)
	}
	p.content = buf
	return p, skipped, nil
}

// padToClass returns content padded with random bytes to class bytes: in
// content's own array when it has the room, in a new one otherwise.
func padToClass(content []byte, class int) ([]byte, error) {
	used := len(content)
	if class <= 0 || used > class {
		return nil, fmt.Errorf("segment content of %d bytes does not fit size class %d", used, class)
	}
	var data []byte
	if cap(content) >= class {
		data = content[:class]
	} else {
		data = make([]byte, class)
		copy(data, content)
	}
	if _, err := rand.Read(data[used:]); err != nil {
		return nil, err
	}
	return data, nil
}
