package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/capsule-cloud/capsule/internal/testenv"
	capreg "github.com/capsule-cloud/capsule/registry"
)

// TestVolumeAttachLostWithItsHost: a local volume's host dies (its agent
// killed) while the volume is being attached to a server on the other
// host, so the push of its data never happens. Once the attach made no
// progress for volume.move_timeout (20 s here) the conductor gives the
// volume back by itself: available on its host again, no attachment, the
// server's actions show a failed attach_volume; the server's host never
// got it. When the agent is back, the redelivered push is refused (past
// its deadline: no tag in the registry), and the volume attaches, is
// mounted in the server, detaches and is deleted as any.
func TestVolumeAttachLostWithItsHost(t *testing.T) {
	t.Parallel()
	registry := testenv.Registry(t)
	c := startCloud(t, twoHosts, withQuota(10), func(t *testing.T, c *cloud) {
		c.extraConfig += "conductor:\n  periodic_interval: 2s\nvolume:\n  attach_timeout: 20s\n  move_timeout: 20s\n"
	})
	cc := c.computeClient(t, "admin", c.adminPass, "admin")
	nc := c.networkClient(t, "admin", c.adminPass, "admin")
	osc := c.openstack(t, "admin", c.adminPass, "admin")
	val := func(args ...string) string { return strings.TrimSpace(osc.run(args...)) }
	netID, _ := vlanNetwork(t, nc, "lost-net", 324, "10.32.4.0/24", true)
	imgOn := func(h *computeHost, vol string) string { return filepath.Join(c.dir, "volumes", h.name, vol+".img") }
	exists := func(p string) bool { _, err := os.Stat(p); return err == nil }

	vol := val("volume", "create", "--size", "1", "lost-data", "-f", "value", "-c", "id")
	eventually(t, 2*time.Minute, "volume available", func() bool { return showVolume(t, osc, vol).Status == "available" })
	vh, sh := c.hosts[0], c.hosts[1] // the volume's host, the server's
	if strings.HasPrefix(showVolume(t, osc, vol).Host, sh.name+"@") {
		vh, sh = sh, vh
	}
	id := c.bootOn(t, cc, "lost", sh, netID, "")
	s := activeServer(t, cc, nc, "lost", id, sh)

	agent := c.proc(t, "agent-"+vh.name)
	agent.kill()
	val("server", "add", "volume", id, vol)
	if st := showVolume(t, osc, vol).Status; st != "attaching" {
		t.Fatalf("volume %s after the attach with its host down, want attaching", st)
	}
	eventually(t, 2*time.Minute, "the lost attach given back", func() bool {
		v := showVolume(t, osc, vol)
		return v.Status == "available" && len(v.Attachments) == 0
	})
	if v := showVolume(t, osc, vol); !strings.HasPrefix(v.Host, vh.name+"@") || !exists(imgOn(vh, vol)) || exists(imgOn(sh, vol)) {
		t.Errorf("volume given back: %+v (file on %s %v, on %s %v), want on %s as before", v, vh.name, exists(imgOn(vh, vol)),
			sh.name, exists(imgOn(sh, vol)), vh.name)
	}
	code, body := rawV(t, cc, "2.84", "GET", "servers/"+id+"/os-instance-actions", "")
	acts, _ := body["instanceActions"].([]any)
	var attachAct map[string]any
	for _, a := range acts {
		if m, _ := a.(map[string]any); m["action"] == "attach_volume" {
			attachAct = m
		}
	}
	if code != 200 || attachAct == nil || attachAct["message"] != "Error" {
		t.Fatalf("instance actions of the server: %d %v, want a failed attach_volume", code, acts)
	}
	_, body = rawV(t, cc, "2.84", "GET", fmt.Sprintf("servers/%s/os-instance-actions/%v", id, attachAct["request_id"]), "")
	if evs := fmt.Sprint(body["instanceAction"]); !strings.Contains(evs, "conductor_volume_timeout") || !strings.Contains(evs, vol) {
		t.Errorf("the failed attach_volume's events: %s", evs)
	}

	// The host comes back: the push it gets again is past its deadline.
	agent.start(t)
	c.waitReady(t)
	eventually(t, time.Minute, "the late push refused by "+vh.name, func() bool {
		b, _ := os.ReadFile(agent.log)
		return strings.Contains(string(b), "arrived after its deadline")
	})
	tags, err := (&capreg.Client{Address: registry}).Tags(context.Background(), "capsule/volumes/"+vol)
	if err != nil || len(tags) != 0 {
		t.Errorf("registry tags of the volume after the refused push: %v %v", tags, err)
	}
	if v := showVolume(t, osc, vol); v.Status != "available" {
		t.Fatalf("the refused push changed the volume: %+v", v)
	}

	// And it attaches as any volume once its host is up.
	val("server", "add", "volume", id, vol)
	eventually(t, 2*time.Minute, "the volume attached", func() bool { return showVolume(t, osc, vol).Status == "in-use" })
	eventually(t, time.Minute, "the volume mounted in the server", func() bool {
		out, _ := s.exec("sh", "-c", "grep -c ' /mnt/"+vol+" ' /proc/mounts")
		return out == "1"
	})
	val("server", "remove", "volume", id, vol)
	eventually(t, 2*time.Minute, "the volume detached", func() bool { return showVolume(t, osc, vol).Status == "available" })
	val("volume", "delete", vol)
	val("server", "delete", "--wait", id)
	eventually(t, 2*time.Minute, "the volume's files gone", func() bool { return !exists(imgOn(vh, vol)) && !exists(imgOn(sh, vol)) })
}
