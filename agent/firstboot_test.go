package agent

import (
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/capsule-cloud/capsule/metadata"
	"github.com/capsule-cloud/capsule/protocol"
	"github.com/capsule-cloud/capsule/userdata"
)

// A build with user data and a config drive writes, before the first
// start, what the base image runs of the user data and the server's
// metadata tree (fetched from the conductor) where cloud-init reads it;
// a cloud-config's hostname becomes the server's.
func TestBuildWritesFirstBootFiles(t *testing.T) {
	e, drv := startFake(t)
	ud := base64.StdEncoding.EncodeToString([]byte("#cloud-config\nhostname: from-ud\nruncmd:\n  - echo hi\n"))
	e.publish(protocol.KindBuildInstance, protocol.BuildInstance{RequestID: "req-u", Attempt: 1,
		Spec: protocol.InstanceSpec{ID: "i-u", Name: "srv-i-u", ProjectID: "proj-1", ImageRef: fakeImage,
			VCPUs: 1, MemoryMB: 64, DiskGB: 1, UserData: ud, ConfigDrive: true}})
	if r := e.waitReport("i-u", 1, 5*time.Second); !r.OK {
		t.Fatalf("build: %+v", r)
	}
	inst, _ := drv.get("i-u")
	if !strings.Contains(inst.Files[userdata.Once], "echo hi") {
		t.Errorf("first-boot script = %q", inst.Files[userdata.Once])
	}
	md := inst.Files[metadata.ConfigDriveDir+"/openstack/latest/meta_data.json"]
	if !strings.Contains(md, `"uuid":"i-u"`) {
		t.Errorf("config drive meta_data.json = %q", md)
	}
	if inst.Files[metadata.ConfigDriveDir+"/openstack/2018-08-27/network_data.json"] == "" {
		t.Error("config drive lacks a dated version's network_data.json")
	}
	if inst.Spec.Hostname != "from-ud" {
		t.Errorf("hostname = %q, want the cloud-config's", inst.Spec.Hostname)
	}

	e.build("i-plain", "req-p", fakeImage)
	if r := e.waitReport("i-plain", 1, 5*time.Second); !r.OK {
		t.Fatalf("build: %+v", r)
	}
	if inst, _ := drv.get("i-plain"); len(inst.Spec.Files) != 0 {
		t.Errorf("a server without user data or config drive got files %v", inst.Spec.Files)
	}
}
