package kommander

import (
	"encoding/binary"
	"net"
	"syscall"
)

// setMulticastSendOptions sets the TTL of the multicast datagrams c sends, keeps them
// looped back to this host (other nodes may run on it), and with ifAddr sends them out of
// the interface that has it. Windows takes these options as DWORDs, the interface as an
// address in network byte order.
func setMulticastSendOptions(c *net.UDPConn, ttl int, ifAddr net.IP) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		h := syscall.Handle(fd)
		serr = syscall.SetsockoptInt(h, syscall.IPPROTO_IP, syscall.IP_MULTICAST_TTL, ttl)
		if serr == nil {
			serr = syscall.SetsockoptInt(h, syscall.IPPROTO_IP, syscall.IP_MULTICAST_LOOP, 1)
		}
		if serr == nil && ifAddr != nil {
			serr = syscall.SetsockoptInt(h, syscall.IPPROTO_IP, syscall.IP_MULTICAST_IF, int(binary.LittleEndian.Uint32(ifAddr.To4())))
		}
	})
	if err != nil {
		return err
	}
	return serr
}
