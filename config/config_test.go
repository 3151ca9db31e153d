package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func load(t *testing.T, yaml string) Config {
	t.Helper()
	p := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(p, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestDefaultsAndOverrides(t *testing.T) {
	c := load(t, "agent:\n  host: h1\n  heartbeat_interval: 2s\nscheduler:\n  weigher: pack\n")
	if c.Agent.Host != "h1" || c.Agent.HeartbeatInterval != 2*time.Second || c.Scheduler.Weigher != "pack" {
		t.Errorf("overrides not applied: %+v", c)
	}
	if c.API.IdentityPort != 5000 || c.Registry.Address != "127.0.0.1:5050" || c.Agent.PidsLimit != 1024 {
		t.Errorf("defaults lost: %+v", c)
	}
	if c.Agent.BridgeMappings["physnet1"] != "br-physnet1" {
		t.Errorf("default bridge mapping = %v", c.Agent.BridgeMappings)
	}
}

// TestBridgeMappingsReplaceTheDefault: a map in the file replaces the
// default map instead of being merged into it.
func TestBridgeMappingsReplaceTheDefault(t *testing.T) {
	c := load(t, "agent:\n  bridge_mappings:\n    physnet2: br-p2\n")
	if len(c.Agent.BridgeMappings) != 1 || c.Agent.BridgeMappings["physnet2"] != "br-p2" {
		t.Errorf("bridge mappings = %v", c.Agent.BridgeMappings)
	}
	c = load(t, "agent:\n  bridge_mappings: {}\n")
	if len(c.Agent.BridgeMappings) != 0 {
		t.Errorf("explicitly empty bridge mappings = %v", c.Agent.BridgeMappings)
	}
}

func TestMissingFileIsDefaults(t *testing.T) {
	c, err := Load(filepath.Join(t.TempDir(), "absent.yaml"))
	if err != nil || c.Database.Driver != "sqlite" || c.Agent.BridgeMappings == nil {
		t.Fatalf("Load(missing) = %+v, %v", c, err)
	}
}

func TestBadYAMLIsAnError(t *testing.T) {
	p := filepath.Join(t.TempDir(), "c.yaml")
	_ = os.WriteFile(p, []byte("agent: [\n"), 0o600)
	if _, err := Load(p); err == nil {
		t.Fatal("bad YAML accepted")
	}
}

// TestCPUDedicatedSet: the key is read, empty by default, and a malformed
// CPU list fails the load.
func TestCPUDedicatedSet(t *testing.T) {
	if c := load(t, "agent:\n  host: h1\n"); c.Agent.CPUDedicatedSet != "" {
		t.Errorf("default cpu_dedicated_set = %q, want none", c.Agent.CPUDedicatedSet)
	}
	if c := load(t, "agent:\n  cpu_dedicated_set: \"2-3,6\"\n"); c.Agent.CPUDedicatedSet != "2-3,6" {
		t.Errorf("cpu_dedicated_set = %q", c.Agent.CPUDedicatedSet)
	}
	p := filepath.Join(t.TempDir(), "c.yaml")
	_ = os.WriteFile(p, []byte("agent:\n  cpu_dedicated_set: \"3-1\"\n"), 0o600)
	if _, err := Load(p); err == nil {
		t.Fatal("malformed cpu_dedicated_set accepted")
	}
}

func TestTLSCertAndKeyGoTogether(t *testing.T) {
	c := load(t, "http:\n  tls_cert_file: /c.pem\n  tls_key_file: /k.pem\n")
	if !c.HTTP.TLS() || c.HTTP.TLSKeyFile != "/k.pem" {
		t.Errorf("tls: %+v", c.HTTP)
	}
	if load(t, "").HTTP.TLS() {
		t.Error("TLS on by default")
	}
	p := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(p, []byte("http:\n  tls_cert_file: /c.pem\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(p); err == nil {
		t.Error("a certificate without its key loaded")
	}
}

func TestPasswordHashRounds(t *testing.T) {
	if r := load(t, "").API.PasswordHashRounds; r != 10 {
		t.Errorf("default password_hash_rounds = %d, want bcrypt's default 10", r)
	}
	if r := load(t, "api:\n  password_hash_rounds: 4\n").API.PasswordHashRounds; r != 4 {
		t.Errorf("password_hash_rounds = %d, want 4", r)
	}
	for _, bad := range []string{"3", "32", "0", "-1"} {
		p := filepath.Join(t.TempDir(), "c.yaml")
		if err := os.WriteFile(p, []byte("api:\n  password_hash_rounds: "+bad+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := Load(p); err == nil || !strings.Contains(err.Error(), "password_hash_rounds") {
			t.Errorf("password_hash_rounds %s: %v, want an error naming it", bad, err)
		}
	}
}

// The volume work deadlines default to 10 minutes and an hour, may be
// set, and must be positive.
func TestVolumeTimeouts(t *testing.T) {
	if c := load(t, ""); c.Volume.AttachTimeout != 10*time.Minute || c.Volume.MoveTimeout != time.Hour {
		t.Errorf("defaults: %+v", c.Volume)
	}
	if c := load(t, "volume:\n  attach_timeout: 20s\n  move_timeout: 30s\n"); c.Volume.AttachTimeout != 20*time.Second || c.Volume.MoveTimeout != 30*time.Second {
		t.Errorf("set: %+v", c.Volume)
	}
	for _, bad := range []string{"volume:\n  attach_timeout: 0s\n", "volume:\n  move_timeout: -1s\n"} {
		p := filepath.Join(t.TempDir(), "c.yaml")
		if err := os.WriteFile(p, []byte(bad), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := Load(p); err == nil || !strings.Contains(err.Error(), "volume.attach_timeout") {
			t.Errorf("%q loaded: %v", bad, err)
		}
	}
}
