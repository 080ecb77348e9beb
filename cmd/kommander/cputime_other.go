//go:build !unix && !windows

package main

import "time"

// processCPUTime reports that this platform does not measure CPU time.
func processCPUTime() (time.Duration, bool) { return 0, false }
