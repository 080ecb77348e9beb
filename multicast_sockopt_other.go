//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly || windows)

package kommander

import (
	"errors"
	"net"
)

// setMulticastOptions can set nothing where the platform offers no way: only the defaults
// (TTL 1, the system's interface) work there.
func setMulticastOptions(_ uintptr, ttl int, ifAddr net.IP) error {
	if ttl != 1 || ifAddr != nil {
		return errors.New("kommander: multicast: TTL and Interface cannot be set on this platform")
	}
	return nil
}
