// Package userdata turns a server's user data into what Capsule's base
// image init (capsule-init, deploy/images/build-base.sh) runs, for the
// cases cloud-init users rely on most: a "#!" script runs once at first
// boot; a "#cloud-config" document's hostname, users (with
// ssh_authorized_keys), ssh_authorized_keys, write_files, runcmd (first
// boot) and bootcmd (every boot) are applied, and anything else is logged
// to the console as not supported. Images that run real cloud-init read
// the config drive or the metadata service instead and never run these
// scripts. Pure: no I/O.
package userdata

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"path"
	"sort"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Where the agent writes the scripts in the server (Dir) and their names:
// capsule-init runs Boot at every boot and Once at the first boot only
// (marking Done before it runs, so a script that reboots is not run twice).
const (
	Dir  = "/var/lib/capsule/user-data"
	Boot = Dir + "/boot.sh"
	Once = Dir + "/once"
	Done = Dir + "/once.done"
)

// Plan is what the base image does with a server's user data.
type Plan struct {
	// Hostname is the cloud-config's hostname (or fqdn's first label):
	// the agent gives it to the server's UTS namespace, which the server
	// itself may not change. "" keeps the server's own.
	Hostname string
	// Boot runs at every boot (bootcmd); "" for none.
	Boot string
	// Once runs at first boot: the user's own script, or what the
	// cloud-config asks for; "" for none.
	Once string
}

// Parse reads userData (the decoded bytes; empty means none).
func Parse(userData []byte) Plan {
	switch {
	case len(userData) == 0:
		return Plan{}
	case bytes.HasPrefix(userData, []byte("#!")):
		return Plan{Once: string(userData)}
	case firstLine(userData) == "#cloud-config":
		return cloudConfig(userData, "")
	}
	return Plan{Once: script([]string{logLine(fmt.Sprintf("user data of type %q is not supported; ignored", kind(userData)))})}
}

// Decode is Parse of base64 user data as the API stores it.
func Decode(b64 string) (Plan, error) {
	if b64 == "" {
		return Plan{}, nil
	}
	b, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return Plan{}, fmt.Errorf("user data is not base64: %w", err)
	}
	return Parse(b), nil
}

func firstLine(b []byte) string {
	line, _, _ := bytes.Cut(b, []byte("\n"))
	return strings.TrimSpace(string(line))
}

// kind names user data's format for the console log.
func kind(b []byte) string {
	switch {
	case bytes.HasPrefix(b, []byte{0x1f, 0x8b}):
		return "gzip"
	case bytes.HasPrefix(b, []byte("Content-Type: multipart")), bytes.HasPrefix(b, []byte("MIME-Version")):
		return "multipart MIME"
	case bytes.HasPrefix(b, []byte("#")):
		f := strings.Fields(firstLine(b))
		if len(f) > 0 {
			return f[0]
		}
	}
	return "text"
}

// shq quotes s for sh.
func shq(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

func logLine(msg string) string { return "echo " + shq("capsule-init: "+msg) }

func script(lines []string) string {
	return "#!/bin/sh\n# Written by Capsule's agent from the server's user data.\n" + strings.Join(lines, "\n") + "\n"
}

// supported are the cloud-config keys Parse applies.
var supported = map[string]bool{"hostname": true, "fqdn": true, "users": true, "ssh_authorized_keys": true,
	"write_files": true, "runcmd": true, "bootcmd": true}

// cloudConfig applies doc to the files under root ("" in a server; a
// scratch directory in tests): every path the scripts write is "$R"-prefixed.
func cloudConfig(doc []byte, root string) Plan {
	var cfg map[string]any
	if err := yaml.Unmarshal(doc, &cfg); err != nil {
		return Plan{Once: script([]string{logLine("cloud-config is not valid YAML; ignored: " + err.Error())})}
	}
	var p Plan
	var once []string
	var keys []string
	for k := range cfg {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if !supported[k] {
			once = append(once, logLine("cloud-config: "+k+" is not supported; ignored"))
		}
	}
	if h, ok := cfg["hostname"].(string); ok {
		p.Hostname = h
	} else if f, ok := cfg["fqdn"].(string); ok {
		p.Hostname, _, _ = strings.Cut(f, ".")
	}
	if p.Hostname != "" {
		once = append(once, "echo "+shq(p.Hostname)+` > "$R/etc/hostname"`)
	}
	if cmds, ok := cfg["bootcmd"]; ok {
		lines, bad := commands("bootcmd", cmds)
		once = append(once, bad...)
		if len(lines) > 0 {
			p.Boot = script(lines)
		}
	}
	if keys := stringList(cfg["ssh_authorized_keys"]); len(keys) > 0 {
		once = append(once, authorizedKeys("root", keys)...)
	}
	if users, ok := cfg["users"]; ok {
		once = append(once, usersScript(users)...)
	}
	if files, ok := cfg["write_files"]; ok {
		once = append(once, writeFiles(files)...)
	}
	if cmds, ok := cfg["runcmd"]; ok {
		lines, bad := commands("runcmd", cmds)
		once = append(once, bad...)
		once = append(once, lines...)
	}
	if len(once) > 0 {
		p.Once = script(append([]string{"R=" + shq(root), addUserFunc}, once...))
	}
	return p
}

// commands turns a runcmd/bootcmd list into sh lines: a string runs as
// sh would, a list runs as its argv.
func commands(key string, v any) (lines, bad []string) {
	list, ok := v.([]any)
	if !ok {
		return nil, []string{logLine("cloud-config: " + key + " is not a list; ignored")}
	}
	for _, c := range list {
		switch c := c.(type) {
		case string:
			lines = append(lines, c)
		case []any:
			var argv []string
			for _, a := range c {
				argv = append(argv, shq(fmt.Sprint(a)))
			}
			lines = append(lines, strings.Join(argv, " "))
		default:
			bad = append(bad, logLine(fmt.Sprintf("cloud-config: an entry of %s is neither a string nor a list; ignored", key)))
		}
	}
	return lines, bad
}

func stringList(v any) []string {
	var out []string
	switch v := v.(type) {
	case string:
		out = append(out, v)
	case []any:
		for _, s := range v {
			if s, ok := s.(string); ok {
				out = append(out, s)
			}
		}
	}
	return out
}

// addUserFunc defines capsule_adduser NAME SHELL HOME GECOS: useradd or
// adduser where the image has one, else the passwd and group lines
// written directly (Capsule's busybox has neither tool).
const addUserFunc = `capsule_adduser() {
	grep -q "^$1:" "$R/etc/passwd" && return 0
	if [ -z "$R" ] && command -v useradd >/dev/null 2>&1; then useradd -m -s "$2" -d "$3" -c "$4" "$1"; return; fi
	if [ -z "$R" ] && command -v adduser >/dev/null 2>&1 && adduser -D -s "$2" -h "$3" -g "$4" "$1"; then return 0; fi
	uid=1000
	while awk -F: -v u="$uid" '$3==u {f=1} END {exit !f}' "$R/etc/passwd" "$R/etc/group"; do uid=$((uid + 1)); done
	echo "$1:x:$uid:$uid:$4:$3:$2" >> "$R/etc/passwd"
	grep -q "^$1:" "$R/etc/group" || echo "$1:x:$uid:" >> "$R/etc/group"
	if [ -f "$R/etc/shadow" ]; then echo "$1:!:1::::::" >> "$R/etc/shadow"; fi
	mkdir -p "$R$3" && chown "$uid:$uid" "$R$3"
}`

// authorizedKeys appends keys to user's authorized_keys (0700/0600,
// owned by the user).
func authorizedKeys(user string, keys []string) []string {
	var b strings.Builder
	for _, k := range keys {
		b.WriteString(strings.TrimSpace(k) + "\n")
	}
	u := shq(user)
	return []string{
		"home=$(awk -F: -v u=" + u + ` '$1==u {print $6}' "$R/etc/passwd")`,
		`if [ -n "$home" ]; then`,
		`	mkdir -p "$R$home/.ssh" && chmod 700 "$R$home/.ssh"`,
		"	echo " + shq(base64.StdEncoding.EncodeToString([]byte(b.String()))) + ` | base64 -d >> "$R$home/.ssh/authorized_keys"`,
		`	chmod 600 "$R$home/.ssh/authorized_keys"`,
		"	chown -R " + u + `: "$R$home/.ssh" 2>/dev/null || chown -R ` + u + ` "$R$home/.ssh"`,
		"else " + logLine("cloud-config: no home for user "+user) + "; fi",
	}
}

func usersScript(v any) []string {
	list, ok := v.([]any)
	if !ok {
		return []string{logLine("cloud-config: users is not a list; ignored")}
	}
	var out []string
	for _, u := range list {
		switch u := u.(type) {
		case string:
			if u != "default" {
				out = append(out, "capsule_adduser "+shq(u)+" /bin/sh "+shq("/home/"+u)+" ''")
			}
		case map[string]any:
			name, _ := u["name"].(string)
			if name == "" {
				out = append(out, logLine("cloud-config: a user without a name; ignored"))
				continue
			}
			shell, home, gecos := "/bin/sh", "/home/"+name, ""
			if name == "root" {
				home = "/root"
			}
			var keys []string
			var other []string
			for k, val := range u {
				switch k {
				case "name":
				case "shell":
					shell = fmt.Sprint(val)
				case "homedir":
					home = fmt.Sprint(val)
				case "gecos":
					gecos = fmt.Sprint(val)
				case "ssh_authorized_keys", "ssh-authorized-keys":
					keys = stringList(val)
				default:
					other = append(other, k)
				}
			}
			sort.Strings(other)
			for _, k := range other {
				out = append(out, logLine("cloud-config: users: "+k+" (user "+name+") is not supported; ignored"))
			}
			out = append(out, "capsule_adduser "+shq(name)+" "+shq(shell)+" "+shq(home)+" "+shq(gecos))
			if len(keys) > 0 {
				out = append(out, authorizedKeys(name, keys)...)
			}
		default:
			out = append(out, logLine("cloud-config: a users entry is neither a name nor a mapping; ignored"))
		}
	}
	return out
}

func writeFiles(v any) []string {
	list, ok := v.([]any)
	if !ok {
		return []string{logLine("cloud-config: write_files is not a list; ignored")}
	}
	var out []string
	for _, f := range list {
		m, ok := f.(map[string]any)
		if !ok {
			out = append(out, logLine("cloud-config: a write_files entry is not a mapping; ignored"))
			continue
		}
		p, _ := m["path"].(string)
		if p == "" || !path.IsAbs(p) {
			out = append(out, logLine("cloud-config: write_files: an entry without an absolute path; ignored"))
			continue
		}
		content := []byte(fmt.Sprint(orEmpty(m["content"])))
		switch enc, _ := m["encoding"].(string); enc {
		case "", "text/plain":
		case "b64", "base64":
			b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(content)))
			if err != nil {
				out = append(out, logLine("cloud-config: write_files: "+p+": content is not base64; ignored"))
				continue
			}
			content = b
		default:
			out = append(out, logLine("cloud-config: write_files: "+p+": encoding "+enc+" is not supported; ignored"))
			continue
		}
		redirect := ">"
		if a, _ := m["append"].(bool); a {
			redirect = ">>"
		}
		qp := `"$R"` + shq(p)
		out = append(out, "mkdir -p \"$(dirname "+qp+")\"",
			"echo "+shq(base64.StdEncoding.EncodeToString(content))+" | base64 -d "+redirect+" "+qp)
		if perm, ok := m["permissions"]; ok {
			s := fmt.Sprint(perm)
			if n, ok := perm.(int); ok {
				s = strconv.FormatInt(int64(n), 8) // YAML read 0644 as an octal number
			}
			out = append(out, "chmod "+shq(strings.TrimPrefix(s, "0o"))+" "+qp)
		}
		if owner, ok := m["owner"].(string); ok && owner != "" {
			out = append(out, "chown "+shq(owner)+" "+qp)
		}
		for _, k := range []string{"defer", "source"} {
			if _, ok := m[k]; ok {
				out = append(out, logLine("cloud-config: write_files: "+k+" is not supported; ignored"))
			}
		}
	}
	return out
}

func orEmpty(v any) any {
	if v == nil {
		return ""
	}
	return v
}
