//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package kommander

import "syscall"

// directWritesSupported: Send may write to a plain TCP connection itself here.
const directWritesSupported = true

// rawWrite writes b to the socket behind rc without blocking: it returns how much the
// socket took, and syscall.EAGAIN when it took less because its buffer is full.
func rawWrite(rc syscall.RawConn, b []byte) (n int, err error) {
	werr := rc.Write(func(fd uintptr) bool {
		for n < len(b) {
			m, e := syscall.Write(int(fd), b[n:])
			if m > 0 {
				n += m
			}
			if e == syscall.EINTR {
				continue
			}
			if e != nil {
				err = e
				break
			}
			if m <= 0 {
				err = syscall.EAGAIN
				break
			}
		}
		return true // never wait for the socket: the writer goroutine does that
	})
	if err == nil && werr != nil {
		err = werr
	}
	return n, err
}
