package kommander

import (
	"encoding/binary"
	"net"
	"syscall"
)

// setMulticastOptions sets the multicast TTL, loopback and interface of socket fd. Windows
// takes them as DWORDs, the interface as its address in network byte order.
func setMulticastOptions(fd uintptr, ttl int, ifAddr net.IP) error {
	h := syscall.Handle(fd)
	if err := syscall.SetsockoptInt(h, syscall.IPPROTO_IP, syscall.IP_MULTICAST_TTL, ttl); err != nil {
		return err
	}
	if err := syscall.SetsockoptInt(h, syscall.IPPROTO_IP, syscall.IP_MULTICAST_LOOP, 1); err != nil || ifAddr == nil {
		return err
	}
	return syscall.SetsockoptInt(h, syscall.IPPROTO_IP, syscall.IP_MULTICAST_IF, int(binary.LittleEndian.Uint32(ifAddr.To4())))
}
