//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package kommander

import (
	"net"
	"syscall"
)

// setMulticastSendOptions sets the TTL of the multicast datagrams c sends, keeps them
// looped back to this host (other nodes may run on it), and with ifAddr sends them out of
// the interface that has it. These options take one byte on the BSDs; Linux accepts that
// too.
func setMulticastSendOptions(c *net.UDPConn, ttl int, ifAddr net.IP) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		s := int(fd)
		serr = syscall.SetsockoptByte(s, syscall.IPPROTO_IP, syscall.IP_MULTICAST_TTL, byte(ttl))
		if serr == nil {
			serr = syscall.SetsockoptByte(s, syscall.IPPROTO_IP, syscall.IP_MULTICAST_LOOP, 1)
		}
		if serr == nil && ifAddr != nil {
			serr = syscall.SetsockoptInet4Addr(s, syscall.IPPROTO_IP, syscall.IP_MULTICAST_IF, [4]byte(ifAddr.To4()))
		}
	})
	if err != nil {
		return err
	}
	return serr
}
