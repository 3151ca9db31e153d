package vif

import (
	"net"
	"strings"
	"testing"
)

func TestTokenIPRoundTrip(t *testing.T) {
	seen := map[string]int{}
	for port := 1; port <= 0xfeff; port++ {
		ip, ok := TokenIP(port)
		if !ok {
			continue
		}
		if ip.Equal(MetadataAddr) || ip.Equal(metadataGW) || ip[0] != 169 || ip[1] != 254 {
			t.Fatalf("token of %d = %s", port, ip)
		}
		if other, dup := seen[ip.String()]; dup {
			t.Fatalf("ports %d and %d share token %s", other, port, ip)
		}
		seen[ip.String()] = port
		if back, ok := OFPortOfToken(ip); !ok || back != port {
			t.Fatalf("OFPortOfToken(%s) = %d %v, want %d", ip, back, ok, port)
		}
	}
	for _, bad := range []int{0, -1, 0xff00, MetadataOFPort + 0x10000} {
		if _, ok := TokenIP(bad); ok {
			t.Errorf("TokenIP(%d) ok", bad)
		}
	}
	for _, ip := range []string{"169.254.169.254", "169.254.0.1", "10.0.1.2", "169.254.0.255"} {
		if p, ok := OFPortOfToken(net.ParseIP(ip)); ok {
			t.Errorf("OFPortOfToken(%s) = %d", ip, p)
		}
	}
}

// The per-port flows take only the port's own MAC and address to the
// metadata port (as its token) and send replies to that token to this
// port only.
func TestMetadataFlows(t *testing.T) {
	mac, _ := net.ParseMAC("fa:16:3e:00:00:05")
	md := MetadataMAC("br-x")
	flows := metadataFlows(0xca5e000000000042, 7, mac, net.ParseIP("10.0.0.5").To4(), md)
	if len(flows) != 3 {
		t.Fatalf("flows = %q", flows)
	}
	arp, in, out := flows[0], flows[1], flows[2]
	for _, f := range []string{arp, in} {
		for _, want := range []string{"in_port=7", "dl_src=fa:16:3e:00:00:05", "priority=120"} {
			if !strings.Contains(f, want) {
				t.Errorf("flow %q lacks %s", f, want)
			}
		}
	}
	if !strings.Contains(arp, "arp_spa=10.0.0.5") || !strings.Contains(arp, "arp_tpa=169.254.169.254") || !strings.HasSuffix(arp, ",in_port") {
		t.Errorf("ARP flow %q", arp)
	}
	if !strings.Contains(in, "nw_src=10.0.0.5,nw_dst=169.254.169.254,tp_dst=80") || !strings.Contains(in, "mod_nw_src:169.254.1.7,output:65201") {
		t.Errorf("request flow %q", in)
	}
	if !strings.Contains(out, "in_port=65201,ip,nw_dst=169.254.1.7") || !strings.Contains(out, "mod_nw_dst:10.0.0.5,output:7") ||
		!strings.Contains(out, "mod_dl_dst:fa:16:3e:00:00:05") {
		t.Errorf("reply flow %q", out)
	}
	if MetadataMAC("br-x")[0]&1 != 0 || MetadataMAC("br-x")[0]&2 == 0 {
		t.Errorf("metadata MAC %s is not unicast, locally administered", md)
	}
	if len(MetadataIfName("a-very-long-bridge-name")) > 15 {
		t.Error("metadata interface name longer than IFNAMSIZ")
	}
	if MetadataCookie("p1") == Cookie("p1") {
		t.Error("metadata flows share the port's anti-spoofing cookie")
	}
}
