package docker

import (
	"archive/tar"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"
)

func TestAuthorizedKeysTar(t *testing.T) {
	for _, withRoot := range []bool{false, true} {
		r, err := authorizedKeysTar("ssh-rsa AAAA k", withRoot, time.Unix(0, 0))
		if err != nil {
			t.Fatal(err)
		}
		tr := tar.NewReader(r)
		var got []string
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(tr)
			got = append(got, fmt.Sprintf("%s %o %d:%d %q", h.Name, h.Mode, h.Uid, h.Gid, body))
		}
		want := []string{`root/.ssh/ 700 0:0 ""`, `root/.ssh/authorized_keys 600 0:0 "ssh-rsa AAAA k\n"`}
		if withRoot {
			want = append([]string{`root/ 700 0:0 ""`}, want...)
		}
		if strings.Join(got, "|") != strings.Join(want, "|") {
			t.Errorf("withRoot=%v: tar = %q, want %q", withRoot, got, want)
		}
	}
}
