package kommander

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// ErrDirLocked is wrapped by the error of OpenWAL (and so of NewNode) when another process
// holds the data directory: two processes writing one WAL would cut each other's frames
// as torn tails and destroy the log.
var ErrDirLocked = errors.New("kommander: data directory in use by another process")

// lockFileName is the file in a data directory whose lock marks the directory as in use.
// It holds a line naming the holder, for the error a second process reports.
const lockFileName = "LOCK"

// dirLock is a held lock on a data directory. The operating system releases it when the
// process ends, however it ends, so a crash never leaves a directory locked.
type dirLock struct {
	f *os.File
}

// lockDir locks dir for this process, creating dir and its lock file when needed. It
// fails at once, wrapping ErrDirLocked, when another process (or another open WAL in this
// process) holds the lock; the error names the directory and what the holder wrote.
func lockDir(dir string) (*dirLock, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("kommander: create data directory %s: %w", dir, err)
	}
	path := filepath.Join(dir, lockFileName)
	f, err := openLockFile(path)
	if err != nil {
		if errors.Is(err, errLockHeld) {
			return nil, lockedError(dir, path)
		}
		return nil, fmt.Errorf("kommander: open lock file %s: %w", path, err)
	}
	if err := tryLock(f); err != nil {
		_ = f.Close()
		if errors.Is(err, errLockHeld) {
			return nil, lockedError(dir, path)
		}
		return nil, fmt.Errorf("kommander: lock %s: %w", path, err)
	}
	// Who holds it, for the error of the next process that tries. Best effort: the lock,
	// not this line, is what keeps a second process out.
	host, _ := os.Hostname()
	holder := fmt.Sprintf("pid %d on host %s since %s\n", os.Getpid(), host, time.Now().UTC().Format(time.RFC3339))
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(holder), 0)
	}
	return &dirLock{f: f}, nil
}

// lockedError says which directory is held and, when the holder wrote it, by whom.
func lockedError(dir, path string) error {
	who := ""
	if b, err := os.ReadFile(path); err == nil {
		if line := strings.TrimSpace(string(b)); line != "" && len(line) < 256 {
			who = " (held by " + line + ")"
		}
	}
	return fmt.Errorf("%w: %s%s; stop the other process, or give this one another directory", ErrDirLocked, dir, who)
}

// unlock releases the lock. The lock file stays: removing it would let a third process
// lock a new file while a second still holds the old one.
func (l *dirLock) unlock() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := l.f.Close() // closing the descriptor releases the lock
	l.f = nil
	return err
}
