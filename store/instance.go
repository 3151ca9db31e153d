package store

import "strings"

// TriedHostList returns the hosts a build of the instance already failed
// on (the TriedHosts column, comma separated).
func (i *Instance) TriedHostList() []string {
	var out []string
	for _, h := range strings.Split(i.TriedHosts, ",") {
		if h = strings.TrimSpace(h); h != "" {
			out = append(out, h)
		}
	}
	return out
}
