package docker

import (
	"strings"
	"testing"
)

func TestOwnMount(t *testing.T) {
	for dest, want := range map[string]bool{
		"/etc/resolv.conf": true, "/etc/hostname": true, "/etc/hosts": true,
		"/proc/cpuinfo": true, "/proc/meminfo": true, "/sys/devices/system/cpu/online": true, "/proc": true,
		"/etc/hosts.allow": false, "/procfs": false, "/data": false, "/etc": false, "/var/lib/lxcfs": false,
	} {
		if got := ownMount(dest); got != want {
			t.Errorf("ownMount(%q) = %v, want %v", dest, got, want)
		}
	}
}

// TestReadPull: bytes are summed over the layers downloaded, a layer
// whose last progress line came before its end counts whole, layers
// already here count nothing, and a failure in the stream is returned.
func TestReadPull(t *testing.T) {
	stream := strings.Join([]string{
		`{"status":"Pulling from capsule/migrations","id":"mig"}`,
		`{"status":"Already exists","progressDetail":{},"id":"aaa"}`,
		`{"status":"Pulling fs layer","progressDetail":{},"id":"bbb"}`,
		`{"status":"Downloading","progressDetail":{"current":1000,"total":5000},"id":"bbb"}`,
		`{"status":"Downloading","progressDetail":{"current":4000,"total":5000},"id":"bbb"}`,
		`{"status":"Downloading","progressDetail":{"current":70,"total":70},"id":"ccc"}`,
		`{"status":"Verifying Checksum","progressDetail":{},"id":"bbb"}`,
		`{"status":"Download complete","progressDetail":{},"id":"bbb"}`,
		`{"status":"Extracting","progressDetail":{"current":32768,"total":5000},"id":"bbb"}`,
		`{"status":"Pull complete","progressDetail":{},"id":"bbb"}`,
		`{"status":"Digest: sha256:abc"}`,
		`{"status":"Status: Downloaded newer image for x"}`,
	}, "\n")
	var seen []int64
	n, fetched, err := readPull(strings.NewReader(stream), func(b int64) { seen = append(seen, b) })
	if err != nil || n != 5070 {
		t.Fatalf("readPull = %d, %v; want 5070", n, err)
	}
	// ccc sent no end message: only bbb is known fetched for sure.
	if len(fetched) != 1 || !fetched["bbb"] {
		t.Errorf("fetched %v", fetched)
	}
	if want := []int64{1000, 4000, 4070, 5070}; !equal(seen, want) {
		t.Errorf("progress %v, want %v", seen, want)
	}
	bad := `{"status":"Downloading","progressDetail":{"current":10,"total":50},"id":"bbb"}` +
		`{"errorDetail":{"message":"manifest unknown"},"error":"manifest unknown"}`
	if n, _, err := readPull(strings.NewReader(bad), nil); err == nil || !strings.Contains(err.Error(), "manifest unknown") || n != 10 {
		t.Errorf("error stream: %d, %v", n, err)
	}
}

func equal(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestDrainPush: layers the registry had (already existing, mounted from
// another repository) are not uploaded; progress sums the pushing layers.
func TestDrainPush(t *testing.T) {
	stream := strings.Join([]string{
		`{"status":"The push refers to repository [127.0.0.1:5050/capsule/migrations]"}`,
		`{"status":"Preparing","progressDetail":{},"id":"111111111111"}`,
		`{"status":"Preparing","progressDetail":{},"id":"222222222222"}`,
		`{"status":"Preparing","progressDetail":{},"id":"333333333333"}`,
		`{"status":"Mounted from capsule/busybox","progressDetail":{},"id":"111111111111"}`,
		`{"status":"Layer already exists","progressDetail":{},"id":"222222222222"}`,
		`{"status":"Pushing","progressDetail":{"current":512,"total":2048},"id":"333333333333"}`,
		`{"status":"Pushing","progressDetail":{"current":2048,"total":2048},"id":"333333333333"}`,
		`{"status":"Pushed","progressDetail":{},"id":"333333333333"}`,
		`{"status":"tag: digest: sha256:beef size: 739"}`,
		`{"progressDetail":{},"aux":{"Tag":"tag","Digest":"sha256:beef","Size":739}}`,
	}, "\n")
	var last int64
	pl, err := drainPush(strings.NewReader(stream), func(n int64) { last = n })
	if err != nil {
		t.Fatal(err)
	}
	if pl.digest != "sha256:beef" || len(pl.uploaded) != 1 || !pl.uploaded["333333333333"] || pl.sent != 2048 || last != 2048 {
		t.Errorf("push log %+v, last progress %d", pl, last)
	}
	if shortID("sha256:333333333333ffff") != "333333333333" {
		t.Errorf("shortID = %q", shortID("sha256:333333333333ffff"))
	}
	if _, err := drainPush(strings.NewReader(`{"status":"Preparing","id":"x"}`), nil); err == nil {
		t.Error("a push without a digest succeeded")
	}
}

// A boot volume's binds (one per top-level directory of its host mount)
// are the server's root, not data a migration's commit misses; any other
// bind is.
func TestUnderRootVolume(t *testing.T) {
	for _, c := range []struct {
		dir, src string
		want     bool
	}{
		{"/var/lib/capsule/volumes/mnt/v1", "/var/lib/capsule/volumes/mnt/v1/usr", true},
		{"/var/lib/capsule/volumes/mnt/v1/", "/var/lib/capsule/volumes/mnt/v1/root", true},
		{"/var/lib/capsule/volumes/mnt/v1", "/var/lib/capsule/volumes/mnt/v1", false},
		{"/var/lib/capsule/volumes/mnt/v1", "/var/lib/capsule/volumes/mnt/v1/usr/lib", false},
		{"/var/lib/capsule/volumes/mnt/v1", "/var/lib/capsule/volumes/mnt/v12/usr", false},
		{"/var/lib/capsule/volumes/mnt/v1", "/srv/data", false},
		{"", "/usr", false},
	} {
		if got := underRootVolume(c.dir, c.src); got != c.want {
			t.Errorf("underRootVolume(%q, %q) = %v, want %v", c.dir, c.src, got, c.want)
		}
	}
}
