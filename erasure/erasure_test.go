package erasure

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"testing"
)

func randBytes(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func TestEncodeDecodeFromAnyK(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, s := range []Scheme{{2, 5}, {3, 6}, {4, 8}, {1, 3}} {
		c, err := New(s)
		if err != nil {
			t.Fatal(err)
		}
		for _, size := range []int{1, 7, 4096, 10001} {
			seg := randBytes(r, size)
			pieces, err := c.Encode(seg)
			if err != nil {
				t.Fatal(err)
			}
			if len(pieces) != s.N || len(pieces[0]) != c.PieceSize(size) {
				t.Fatalf("%s size %d: %d pieces of %d bytes", s, size, len(pieces), len(pieces[0]))
			}
			// Every subset of exactly K pieces decodes (drop random N-K).
			for trial := 0; trial < 5; trial++ {
				some := make([][]byte, s.N)
				for _, i := range r.Perm(s.N)[:s.K] {
					some[i] = pieces[i]
				}
				got, err := c.Decode(some, size)
				if err != nil {
					t.Fatalf("%s size %d: %v", s, size, err)
				}
				if !bytes.Equal(got, seg) {
					t.Fatalf("%s size %d: decoded segment differs", s, size)
				}
			}
		}
	}
}

func TestRebuildIsByteIdentical(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	c, _ := New(Scheme{2, 5})
	pieces, _ := c.Encode(randBytes(r, 9000))
	orig := make([][]byte, len(pieces))
	for i := range pieces {
		orig[i] = bytes.Clone(pieces[i])
	}
	work := []([]byte){nil, orig[1], nil, nil, orig[4]}
	if err := c.Rebuild(work, []int{0, 3}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(work[0], orig[0]) || !bytes.Equal(work[3], orig[3]) {
		t.Fatal("rebuilt pieces differ from the originals")
	}
	if work[2] != nil {
		t.Fatal("piece 2 was rebuilt though not asked for")
	}
	ok, err := c.Verify(pieces)
	if err != nil || !ok {
		t.Fatalf("verify: %v %v", ok, err)
	}
	pieces[4][0] ^= 1
	if ok, _ := c.Verify(pieces); ok {
		t.Fatal("verify accepted a flipped parity byte")
	}
}

func TestErrors(t *testing.T) {
	c, _ := New(Scheme{2, 5})
	pieces, _ := c.Encode([]byte("hello, world"))
	if _, err := c.Decode([][]byte{pieces[0], nil, nil, nil, nil}, 12); !errors.Is(err, ErrTooFew) {
		t.Fatalf("one of five: %v", err)
	}
	if _, err := c.Decode([][]byte{pieces[0], pieces[1][:2], nil, nil, nil}, 12); !errors.Is(err, ErrPieceSize) {
		t.Fatalf("uneven: %v", err)
	}
	if _, err := c.Decode(pieces[:3], 12); !errors.Is(err, ErrPieceNumber) {
		t.Fatalf("three of five: %v", err)
	}
	if _, err := c.Encode(nil); !errors.Is(err, ErrEmptyInput) {
		t.Fatalf("empty: %v", err)
	}
	for _, bad := range []string{"5/2", "0/3", "2/2", "2", "2/5x", "1/65"} {
		if _, err := ParseScheme(bad); !errors.Is(err, ErrScheme) {
			t.Errorf("ParseScheme(%q): %v", bad, err)
		}
	}
	if s, err := ParseScheme("2/5"); err != nil || s != (Scheme{2, 5}) {
		t.Fatalf("2/5: %v %v", s, err)
	}
	if err := (Scheme{3, 5}).CheckExpansion(); !errors.Is(err, ErrScheme) {
		t.Fatalf("3/5 expansion: %v", err)
	}
	if err := (Scheme{2, 4}).CheckExpansion(); err != nil {
		t.Fatalf("2/4 expansion: %v", err)
	}
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte("segment"), uint8(3))
	f.Fuzz(func(t *testing.T, seg []byte, drop uint8) {
		if len(seg) == 0 {
			return
		}
		c, _ := New(Scheme{2, 5})
		pieces, err := c.Encode(seg)
		if err != nil {
			t.Fatal(err)
		}
		some := make([][]byte, 5)
		copy(some, pieces)
		some[int(drop)%5] = nil
		some[(int(drop)/5+1+int(drop)%5)%5] = nil
		got, err := c.Decode(some, len(seg))
		if err != nil || !bytes.Equal(got, seg) {
			t.Fatalf("decode: %v", err)
		}
	})
}

// TestEncodeInPlace: a segment with room for its pieces is encoded in its
// own array, with the same pieces as a copy gets (stale bytes in the spare
// room, where the zero padding goes, do not leak into them), and
// ReconstructData rebuilds missing data pieces into the room they are given.
func TestEncodeInPlace(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, s := range []Scheme{{2, 4}, {3, 6}, {4, 9}} {
		c, err := New(s)
		if err != nil {
			t.Fatal(err)
		}
		for _, size := range []int{1, 4097, 10001, 69632} {
			seg := randBytes(r, size)
			want, err := c.Encode(seg) // no spare capacity: a copy
			if err != nil {
				t.Fatal(err)
			}
			room := randBytes(r, c.EncodedSize(size)) // stale bytes everywhere
			copy(room, seg)
			in := room[:size]
			got, err := c.Encode(in)
			if err != nil {
				t.Fatal(err)
			}
			if &got[0][0] != &room[0] {
				t.Fatalf("%s size %d: not encoded in place", s, size)
			}
			if !bytes.Equal(in, seg) {
				t.Fatalf("%s size %d: Encode changed the segment's bytes", s, size)
			}
			for i := range want {
				if !bytes.Equal(got[i], want[i]) {
					t.Fatalf("%s size %d: piece %d differs from the copying encode", s, size, i)
				}
			}
			// Lose data pieces (up to N-K), keep the data area as one
			// buffer, and rebuild into it.
			p := c.PieceSize(size)
			data := make([]byte, p*s.K)
			pieces := make([][]byte, s.N)
			lost := r.Perm(s.K)[:min(s.K, s.N-s.K)]
			isLost := map[int]bool{}
			for _, i := range lost {
				isLost[i] = true
			}
			for i := range s.N {
				switch {
				case i < s.K && isLost[i]:
					pieces[i] = data[i*p : i*p : (i+1)*p]
				case i < s.K:
					copy(data[i*p:], want[i])
					pieces[i] = data[i*p : (i+1)*p]
				default:
					pieces[i] = want[i]
				}
			}
			if err := c.ReconstructData(pieces); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(data[:size], seg) {
				t.Fatalf("%s size %d: rebuilt data pieces %v do not give the segment", s, size, lost)
			}
		}
	}
	c, _ := New(Scheme{2, 4})
	if err := c.ReconstructData(make([][]byte, 4)); !errors.Is(err, ErrTooFew) {
		t.Fatalf("ReconstructData of nothing: %v, want ErrTooFew", err)
	}
	if err := c.ReconstructData([][]byte{make([]byte, 3), make([]byte, 4), nil, nil}); !errors.Is(err, ErrPieceSize) {
		t.Fatalf("ReconstructData of unequal pieces: %v, want ErrPieceSize", err)
	}
}
