package kommander

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
)

// SnapshotStore keeps the snapshot files of a node's partitions (the format is in
// snapshot.go): in a directory, or in memory for tests. A node with a DataDir keeps its
// snapshots in the directory "snapshots" inside it unless Config.SnapshotStore says
// otherwise; a node on a custom Storage needs a SnapshotStore to take or receive
// snapshots. A store belongs to one node at a time.
type SnapshotStore struct {
	fs     walFS
	dir    string
	noSync bool
	seq    atomic.Uint64 // makes temporary names unique
}

// NewDirSnapshotStore returns a store of snapshot files in dir, which it creates if
// needed. Temporary files a crash left behind are removed.
func NewDirSnapshotStore(dir string) (*SnapshotStore, error) {
	return newSnapshotStore(osFS{}, dir, false)
}

// NewMemorySnapshotStore returns a store that keeps snapshots in memory: for tests, where
// it outlives the nodes that use it, as a MemoryStorage does.
func NewMemorySnapshotStore() *SnapshotStore {
	s, _ := newSnapshotStore(newMemFS(), "snapshots", true)
	return s
}

func newSnapshotStore(fs walFS, dir string, noSync bool) (*SnapshotStore, error) {
	if err := fs.MkdirAll(dir); err != nil {
		return nil, fmt.Errorf("kommander: create snapshot directory %s: %w", dir, err)
	}
	s := &SnapshotStore{fs: fs, dir: dir, noSync: noSync}
	names, err := fs.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("kommander: list snapshot directory %s: %w", dir, err)
	}
	for _, n := range names {
		if strings.HasSuffix(n, ".tmp") {
			// An abandoned write or transfer: never renamed, so never durable.
			if err := fs.Remove(filepath.Join(dir, n)); err != nil {
				return nil, fmt.Errorf("kommander: remove abandoned snapshot %s: %w", n, err)
			}
		}
	}
	return s, nil
}

// snapshotRef names one snapshot file in a store.
type snapshotRef struct {
	partition   uint32
	index, term uint64
}

func (r snapshotRef) name() string {
	return fmt.Sprintf("%d-%016x-%016x.snap", r.partition, r.index, r.term)
}

// parseSnapshotName reads a snapshot file's name; ok is false for any other file.
func parseSnapshotName(n string) (r snapshotRef, ok bool) {
	base, found := strings.CutSuffix(n, ".snap")
	parts := strings.Split(base, "-")
	if !found || len(parts) != 3 || len(parts[1]) != 16 || len(parts[2]) != 16 {
		return r, false
	}
	p, err1 := strconv.ParseUint(parts[0], 10, 32)
	i, err2 := strconv.ParseUint(parts[1], 16, 64)
	t, err3 := strconv.ParseUint(parts[2], 16, 64)
	if err1 != nil || err2 != nil || err3 != nil {
		return r, false
	}
	return snapshotRef{partition: uint32(p), index: i, term: t}, true
}

// list returns the partition's snapshots, newest (highest index, then term) first.
func (s *SnapshotStore) list(partition uint32) ([]snapshotRef, error) {
	names, err := s.fs.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("kommander: list snapshots in %s: %w", s.dir, err)
	}
	var refs []snapshotRef
	for _, n := range names {
		if r, ok := parseSnapshotName(n); ok && r.partition == partition {
			refs = append(refs, r)
		}
	}
	slices.SortFunc(refs, func(a, b snapshotRef) int {
		return cmp.Or(cmp.Compare(b.index, a.index), cmp.Compare(b.term, a.term))
	})
	return refs, nil
}

// snapshotFile is an open, checked snapshot file.
type snapshotFile struct {
	ref    snapshotRef
	f      walFile
	layout snapshotLayout
}

// data returns a reader of the state machine's data.
func (f *snapshotFile) data() io.Reader {
	return io.NewSectionReader(f.f, f.layout.dataOff, f.layout.dataLn)
}

// size is the size of the whole file.
func (f *snapshotFile) size() int64 { return f.layout.dataOff + f.layout.dataLn + snapTrailerSize }

func (f *snapshotFile) Close() error { return f.f.Close() }

// open opens and checks a snapshot file. A file that fails its checks is an error that
// wraps ErrSnapshotCorrupt; so is one whose header disagrees with its name.
func (s *SnapshotStore) open(r snapshotRef) (*snapshotFile, error) {
	path := filepath.Join(s.dir, r.name())
	f, err := s.fs.OpenFile(path, os.O_RDONLY)
	if err != nil {
		return nil, fmt.Errorf("kommander: open snapshot %s: %w", path, err)
	}
	size, err := f.Size()
	if err == nil {
		var l snapshotLayout
		if l, err = decodeSnapshot(f, size); err == nil {
			if m := l.meta; m.partition != r.partition || m.index != r.index || m.term != r.term {
				err = fmt.Errorf("%w: the header says partition %d index %d term %d", ErrSnapshotCorrupt, m.partition, m.index, m.term)
			} else {
				return &snapshotFile{ref: r, f: f, layout: l}, nil
			}
		}
	}
	f.Close()
	return nil, fmt.Errorf("kommander: snapshot %s: %w", path, err)
}

// remove deletes a snapshot file.
func (s *SnapshotStore) remove(r snapshotRef) error {
	if err := s.fs.Remove(filepath.Join(s.dir, r.name())); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("kommander: remove snapshot %s: %w", r.name(), err)
	}
	return nil
}

// removeOlder deletes the partition's snapshots older than keep, which is durable.
func (s *SnapshotStore) removeOlder(keep snapshotRef) error {
	refs, err := s.list(keep.partition)
	if err != nil {
		return err
	}
	var errs []error
	for _, r := range refs {
		if r.index < keep.index || (r.index == keep.index && r.term < keep.term) {
			errs = append(errs, s.remove(r))
		}
	}
	return errors.Join(errs...)
}

// snapshotSink is a snapshot file being written: under a temporary name until commit.
type snapshotSink struct {
	s          *SnapshotStore
	ref        snapshotRef
	f          walFile
	tmp, final string
	off        int64
}

// create starts the file of snapshot r.
func (s *SnapshotStore) create(r snapshotRef) (*snapshotSink, error) {
	final := filepath.Join(s.dir, r.name())
	tmp := fmt.Sprintf("%s.%d.tmp", final, s.seq.Add(1))
	f, err := s.fs.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC)
	if err != nil {
		return nil, fmt.Errorf("kommander: create snapshot %s: %w", tmp, err)
	}
	return &snapshotSink{s: s, ref: r, f: f, tmp: tmp, final: final}, nil
}

// Write appends p to the file.
func (k *snapshotSink) Write(p []byte) (int, error) {
	if err := writeFull(k.f, p, k.off); err != nil {
		return 0, fmt.Errorf("kommander: write snapshot %s: %w", k.tmp, err)
	}
	k.off += int64(len(p))
	return len(p), nil
}

// commit makes the file durable under its final name: fsync, rename, directory fsync.
func (k *snapshotSink) commit() error {
	err := error(nil)
	if !k.s.noSync {
		err = k.f.Sync()
	}
	if cerr := k.f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = k.s.fs.Rename(k.tmp, k.final)
	}
	if err == nil && !k.s.noSync {
		err = k.s.fs.SyncDir(k.s.dir)
	}
	if err != nil {
		_ = k.s.fs.Remove(k.tmp)
		return fmt.Errorf("kommander: commit snapshot %s: %w", k.final, err)
	}
	return nil
}

// abort discards the file.
func (k *snapshotSink) abort() {
	_ = k.f.Close()
	_ = k.s.fs.Remove(k.tmp)
}
