package main

import (
	"os"
	"syscall"
)

// dataSync is fdatasync, which is what the WAL calls on Linux.
func dataSync(f *os.File) error { return syscall.Fdatasync(int(f.Fd())) }
