//go:build !linux && !windows

package kommander

import "os"

// dataSync makes a file's written data durable. On macOS, File.Sync uses F_FULLFSYNC.
func dataSync(f *os.File) error { return f.Sync() }

// syncDir fsyncs a directory so that creates, renames and removes in it are durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
