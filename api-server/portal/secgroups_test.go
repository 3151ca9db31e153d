package portal

import (
	"reflect"
	"strings"
	"testing"
)

// TestRuleBody: the add-rule form becomes Neutron's rule body; a port
// without a protocol, a port out of range, or both a CIDR and a group are
// refused with a sentence before the API is asked.
func TestRuleBody(t *testing.T) {
	got, msg := ruleBody("g1", ruleForm{Direction: "ingress", EtherType: "IPv4", Protocol: "tcp", PortMin: "8080", Remote: " 0.0.0.0/0 "})
	want := map[string]any{"security_group_id": "g1", "direction": "ingress", "ethertype": "IPv4", "protocol": "tcp",
		"port_range_min": 8080, "port_range_max": 8080, "remote_ip_prefix": "0.0.0.0/0"}
	if msg != "" || !reflect.DeepEqual(got, want) {
		t.Errorf("tcp 8080 from anywhere: %v %q, want %v", got, msg, want)
	}
	got, msg = ruleBody("g1", ruleForm{Direction: "egress", EtherType: "IPv6", Protocol: "any", RemoteGroup: "g2"})
	want = map[string]any{"security_group_id": "g1", "direction": "egress", "ethertype": "IPv6", "remote_group_id": "g2"}
	if msg != "" || !reflect.DeepEqual(got, want) {
		t.Errorf("any from a group: %v %q, want %v", got, msg, want)
	}
	for _, c := range []struct {
		f    ruleForm
		want string
	}{
		{ruleForm{Direction: "ingress", EtherType: "IPv4", Protocol: "any", PortMin: "22"}, "Ports need a protocol"},
		{ruleForm{Direction: "ingress", EtherType: "IPv4", Protocol: "tcp", PortMin: "70000"}, "65535"},
		{ruleForm{Direction: "ingress", EtherType: "IPv4", Protocol: "tcp", PortMin: "1", PortMax: "x"}, "last port"},
		{ruleForm{Direction: "ingress", EtherType: "IPv4", Protocol: "tcp", Remote: "10.0.0.0/8", RemoteGroup: "g2"}, "not both"},
		{ruleForm{Direction: "sideways", EtherType: "IPv4"}, "ingress or egress"},
		{ruleForm{Direction: "ingress", EtherType: "IPX"}, "IPv4 or IPv6"},
	} {
		if _, msg := ruleBody("g1", c.f); !strings.Contains(msg, c.want) {
			t.Errorf("%+v: %q, want %q", c.f, msg, c.want)
		}
	}
}

func TestRulePorts(t *testing.T) {
	p := func(n int) *int { return &n }
	for _, c := range []struct {
		r    SecurityRule
		want string
	}{
		{SecurityRule{}, "any"}, {SecurityRule{PortMin: p(22), PortMax: p(22)}, "22"}, {SecurityRule{PortMin: p(1), PortMax: p(9)}, "1-9"},
	} {
		if got := c.r.Ports(); got != c.want {
			t.Errorf("%+v: %q, want %q", c.r, got, c.want)
		}
	}
}
