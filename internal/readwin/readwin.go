// Package readwin holds the sizes of a sequential reader's read-ahead
// window, which the file system (fs) keeps and the replication engine's
// segment cache (replicate) must cover: one source for both, so that a
// segment fetched for a reader stays decoded until the reader has taken
// every chunk of it that it will ask for.
package readwin

// Ahead is how many chunks a sequential reader gets loaded ahead, in
// parallel, by the file system.
const Ahead = 4

// KernelKB is the kernel read-ahead the file system sets on its mount, in
// KiB: up to this much of a sequential reader's file is asked for at once,
// as several requests that may arrive in any order.
const KernelKB = 4096

// ReorderChunks is how far out of order, in chunks of cs bytes, a
// sequential reader's requests may arrive and still count as sequential:
// twice the kernel's read-ahead, and never less than twice Ahead. A chunk
// that far behind the furthest one read may still be asked for.
func ReorderChunks(cs uint64) uint64 {
	return max(2*Ahead, 2*KernelKB<<10/cs)
}

// Bytes is the span of a file, in bytes, that a sequential reader with
// chunks of cs bytes may still ask for at any moment: ReorderChunks behind
// its furthest chunk and as far ahead, plus the Ahead chunks loaded past
// it, plus the furthest chunk itself.
func Bytes(cs uint64) uint64 {
	return (2*ReorderChunks(cs) + Ahead + 1) * cs
}
