//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly || windows)

package kommander

import (
	"errors"
	"os"
)

// errLockHeld reports that another process holds the lock.
var errLockHeld = errors.New("lock held")

func openLockFile(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
}

// tryLock cannot lock on this platform: the standard library offers no file lock here, so
// keeping a second process out of a data directory is left to the operator.
func tryLock(*os.File) error { return nil }
