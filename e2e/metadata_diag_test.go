package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/capsule-cloud/capsule/ovs"
	"github.com/capsule-cloud/capsule/vif"
)

// metadataState logs what an unreachable metadata service is made of on
// s's host, so a failure says where the path broke: the server's route to
// 169.254.169.254 and ARP entry, its port's metadata flows and the
// bridge's metadata-port flows (with their packet counts), the metadata
// port in OVS (its ofport, error and the ifindex OVS has open) and the
// kernel's device of that name, the datapath's view of it, the agent's
// metadata namespace (addresses, routes, neighbours, listeners, and
// whether the listener answers from inside), and the agent's log lines
// about its metadata service.
func (c *cloud) metadataState(t *testing.T, s *netServer) {
	t.Helper()
	br := s.host.bridge
	md := vif.MetadataIfName(br)
	var b strings.Builder
	run := func(name string, args ...string) {
		out, err := exec.Command(name, args...).CombinedOutput()
		fmt.Fprintf(&b, "$ %s %s", name, strings.Join(args, " "))
		if err != nil {
			fmt.Fprintf(&b, " (%v)", err)
		}
		fmt.Fprintf(&b, "\n%s\n", strings.TrimRight(string(out), "\n"))
	}
	if pid, err := s.host.docker("inspect", "-f", "{{.State.Pid}}", s.workload()); err == nil {
		run("nsenter", "-t", pid, "-n", "ip", "-4", "addr", "show")
		run("nsenter", "-t", pid, "-n", "ip", "route", "get", "169.254.169.254")
		run("nsenter", "-t", pid, "-n", "ip", "neigh", "show")
	} else {
		fmt.Fprintf(&b, "pid of %s: %v %s\n", s.name, err, pid)
	}
	ofctl := func(args ...string) { run("ovs-ofctl", append([]string{"-O", "OpenFlow14"}, args...)...) }
	if s.portID != "" {
		ofctl("dump-flows", br, ovs.CookieMatch(vif.MetadataCookie(s.portID)))
		ofctl("dump-flows", br, ovs.CookieMatch(vif.Cookie(s.portID)))
	}
	ofctl("dump-flows", br, ovs.CookieMatch(vif.MetadataBridgeCookie(br)))
	ofctl("dump-ports", br, strconv.Itoa(vif.MetadataOFPort))
	ofctl("show", br)
	run("ovs-vsctl", "--columns=name,ofport,ofport_request,error,ifindex,link_state,admin_state,external_ids,statistics",
		"list", "Interface", md)
	run("ip", "-d", "link", "show", md)
	run("ovs-appctl", "dpctl/show")
	// The agent's metadata namespaces: the network namespaces it holds
	// open (one per mapped bridge), other than its own.
	if p := c.proc(t, "agent-"+s.host.name); p != nil {
		if pid := p.pid(); pid > 0 {
			self, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", pid))
			fds, _ := filepath.Glob(fmt.Sprintf("/proc/%d/fd/*", pid))
			for _, fd := range fds {
				l, err := os.Readlink(fd)
				if err != nil || !strings.HasPrefix(l, "net:") || l == self {
					continue
				}
				fmt.Fprintf(&b, "agent %d holds namespace %s (%s)\n", pid, l, fd)
				// The last asks the listener from inside (bash's
				// /dev/tcp: the host's busybox wget may not run here).
				for _, args := range [][]string{{"ip", "-d", "addr"}, {"ip", "route"}, {"ip", "neigh"}, {"ss", "-tan"},
					{"timeout", "5", "bash", "-c", `exec 3<>/dev/tcp/169.254.169.254/80 && printf 'GET /openstack HTTP/1.0\r\n\r\n' >&3 && cat <&3`}} {
					run("nsenter", append([]string{"--net=" + fd}, args...)...)
				}
			}
		} else {
			fmt.Fprintf(&b, "agent of %s is not running\n", s.host.name)
		}
		lines := p.logLines(t, "etadata")
		if len(lines) > 60 {
			lines = lines[len(lines)-60:]
		}
		for _, l := range lines {
			fmt.Fprintf(&b, "agent log: %s\n", l)
		}
	}
	t.Logf("metadata service state for %s on %s:\n%s", s.name, s.host.name, b.String())
}
