package docker

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/capsule-cloud/capsule/errdefs"
)

func TestShadowCacheKeyedByImageID(t *testing.T) {
	var c shadowCache
	if _, ok := c.get("sha256:a"); ok {
		t.Fatal("an empty cache has an entry")
	}
	present := imageShadow{present: true, content: []byte("root:*:1:0:99999:7:::\n"), mode: 0o640, gid: 42}
	absent := imageShadow{reason: "the server's image has no /etc/shadow to hold a root password"}
	c.put("sha256:a", present)
	c.put("sha256:b", absent)
	c.put("", present) // no ID: nothing to key it by
	if c.len() != 2 {
		t.Errorf("%d images cached, want 2", c.len())
	}
	got, ok := c.get("sha256:a")
	if !ok || !got.present || !bytes.Equal(got.content, present.content) || got.mode != 0o640 || got.gid != 42 {
		t.Errorf("sha256:a = %+v %v, want %+v", got, ok, present)
	}
	got, ok = c.get("sha256:b")
	if !ok || got.present || got.reason != absent.reason {
		t.Errorf("sha256:b = %+v %v, want absent", got, ok)
	}
	// Another image ID (a tag that moved) is another entry.
	if _, ok := c.get("sha256:c"); ok {
		t.Error("sha256:c is cached")
	}
	c.put("sha256:a", absent)
	if got, _ := c.get("sha256:a"); got.present {
		t.Error("a put again did not replace the entry")
	}
}

func TestShadowCacheBounded(t *testing.T) {
	var c shadowCache
	id := func(i int) string { return fmt.Sprintf("sha256:%064d", i) }
	for i := range shadowCacheImages {
		c.put(id(i), imageShadow{present: true, content: []byte("root:*:1::::::\n")})
	}
	// 0 is used: 1 is now the least recently used.
	if _, ok := c.get(id(0)); !ok {
		t.Fatal("image 0 not cached")
	}
	c.put(id(shadowCacheImages), imageShadow{})
	if c.len() != shadowCacheImages {
		t.Errorf("%d images cached, want at most %d", c.len(), shadowCacheImages)
	}
	if _, ok := c.get(id(1)); ok {
		t.Error("the least recently used image is still cached")
	}
	for _, i := range []int{0, 2, shadowCacheImages} {
		if _, ok := c.get(id(i)); !ok {
			t.Errorf("image %d was dropped", i)
		}
	}
}

func TestShadowCacheSkipsOversizedFiles(t *testing.T) {
	var c shadowCache
	big := []byte("root:*:1:0:99999:7:::\n" + strings.Repeat("u:*:1:0:99999:7:::\n", shadowCacheMaxBytes/19+1))
	c.put("sha256:big", imageShadow{present: true, content: big})
	if _, ok := c.get("sha256:big"); ok {
		t.Errorf("a %d-byte /etc/shadow was cached (limit %d)", len(big), shadowCacheMaxBytes)
	}
	c.put("sha256:edge", imageShadow{present: true, content: big[:shadowCacheMaxBytes]})
	if _, ok := c.get("sha256:edge"); !ok {
		t.Error("a file of exactly the limit was not cached")
	}
}

func TestRootPasswordFile(t *testing.T) {
	sh := imageShadow{present: true, content: []byte("root:*:1:0:99999:7:::\nbin:*:1:0:99999:7:::\n"), mode: 0o640, uid: 0, gid: 42}
	f, err := rootPasswordFile(sh, "$6$s$h")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(f.content), "root:$6$s$h:") || !strings.HasSuffix(string(f.content), "bin:*:1:0:99999:7:::\n") ||
		f.path != "/etc/shadow" || f.mode != 0o640 || f.gid != 42 {
		t.Errorf("file = %+v %q", f, f.content)
	}
	if !strings.HasPrefix(string(sh.content), "root:*:") {
		t.Errorf("the cached content was changed: %q", sh.content)
	}
	for _, bad := range []imageShadow{
		{reason: "the server's image has no /etc/shadow to hold a root password"},
		{present: true, content: []byte("bin:*:1:0:99999:7:::\n")},
	} {
		if _, err := rootPasswordFile(bad, "$6$s$h"); !errors.Is(err, errdefs.ErrNotSupported) {
			t.Errorf("%+v: %v, want NotSupported", bad, err)
		}
	}
}
