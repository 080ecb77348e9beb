//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package kommander

import (
	"errors"
	"os"
	"syscall"
)

// errLockHeld reports that another process holds the lock.
var errLockHeld = errors.New("lock held")

func openLockFile(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
}

// tryLock takes an exclusive flock on f without waiting. flock locks belong to the open
// file, so a second open of the same directory in this process is refused too.
func tryLock(f *os.File) error {
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, syscall.EINTR):
			continue
		case errors.Is(err, syscall.EWOULDBLOCK):
			return errLockHeld
		}
		return err
	}
}
