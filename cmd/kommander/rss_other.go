//go:build !linux

package main

// processRSS reports that this platform's resident set size is not measured here.
func processRSS() (uint64, bool) { return 0, false }
