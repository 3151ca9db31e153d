package vif

import (
	"errors"
	"fmt"
	"runtime"
	"unsafe"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// inNamespace runs fn on an OS thread switched into the network namespace
// target. It uses a goroutine of its own: if switching the thread back
// fails, that goroutine exits still locked to the thread, so the Go runtime
// destroys the thread instead of reusing it in the wrong namespace.
func inNamespace(target netns.NsHandle, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("get current network namespace: %w", err)
			return
		}
		defer orig.Close()
		if err := netns.Set(target); err != nil {
			runtime.UnlockOSThread() // setns failed: the thread did not move
			errc <- fmt.Errorf("enter network namespace: %w", err)
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			// Stay locked: the thread dies with this goroutine.
			errc <- errors.Join(ferr, fmt.Errorf("return to the original network namespace: %w", err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// The ethtool ioctl (linux/ethtool.h, linux/sockios.h): SIOCETHTOOL with an
// ifreq whose data points at a struct ethtool_value.
const (
	siocEthtool    = 0x8946
	ethtoolGTXCSUM = 0x16 // get TX checksum offload
	ethtoolSTXCSUM = 0x17 // set TX checksum offload
)

type ethtoolValue struct {
	cmd  uint32
	data uint32
}

// ifreqData is struct ifreq with the ifr_data union member.
type ifreqData struct {
	name [unix.IFNAMSIZ]byte
	data unsafe.Pointer
	_    [24 - unsafe.Sizeof(uintptr(0))]byte
}

// ethtoolValueIoctl runs one ETHTOOL_G*/S* value command on ifname through
// socket fd and returns the value.
func ethtoolValueIoctl(fd int, ifname string, cmd, data uint32) (uint32, error) {
	if len(ifname) >= unix.IFNAMSIZ {
		return 0, fmt.Errorf("interface name %q too long", ifname)
	}
	v := ethtoolValue{cmd: cmd, data: data}
	var ifr ifreqData
	copy(ifr.name[:], ifname)
	ifr.data = unsafe.Pointer(&v)
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), siocEthtool, uintptr(unsafe.Pointer(&ifr)))
	runtime.KeepAlive(&v)
	if errno != 0 {
		return 0, errno
	}
	return v.data, nil
}

// txChecksumOff turns TX checksum offload off on ifname inside namespace
// ns and checks that it is off. OVS's userspace datapath forwards a veth's
// packets without completing offloaded checksums, so with offload on, TCP
// from the container arrives with bad checksums and is dropped.
func txChecksumOff(ns netns.NsHandle, ifname string) error {
	var fd int
	// Only the socket needs the namespace: it stays bound to the namespace
	// it was created in, so the ioctls can run from any thread.
	if err := inNamespace(ns, func() error {
		var err error
		fd, err = unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		return err
	}); err != nil {
		return fmt.Errorf("ethtool socket in namespace: %w", err)
	}
	defer unix.Close(fd)
	if _, err := ethtoolValueIoctl(fd, ifname, ethtoolSTXCSUM, 0); err != nil {
		return fmt.Errorf("ethtool -K %s tx off: %w", ifname, err)
	}
	on, err := ethtoolValueIoctl(fd, ifname, ethtoolGTXCSUM, 0)
	if err != nil {
		return fmt.Errorf("ethtool -k %s: %w", ifname, err)
	}
	if on != 0 {
		return fmt.Errorf("TX checksum offload on %s is still on after turning it off", ifname)
	}
	return nil
}

// txChecksum reports whether TX checksum offload is on for ifname in ns.
func txChecksum(ns netns.NsHandle, ifname string) (bool, error) {
	var on uint32
	err := inNamespace(ns, func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		on, err = ethtoolValueIoctl(fd, ifname, ethtoolGTXCSUM, 0)
		return err
	})
	return on != 0, err
}
