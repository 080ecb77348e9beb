//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package kommander

import (
	"net"
	"syscall"
)

// setMulticastOptions sets the multicast TTL, loopback and interface of socket fd. These
// options take one byte on the BSDs; Linux accepts that too.
func setMulticastOptions(fd uintptr, ttl int, ifAddr net.IP) error {
	s := int(fd)
	if err := syscall.SetsockoptByte(s, syscall.IPPROTO_IP, syscall.IP_MULTICAST_TTL, byte(ttl)); err != nil {
		return err
	}
	if err := syscall.SetsockoptByte(s, syscall.IPPROTO_IP, syscall.IP_MULTICAST_LOOP, 1); err != nil || ifAddr == nil {
		return err
	}
	return syscall.SetsockoptInet4Addr(s, syscall.IPPROTO_IP, syscall.IP_MULTICAST_IF, [4]byte(ifAddr.To4()))
}
