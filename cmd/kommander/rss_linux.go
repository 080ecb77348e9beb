//go:build linux

package main

import (
	"bytes"
	"os"
	"strconv"
)

// processRSS returns the resident set size of this process in bytes, and whether the
// platform reports it.
func processRSS() (uint64, bool) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, false
	}
	for _, line := range bytes.Split(b, []byte("\n")) {
		if rest, ok := bytes.CutPrefix(line, []byte("VmRSS:")); ok {
			f := bytes.Fields(rest) // "123456 kB"
			if len(f) != 2 {
				return 0, false
			}
			kb, err := strconv.ParseUint(string(f[0]), 10, 64)
			return kb << 10, err == nil
		}
	}
	return 0, false
}
