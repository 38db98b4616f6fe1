package fs

import (
	"testing"
	"unsafe"

	gofs "github.com/hanwen/go-fuse/v2/fs"
)

// TestNodeAddsNothingToTheInode: the mount keeps a Node for every inode the
// kernel knows (a million after `find` over a million files), so a Node is
// go-fuse's Inode and nothing more; the file system is reached through the
// root (rootNode). A pointer to it in every Node took a Node from 128 to 144
// bytes (the next size class): 16 MB at a million known inodes.
func TestNodeAddsNothingToTheInode(t *testing.T) {
	if n, in := unsafe.Sizeof(Node{}), unsafe.Sizeof(gofs.Inode{}); n != in {
		t.Fatalf("a Node takes %d bytes, go-fuse's Inode %d", n, in)
	}
}
