package fs

// span is the part of one chunk that a byte range covers.
type span struct {
	idx    uint64 // chunk index
	within uint64 // offset inside the chunk
	n      uint64 // bytes
}

// spans cuts [off, off+n) into per-chunk pieces for chunk size cs.
func spans(off, n, cs uint64) []span {
	var out []span
	for n > 0 {
		s := span{idx: off / cs, within: off % cs}
		s.n = min(cs-s.within, n)
		out = append(out, s)
		off += s.n
		n -= s.n
	}
	return out
}

// chunkCount is the number of chunk slots a file of size bytes spans.
func chunkCount(size, cs uint64) uint64 { return (size + cs - 1) / cs }

// truncPlan says what truncating a file to size means for its chunks: chunks
// with index >= dropFrom go; if keepLen > 0, chunk keepIdx keeps only its first
// keepLen bytes.
type truncPlan struct {
	dropFrom uint64
	keepIdx  uint64
	keepLen  uint64
}

func planTruncate(size, cs uint64) truncPlan {
	p := truncPlan{dropFrom: chunkCount(size, cs)}
	if size%cs != 0 {
		p.keepIdx, p.keepLen = size/cs, size%cs
	}
	return p
}

// chunkLimit is how many bytes of chunk idx lie below size.
func chunkLimit(idx, size, cs uint64) uint64 {
	start := idx * cs
	if size <= start {
		return 0
	}
	return min(size-start, cs)
}
