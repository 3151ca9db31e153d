package docker

import "testing"

func TestIsMigrationImage(t *testing.T) {
	for ref, want := range map[string]bool{
		"127.0.0.1:5050/capsule/migrations:4f1c0c6e-8d7a-4b7e-9a55-0f2f9d0f1a11": true,
		"registry.example:5050/capsule/migrations:abc":                           true,
		"127.0.0.1:5050/capsule/busybox:latest":                                  false,
		"127.0.0.1:5050/capsule/snapshots:abc":                                   false,
		"127.0.0.1:5050/capsule/migrations-test-1:abc":                           false,
		"127.0.0.1:5050/capsule/migrations":                                      true,
	} {
		if got := isMigrationImage(ref); got != want {
			t.Errorf("isMigrationImage(%q) = %v, want %v", ref, got, want)
		}
	}
}
