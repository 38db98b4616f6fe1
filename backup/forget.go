package backup

import (
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/fincrypt/fincrypt/meta"
)

// Policy says which snapshots forget keeps: the newest Last, and the
// newest of each of the newest Hourly hours, Daily days, Weekly (ISO)
// weeks and Monthly months that have snapshots (local time). A snapshot
// any rule keeps is kept.
type Policy struct {
	Last, Hourly, Daily, Weekly, Monthly int
}

// Empty reports whether no rule is set.
func (p Policy) Empty() bool {
	return p.Last <= 0 && p.Hourly <= 0 && p.Daily <= 0 && p.Weekly <= 0 && p.Monthly <= 0
}

// ErrNoPolicy means forget was given no rule (it would forget everything).
var ErrNoPolicy = errors.New("give at least one --keep-* rule")

// Apply splits snapshots (any order) into those the policy keeps and
// those it forgets, both oldest first.
func (p Policy) Apply(snaps []Snapshot) (keep, forget []Snapshot) {
	newest := make([]Snapshot, len(snaps))
	copy(newest, snaps)
	// newest first
	for i := 1; i < len(newest); i++ {
		for j := i; j > 0 && newest[j].Time.After(newest[j-1].Time); j-- {
			newest[j], newest[j-1] = newest[j-1], newest[j]
		}
	}
	kept := make([]bool, len(newest))
	rule := func(n int, bucket func(time.Time) string) {
		last := ""
		for i, s := range newest {
			if n <= 0 {
				return
			}
			b := bucket(s.Time.Local())
			if b != last {
				kept[i] = true
				n--
				last = b
			}
		}
	}
	i := 0
	rule(p.Last, func(time.Time) string { i++; return fmt.Sprint(i) })
	rule(p.Hourly, func(t time.Time) string { return t.Format("2006-01-02 15") })
	rule(p.Daily, func(t time.Time) string { return t.Format("2006-01-02") })
	rule(p.Weekly, func(t time.Time) string { y, w := t.ISOWeek(); return fmt.Sprintf("%d-%d", y, w) })
	rule(p.Monthly, func(t time.Time) string { return t.Format("2006-01") })
	for i := len(newest) - 1; i >= 0; i-- {
		if kept[i] {
			keep = append(keep, newest[i])
		} else {
			forget = append(forget, newest[i])
		}
	}
	return keep, forget
}

// ForgetResult is what forget did (or, dry, would do).
type ForgetResult struct {
	Keep, Forget []Snapshot
	Sweep        SweepResult
}

// Forget removes the snapshots the policy does not keep, then sweeps the
// blobs and trees no kept snapshot needs. The snapshot records go first, in
// one durable commit: a crash after it loses nothing kept, and the next
// forget (or Sweep) finishes the sweep. With dry, nothing changes.
func Forget(repo Repo, p Policy, dry bool) (*ForgetResult, error) {
	if p.Empty() {
		return nil, ErrNoPolicy
	}
	all, err := Snapshots(repo.Index)
	if err != nil {
		return nil, err
	}
	res := &ForgetResult{}
	// The rules apply to backups and to versions of the mount apart:
	// --keep-last 3 keeps the three newest of each.
	bySource := map[Source][]Snapshot{}
	for _, s := range all {
		bySource[s.Source] = append(bySource[s.Source], s)
	}
	for _, src := range []Source{SourceBackup, SourceMount} {
		k, f := p.Apply(bySource[src])
		res.Keep = append(res.Keep, k...)
		res.Forget = append(res.Forget, f...)
	}
	byTime := func(l []Snapshot) {
		sort.SliceStable(l, func(i, j int) bool { return l[i].Time.Before(l[j].Time) })
	}
	byTime(res.Keep)
	byTime(res.Forget)
	if dry {
		return res, nil
	}
	unlock := lockIndex(repo.Index)
	defer func() {
		if unlock != nil {
			unlock()
		}
	}()
	if len(res.Forget) > 0 {
		b := repo.Index.NewBatch()
		for _, s := range res.Forget {
			b.DeleteBackupSnapshot(s.ID)
		}
		if err := b.Commit(true); err != nil {
			return res, fmt.Errorf("forgetting snapshots: %w", err)
		}
	}
	unlock()
	unlock = nil
	sw, err := Sweep(repo)
	res.Sweep = sw
	return res, err
}

// SweepResult counts what a sweep removed.
type SweepResult struct {
	Blobs, Trees uint64
	Bytes        uint64 // plaintext bytes of the blobs removed
	// Pins counts the chunks of versions of the mount no kept version
	// names any more, PinBytes their plaintext bytes.
	Pins, PinBytes uint64
}

// Sweep removes every blob and tree that no snapshot needs (left by forget,
// or by a pass that was interrupted before its snapshot): first their
// records, durably, then the blobs' local copies. Blobs already on the
// network leave their segments' live share, and the replication engine
// repacks or releases those segments (replicate maintain). It must not run
// while a pass runs on the same index (its blobs have no snapshot yet): in
// one process Run and Sweep wait for each other; across processes the
// vault's lock keeps them apart.
func Sweep(repo Repo) (SweepResult, error) {
	defer lockIndex(repo.Index)()
	var res SweepResult
	snaps, err := Snapshots(repo.Index)
	if err != nil {
		return res, err
	}
	liveTrees := map[meta.TreeID]struct{}{}
	liveBlobs := map[meta.ChunkID]struct{}{}
	var mark func(id meta.TreeID) error
	mark = func(id meta.TreeID) error {
		if _, ok := liveTrees[id]; ok {
			return nil
		}
		liveTrees[id] = struct{}{}
		t, err := LoadTree(repo.Index, id)
		if err != nil {
			return err
		}
		for _, n := range t.Nodes {
			for _, b := range n.Blobs {
				liveBlobs[b] = struct{}{}
			}
			if n.Type == TypeDir {
				if err := mark(n.Subtree); err != nil {
					return err
				}
			}
		}
		return nil
	}
	for _, s := range snaps {
		if err := mark(s.Tree); err != nil {
			// A snapshot that does not read must not let its blobs go.
			return res, fmt.Errorf("snapshot %s: %w; nothing was swept", s.ID, err)
		}
	}
	b := repo.Index.NewBatch()
	var deadBlobs []meta.ChunkID
	err = repo.Index.Blobs(func(id meta.ChunkID, n uint32) error {
		if _, ok := liveBlobs[id]; !ok {
			deadBlobs = append(deadBlobs, id)
			b.DeleteBlob(id)
			res.Blobs++
			res.Bytes += uint64(n)
		}
		return nil
	})
	// Chunks of versions: the pin goes; the local copy too, unless the
	// file still references the chunk (it is then the file's to drop).
	var deadPins []meta.ChunkID
	var deadPinRefs []meta.Pin
	if err == nil {
		err = repo.Index.Pins(func(id meta.ChunkID, p meta.Pin) error {
			if _, ok := liveBlobs[id]; !ok {
				deadPins = append(deadPins, id)
				deadPinRefs = append(deadPinRefs, p)
				b.DeletePin(id, p)
				res.Pins++
				res.PinBytes += uint64(p.Len)
			}
			return nil
		})
	}
	if err == nil {
		err = repo.Index.Trees(func(id meta.TreeID) error {
			if _, ok := liveTrees[id]; !ok {
				b.DeleteTree(id)
				res.Trees++
			}
			return nil
		})
	}
	if err != nil {
		b.Discard()
		return SweepResult{}, err
	}
	if err := b.Commit(true); err != nil {
		return SweepResult{}, err
	}
	for _, id := range deadBlobs {
		if err := repo.Store.Delete(id); err != nil {
			return res, err
		}
	}
	// A chunk id is sealed once, for one place of one file: once no file
	// references it after the commit above, none ever will again.
	for i, id := range deadPins {
		p := deadPinRefs[i]
		ref, ok, err := repo.Index.GetChunk(p.Ino, p.Index)
		if err != nil {
			return res, err
		}
		if ok && ref.ID == id {
			continue
		}
		if err := repo.Store.Delete(id); err != nil {
			return res, err
		}
	}
	return res, repo.Store.Sync()
}
