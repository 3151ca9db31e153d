package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"text/tabwriter"

	"github.com/capsule-cloud/capsule/rescue"
)

const rescueUsage = `usage: capsule rescue-data SERVER --to DIR [--data-root DIR]
       capsule rescue-data --list [--data-root DIR]
Copies a server's files (image layers + writable layer, merged as the server
saw them, and its Docker volumes under DIR/.capsule-volumes) straight from
Docker's data root: dockerd may be stopped or unable to start. SERVER is the
server's UUID, its name, or a container ID prefix. DIR must not exist or be
empty; it is made 0700. A manifest is written to DIR/.capsule-rescue.json.
`

// rescueData implements `capsule rescue-data`: offline, no credentials.
func rescueData(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("rescue-data", flag.ContinueOnError)
	to := fs.String("to", "", "destination directory (must not exist or be empty)")
	dataRoot := fs.String("data-root", defaultDataRoot(), "Docker's data root (Capsule's dockerd, or /var/lib/docker)")
	list := fs.Bool("list", false, "list the servers found in the data root and exit")
	fs.Usage = func() { fmt.Fprint(os.Stderr, rescueUsage); fs.PrintDefaults() }
	pos, err := parseInterspersed(fs, args) // cmd/capsule/migrate.go
	if err != nil {
		return err
	}
	if *list {
		return rescueList(*dataRoot)
	}
	if len(pos) != 1 || *to == "" {
		fs.Usage()
		return errors.New("rescue-data needs one SERVER and --to DIR")
	}
	dest, err := filepath.Abs(*to)
	if err != nil {
		return fmt.Errorf("destination: %w", err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	m, err := rescue.Rescue(ctx, rescue.Options{DataRoot: *dataRoot, Server: pos[0], To: dest, Log: log})
	if err != nil {
		if m != nil {
			fmt.Fprintf(os.Stderr, "incomplete: %d bytes copied so far into %s (see %s)\n", m.BytesCopied, dest, rescue.ManifestName)
		}
		return err
	}
	fmt.Printf("rescued server %s (%s), container %.12s: %d files, %d bytes", safe(orDash(m.Server)), safe(orDash(m.Name)),
		safe(m.ContainerID), m.Root.Files, m.BytesCopied)
	if len(m.Volumes) > 0 {
		fmt.Printf(", %d volume(s) under %s", len(m.Volumes), filepath.Join(dest, rescue.VolumesDir))
	}
	fmt.Printf("\ninto %s (manifest %s)\n", dest, filepath.Join(dest, rescue.ManifestName))
	if n := m.Root.Skipped; n > 0 {
		fmt.Printf("%d entries not reproduced (see warnings in the manifest)\n", n)
	}
	for _, nc := range m.NotCopied {
		fmt.Println("not copied:", safe(fmt.Sprint(nc)))
	}
	if n := m.ReadErrors(); n > 0 {
		// Everything readable was copied; a script must still notice.
		return fmt.Errorf("%d entries could not be read from the layers (damaged disk?): see the warnings in %s", n, filepath.Join(dest, rescue.ManifestName))
	}
	return nil
}

// rescueList prints the workload containers of the data root.
func rescueList(dataRoot string) error {
	cs, err := rescue.Containers(dataRoot)
	if err != nil {
		return err
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "SERVER\tNAME\tCONTAINER\tSTATE\tIMAGE")
	for _, c := range cs {
		if c.Role == rescue.RoleSandbox {
			continue // part of its server; nothing of the tenant's in it
		}
		// Names and images are the tenant's: no terminal controls.
		fmt.Fprintf(w, "%s\t%s\t%.12s\t%s\t%s\n", safe(orDash(c.InstanceID)), safe(orDash(c.ServerName)), safe(c.ID),
			safe(c.State), safe(orDash(c.Image)))
	}
	return w.Flush()
}

// defaultDataRoot is Capsule's dockerd data root, honouring CAPSULE_LIB
// as deploy/lib.sh does.
func defaultDataRoot() string {
	if lib := os.Getenv("CAPSULE_LIB"); lib != "" {
		return filepath.Join(lib, "docker")
	}
	return rescue.DefaultDataRoot
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
