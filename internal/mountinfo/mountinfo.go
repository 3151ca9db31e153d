// Package mountinfo reads a mount table in the format of
// /proc/<pid>/mountinfo (proc(5)): the one parser for finding where the
// cgroup hierarchies are mounted, which mount holds a directory, and
// what is mounted below one.
package mountinfo

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Self is the mount table of this process's mount namespace.
const Self = "/proc/self/mountinfo"

// Mount is one line of a mountinfo file.
type Mount struct {
	Device     string // major:minor of the file system (st_dev); 0:N is anonymous (tmpfs, overlay, ...)
	Root       string // the directory of the file system seen at the mount point
	MountPoint string
	FSType     string   // e.g. ext4, cgroup, cgroup2
	Source     string   // file-system specific, e.g. /dev/vda1
	Super      []string // super block options (a v1 cgroup's controllers are among them)
}

// Read parses the mount table in file. Lines that do not have the
// format are skipped; paths are unescaped (\040 is a space).
func Read(file string) ([]Mount, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("read mounts: %w", err)
	}
	defer f.Close()
	var out []Mount
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		// id parent major:minor root mountpoint opts [optional...] - fstype source superopts
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		pf, sf := strings.Fields(pre), strings.Fields(post)
		if len(pf) < 5 || len(sf) < 1 {
			continue
		}
		m := Mount{Device: pf[2], Root: unescape(pf[3]), MountPoint: unescape(pf[4]), FSType: sf[0]}
		if len(sf) > 1 {
			m.Source = unescape(sf[1])
		}
		if len(sf) > 2 {
			m.Super = strings.Split(sf[2], ",")
		}
		out = append(out, m)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", file, err)
	}
	return out, nil
}

// Holding returns the mount that holds path: the one with the longest
// mount point containing it, the last of those when several are mounted
// on the same point (a later mount hides an earlier one).
func Holding(mounts []Mount, path string) (Mount, bool) {
	best, found := -1, Mount{}
	for _, m := range mounts {
		if !Within(path, m.MountPoint) || len(m.MountPoint) < best {
			continue
		}
		best, found = len(m.MountPoint), m
	}
	return found, best >= 0
}

// Within reports whether path is dir or below it.
func Within(path, dir string) bool {
	if dir == "/" {
		return true
	}
	return path == dir || strings.HasPrefix(path, dir+"/")
}

// unescape undoes mountinfo's octal escapes (\040 for a space...).
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
