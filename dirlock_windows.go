//go:build windows

package kommander

import (
	"errors"
	"os"
	"syscall"
)

// errLockHeld reports that another process holds the lock.
var errLockHeld = errors.New("lock held")

// errSharingViolation is ERROR_SHARING_VIOLATION: another handle has the file open
// without sharing.
const errSharingViolation syscall.Errno = 32

// openLockFile opens the lock file with no sharing at all: while this handle is open, every
// other open of the file fails, which is the lock.
func openLockFile(path string) (*os.File, error) {
	p, err := syscall.UTF16PtrFromString(path)
	if err != nil {
		return nil, err
	}
	h, err := syscall.CreateFile(p, syscall.GENERIC_READ|syscall.GENERIC_WRITE, 0, nil,
		syscall.OPEN_ALWAYS, syscall.FILE_ATTRIBUTE_NORMAL, 0)
	if err != nil {
		if errors.Is(err, errSharingViolation) {
			return nil, errLockHeld
		}
		return nil, err
	}
	return os.NewFile(uintptr(h), path), nil
}

// tryLock has nothing left to do: the exclusive open is the lock.
func tryLock(*os.File) error { return nil }
