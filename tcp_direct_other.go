//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package kommander

import (
	"errors"
	"syscall"
)

// errDirectUnsupported reports that this platform has no non-blocking raw write.
var errDirectUnsupported = errors.New("kommander: direct socket writes unsupported here")

// directWritesSupported: every batch goes through the writer goroutine here.
const directWritesSupported = false

// rawWrite is not available here: every batch goes through the writer goroutine.
func rawWrite(syscall.RawConn, []byte) (int, error) { return 0, errDirectUnsupported }
