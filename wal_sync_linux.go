//go:build linux

package kommander

import (
	"os"
	"syscall"
)

// dataSync makes a file's written data durable with fdatasync: the file size is part of
// what it flushes, other metadata (timestamps) is not. It runs through Linux AIO where it
// can, so that the waiting goroutine holds no processor (see wal_aio_linux.go).
func dataSync(f *os.File) error {
	if done, err := aioDataSync(f); done {
		return err
	}
	return plainDataSync(f)
}

// plainDataSync is fdatasync as a plain system call.
func plainDataSync(f *os.File) error {
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
