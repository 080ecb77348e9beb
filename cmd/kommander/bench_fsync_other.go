//go:build !linux

package main

import "os"

// dataSync is File.Sync, which is what the WAL calls outside Linux.
func dataSync(f *os.File) error { return f.Sync() }
