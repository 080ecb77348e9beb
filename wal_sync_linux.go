//go:build linux

package kommander

import (
	"os"
	"syscall"
)

// dataSync makes a file's written data durable with fdatasync: the file size is part of
// what it flushes, other metadata (timestamps) is not.
func dataSync(f *os.File) error {
	for {
		err := syscall.Fdatasync(int(f.Fd()))
		if err != syscall.EINTR {
			return err
		}
	}
}

// syncDir fsyncs a directory so that creates, renames and removes in it are durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
