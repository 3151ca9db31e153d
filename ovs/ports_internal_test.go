package ovs

import "testing"

// OVSDB prints a one-element set as the bare element; both forms must parse.
func TestParsePortsSetForms(t *testing.T) {
	out := `{"data":[["br1",["uuid","p1"]],["br2",["set",[["uuid","p2"],["uuid","p3"]]]]],"headings":["name","ports"]}
{"data":[[["uuid","p1"],"a",101,"access",["uuid","i1"]],[["uuid","p2"],"b",["set",[]],["set",[]],["uuid","i2"]],[["uuid","p3"],"c",["set",[]],"trunk",["set",[["uuid","i3"]]]]],"headings":["_uuid","name","tag","vlan_mode","interfaces"]}
{"data":[[["uuid","i1"],"a",3,["map",[["iface-id","x"],["vm-uuid","v"]]],["set",[]]],[["uuid","i2"],"b",["set",[]],["map",[]],"could not open network device b (No such device)"],[["uuid","i3"],"c",-1,["map",[]],["set",[]]]],"headings":["_uuid","name","ofport","external_ids","error"]}
`
	ports, bridges, err := parsePorts(out)
	if err != nil {
		t.Fatal(err)
	}
	if !bridges["br1"] || !bridges["br2"] || len(bridges) != 2 {
		t.Errorf("bridges = %v", bridges)
	}
	if len(ports) != 3 {
		t.Fatalf("ports = %+v", ports)
	}
	a, b, c := ports[0], ports[1], ports[2]
	if a.Name != "a" || a.Bridge != "br1" || a.Tag != 101 || a.VLANMode != "access" || a.OFPort != 3 || a.IfaceID() != "x" || a.VMUUID() != "v" {
		t.Errorf("a = %+v", a)
	}
	if b.Bridge != "br2" || b.Tag != 0 || b.VLANMode != "" || b.OFPort != -1 || b.Error == "" {
		t.Errorf("b = %+v", b)
	}
	if c.VLANMode != "trunk" || c.OFPort != -1 {
		t.Errorf("c = %+v", c)
	}
}

func TestParseFlow(t *testing.T) {
	f, err := parseFlow("cookie=0xca5e000000000001, table=2, priority=100,arp,in_port=1,arp_spa=10.0.0.1 actions=NORMAL")
	if err != nil {
		t.Fatal(err)
	}
	if f.Cookie != 0xca5e000000000001 || f.Table != 2 || f.Priority != 100 || f.Match != "arp,in_port=1,arp_spa=10.0.0.1" || f.Actions != "NORMAL" {
		t.Errorf("parsed %+v", f)
	}
	if f, err := parseFlow("in_port=2 actions=drop"); err != nil || f.Priority != 32768 || f.Cookie != 0 {
		t.Errorf("defaults: %+v %v", f, err)
	}
}
