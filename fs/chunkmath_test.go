package fs

import (
	"reflect"
	"testing"
)

func TestSpans(t *testing.T) {
	const cs = 1 << 20
	tests := []struct {
		name   string
		off, n uint64
		want   []span
	}{
		{"empty", 5, 0, nil},
		{"inside first", 10, 100, []span{{0, 10, 100}}},
		{"whole chunk", cs, cs, []span{{1, 0, cs}}},
		{"crosses one boundary", cs - 10, 30, []span{{0, cs - 10, 10}, {1, 0, 20}}},
		{"spans three", cs - 1, cs + 2, []span{{0, cs - 1, 1}, {1, 0, cs}, {2, 0, 1}}},
		{"beyond 4 GiB", 5<<30 + 7, 1, []span{{5 << 10, 7, 1}}},
	}
	for _, tc := range tests {
		if got := spans(tc.off, tc.n, cs); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: spans(%d, %d) = %v, want %v", tc.name, tc.off, tc.n, got, tc.want)
		}
	}
}

func TestPlanTruncate(t *testing.T) {
	const cs = 4096
	tests := []struct {
		size uint64
		want truncPlan
	}{
		{0, truncPlan{dropFrom: 0}},
		{1, truncPlan{dropFrom: 1, keepIdx: 0, keepLen: 1}},
		{cs, truncPlan{dropFrom: 1}},
		{cs + 1, truncPlan{dropFrom: 2, keepIdx: 1, keepLen: 1}},
		{3*cs - 1, truncPlan{dropFrom: 3, keepIdx: 2, keepLen: cs - 1}},
	}
	for _, tc := range tests {
		if got := planTruncate(tc.size, cs); got != tc.want {
			t.Errorf("planTruncate(%d) = %+v, want %+v", tc.size, got, tc.want)
		}
	}
}

func TestChunkLimitAndCount(t *testing.T) {
	const cs = 4096
	for _, tc := range []struct{ idx, size, want uint64 }{
		{0, 0, 0}, {0, 10, 10}, {0, cs, cs}, {0, cs + 1, cs}, {1, cs + 1, 1}, {2, cs + 1, 0}, {1, 10 * cs, cs},
	} {
		if got := chunkLimit(tc.idx, tc.size, cs); got != tc.want {
			t.Errorf("chunkLimit(%d, %d) = %d, want %d", tc.idx, tc.size, got, tc.want)
		}
	}
	for _, tc := range []struct{ size, want uint64 }{{0, 0}, {1, 1}, {cs, 1}, {cs + 1, 2}, {5 << 30, 5 << 30 / cs}} {
		if got := chunkCount(tc.size, cs); got != tc.want {
			t.Errorf("chunkCount(%d) = %d, want %d", tc.size, got, tc.want)
		}
	}
}
