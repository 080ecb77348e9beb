//go:build linux && (amd64 || arm64)

package kommander

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
)

// TestAIODataSyncSyncsFilesConcurrently syncs files from several goroutines at once, as
// the WALs of several nodes in one process do: every call succeeds, through AIO where the
// kernel offers it, and the syncers are reused rather than made per call.
func TestAIODataSyncSyncsFilesConcurrently(t *testing.T) {
	dir := t.TempDir()
	const writers, rounds = 6, 40
	// Earlier tests' WALs may have left idle syncers in the pool, which is the process's.
	aioSyncers.mu.Lock()
	before := len(aioSyncers.free)
	aioSyncers.mu.Unlock()
	var wg sync.WaitGroup
	errs := make(chan error, writers*rounds)
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			f, err := os.Create(filepath.Join(dir, fmt.Sprintf("f%d", w)))
			if err != nil {
				errs <- err
				return
			}
			defer f.Close()
			for i := 0; i < rounds; i++ {
				if _, err := f.Write(make([]byte, 4096)); err != nil {
					errs <- err
					return
				}
				if err := dataSync(f); err != nil {
					errs <- fmt.Errorf("writer %d round %d: %w", w, i, err)
					return
				}
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if aioState.Load() == 2 {
		t.Logf("this kernel refuses AIO fsync: every sync was the plain system call")
		return
	}
	aioSyncers.mu.Lock()
	idle := len(aioSyncers.free)
	aioSyncers.mu.Unlock()
	if idle == 0 || idle > before+writers {
		t.Fatalf("%d idle syncers after %d concurrent writers, %d before them: want between 1 and %d", idle, writers, before, before+writers)
	}
}

// TestAIODataSyncReportsTheFilesError: a sync the file itself refuses fails with the
// kernel's error, as the plain call would, and does not turn AIO off for the other files.
func TestAIODataSyncReportsTheFilesError(t *testing.T) {
	r, w, err := os.Pipe() // a pipe takes no fsync
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	before := aioState.Load()
	if err := dataSync(w); err != syscall.EINVAL {
		t.Fatalf("fdatasync of a pipe: %v, want EINVAL", err)
	}
	if got := aioState.Load(); got != before {
		t.Fatalf("a file's refusal changed the AIO state from %d to %d", before, got)
	}
	f, err := os.Create(filepath.Join(t.TempDir(), "closed"))
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := dataSync(f); err == nil {
		t.Fatal("fdatasync of a closed file succeeded")
	}
	if got := aioState.Load(); got != before {
		t.Fatalf("a closed file changed the AIO state from %d to %d", before, got)
	}
}
