package kommander

import (
	"io"
	"os"
)

// walFile is the part of a file the WAL uses; tests wrap it to inject failures.
type walFile interface {
	io.ReaderAt
	io.WriterAt
	// Sync makes written data durable (fdatasync where the platform has it).
	Sync() error
	Truncate(size int64) error
	Size() (int64, error)
	Close() error
}

// walFS is the part of the file system the WAL uses; tests wrap it to inject failures.
type walFS interface {
	OpenFile(name string, flag int) (walFile, error)
	Remove(name string) error
	Rename(from, to string) error
	SyncDir(dir string) error
	ReadDir(dir string) ([]string, error)
	MkdirAll(dir string) error
}

// osFS is the real file system.
type osFS struct{}

type osFile struct{ *os.File }

func (f osFile) Sync() error { return dataSync(f.File) }

func (f osFile) Size() (int64, error) {
	st, err := f.File.Stat()
	if err != nil {
		return 0, err
	}
	return st.Size(), nil
}

func (osFS) OpenFile(name string, flag int) (walFile, error) {
	f, err := os.OpenFile(name, flag, 0o600)
	if err != nil {
		return nil, err
	}
	return osFile{f}, nil
}
func (osFS) Remove(name string) error     { return os.Remove(name) }
func (osFS) Rename(from, to string) error { return os.Rename(from, to) }
func (osFS) SyncDir(dir string) error     { return syncDir(dir) }
func (osFS) MkdirAll(dir string) error    { return os.MkdirAll(dir, 0o700) }
func (osFS) ReadDir(dir string) ([]string, error) {
	des, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(des))
	for _, de := range des {
		if de.Type().IsRegular() {
			names = append(names, de.Name())
		}
	}
	return names, nil
}

func writeFull(f walFile, b []byte, off int64) error {
	n, err := f.WriteAt(b, off)
	if err == nil && n < len(b) {
		err = io.ErrShortWrite
	}
	return err
}
