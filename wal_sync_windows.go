//go:build windows

package kommander

import "os"

// dataSync makes a file's written data durable (FlushFileBuffers).
func dataSync(f *os.File) error { return f.Sync() }

// syncDir does nothing on Windows: a directory cannot be flushed there, and NTFS journals
// its metadata changes.
func syncDir(string) error { return nil }
