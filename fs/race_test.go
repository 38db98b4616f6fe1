//go:build race

package fs_test

func init() { bigDirEntries = 2000 }
