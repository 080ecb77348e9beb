//go:build linux && (amd64 || arm64)

package kommander

import (
	"errors"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"
)

// Why fdatasync goes through Linux AIO here: a goroutine blocked in a system call keeps its
// processor (its P) until the runtime's monitor takes it back, which it does late or not at
// all when it thinks there is little to run. An fdatasync takes a fraction of a millisecond
// to several, and a busy WAL spends most of its time in one: with GOMAXPROCS 2, one node
// then ran on what was left of one processor, and three nodes in one process (kommander
// bench) had 1.8 of their 2 processors held by fdatasync on average, while the loops,
// transports and callers waited to run with the CPU two-thirds idle (go tool trace).
//
// IOCB_CMD_FDSYNC (Linux 4.18) has a kernel worker do the same fdatasync, and an eventfd
// that the runtime's network poller watches says when it is done: the goroutine waits
// parked, without a P. Where the kernel or a sandbox refuses any of it, dataSync falls back
// to the plain system call, for good. The syncers are kept for reuse: as many as syncs ever
// ran at once, an AIO context and an eventfd each.

// aioState is 2 once AIO fsync turned out unavailable here.
var aioState atomic.Int32

// aioSyncers are idle syncers, one per concurrent caller at most.
var aioSyncers struct {
	mu   sync.Mutex
	free []*aioSyncer
}

// errAIOUnavailable reports that this kernel or sandbox refuses AIO fsync.
var errAIOUnavailable = errors.New("kommander: AIO fsync unavailable")

// iocb is the kernel's struct iocb on a 64-bit little-endian machine.
type iocb struct {
	data      uint64
	key       uint32
	rwFlags   int32
	opcode    uint16
	reqprio   int16
	fildes    uint32
	buf       uint64
	nbytes    uint64
	offset    int64
	reserved2 uint64
	flags     uint32
	resfd     uint32
}

// ioEvent is the kernel's struct io_event.
type ioEvent struct {
	data, obj uint64
	res, res2 int64
}

const (
	iocbCmdFdsync = 3
	iocbFlagResfd = 1
)

// aioSyncer is one AIO context and its eventfd; one fdatasync at a time.
type aioSyncer struct {
	ctx  uintptr
	efd  *os.File // the eventfd, in the network poller
	cb   iocb
	cbs  [1]uintptr
	ev   [1]ioEvent
	word [8]byte
}

func newAIOSyncer() (*aioSyncer, error) {
	s := &aioSyncer{}
	if _, _, e := syscall.Syscall(syscall.SYS_IO_SETUP, 1, uintptr(unsafe.Pointer(&s.ctx)), 0); e != 0 {
		return nil, e
	}
	fd, _, e := syscall.Syscall(syscall.SYS_EVENTFD2, 0, syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if e != 0 {
		syscall.Syscall(syscall.SYS_IO_DESTROY, s.ctx, 0, 0)
		return nil, e
	}
	// A non-blocking descriptor goes to the network poller: Read parks the goroutine.
	s.efd = os.NewFile(fd, "kommander-aio-eventfd")
	s.cb = iocb{opcode: iocbCmdFdsync, flags: iocbFlagResfd, resfd: uint32(fd)}
	return s, nil
}

// sync runs fdatasync on fd through the AIO context and waits for it without holding a P.
// submitted is false when the kernel did not take the request: err then says why, and is
// errAIOUnavailable when it never will.
func (s *aioSyncer) sync(fd uintptr) (submitted bool, err error) {
	s.cb.fildes = uint32(fd)
	s.cbs[0] = uintptr(unsafe.Pointer(&s.cb))
	for {
		n, _, e := syscall.Syscall(syscall.SYS_IO_SUBMIT, s.ctx, 1, uintptr(unsafe.Pointer(&s.cbs[0])))
		if e == 0 && n == 1 {
			break
		}
		if e == 0 {
			return false, syscall.EAGAIN // took none: nothing will complete
		}
		switch e {
		case syscall.EINTR:
			continue
		case syscall.EINVAL, syscall.ENOSYS, syscall.EOPNOTSUPP, syscall.EPERM:
			return false, errAIOUnavailable
		default:
			return false, e // EAGAIN and the like: the caller syncs the plain way this time
		}
	}
	runtime.KeepAlive(s)
	// Submitted: the fsync runs whatever happens now, so wait for it whatever happens.
	for {
		if _, err := s.efd.Read(s.word[:]); err == nil {
			break
		} else if !errors.Is(err, syscall.EINTR) && !errors.Is(err, syscall.EAGAIN) {
			return true, s.waitBlocking(err)
		}
	}
	return true, s.reap()
}

// waitBlocking waits for the submitted fsync in io_getevents when the eventfd failed.
func (s *aioSyncer) waitBlocking(cause error) error {
	for {
		n, _, e := syscall.Syscall6(syscall.SYS_IO_GETEVENTS, s.ctx, 1, 1, uintptr(unsafe.Pointer(&s.ev[0])), 0, 0)
		if e == syscall.EINTR || (e == 0 && n != 1) {
			continue
		}
		if e != 0 {
			return errors.Join(cause, e)
		}
		return s.result()
	}
}

// reap collects the completed fsync's event.
func (s *aioSyncer) reap() error {
	for {
		n, _, e := syscall.Syscall6(syscall.SYS_IO_GETEVENTS, s.ctx, 1, 1, uintptr(unsafe.Pointer(&s.ev[0])), 0, 0)
		if e == syscall.EINTR {
			continue
		}
		if e != 0 {
			return e
		}
		if n != 1 {
			continue // cannot happen: the eventfd said it completed
		}
		return s.result()
	}
}

func (s *aioSyncer) result() error {
	res := s.ev[0].res
	runtime.KeepAlive(s)
	if res < 0 {
		return syscall.Errno(-res)
	}
	return nil
}

func (s *aioSyncer) close() {
	s.efd.Close()
	syscall.Syscall(syscall.SYS_IO_DESTROY, s.ctx, 0, 0)
}

// putAIOSyncer keeps an idle syncer for the next call.
func putAIOSyncer(s *aioSyncer) {
	aioSyncers.mu.Lock()
	aioSyncers.free = append(aioSyncers.free, s)
	aioSyncers.mu.Unlock()
}

// aioDataSync runs fdatasync on f through AIO. It reports false when AIO is unavailable
// here, having done nothing; the caller then makes the plain system call.
func aioDataSync(f *os.File) (bool, error) {
	if aioState.Load() == 2 {
		return false, nil
	}
	aioSyncers.mu.Lock()
	var s *aioSyncer
	if n := len(aioSyncers.free); n > 0 {
		s = aioSyncers.free[n-1]
		aioSyncers.free = aioSyncers.free[:n-1]
	}
	aioSyncers.mu.Unlock()
	if s == nil {
		var err error
		if s, err = newAIOSyncer(); err != nil {
			if err != syscall.EAGAIN && err != syscall.EMFILE && err != syscall.ENFILE {
				aioState.Store(2) // ENOSYS, EPERM: never here
			}
			return false, nil
		}
	}
	submitted, err := s.sync(f.Fd())
	runtime.KeepAlive(f)
	if errors.Is(err, errAIOUnavailable) {
		// The kernel refused the request itself: either it has no AIO fsync, or this
		// file takes no fsync at all. The plain call tells which.
		err := plainDataSync(f)
		if err == nil {
			aioState.Store(2)
			s.close()
		} else {
			putAIOSyncer(s)
		}
		return true, err
	}
	putAIOSyncer(s)
	if !submitted {
		return false, nil // refused this time (EAGAIN: the kernel's AIO limit): the plain way
	}
	return true, err
}
