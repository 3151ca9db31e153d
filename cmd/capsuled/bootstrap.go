package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/capsule-cloud/capsule/api-server/identity"
	"github.com/capsule-cloud/capsule/api-server/image"
	"github.com/capsule-cloud/capsule/config"
	"github.com/capsule-cloud/capsule/registry"
	"github.com/capsule-cloud/capsule/store"
)

// defaultFlavors are the all-in-one's flavors; ids are Nova's classic ones.
var defaultFlavors = []store.Flavor{
	{FlavorID: "1", Name: "m1.tiny", VCPUs: 1, MemoryMB: 128, RootGB: 1},
	{FlavorID: "2", Name: "m1.small", VCPUs: 1, MemoryMB: 512, RootGB: 5},
	{FlavorID: "3", Name: "m1.medium", VCPUs: 2, MemoryMB: 1024, RootGB: 10},
}

type imageFlags []string

func (f *imageFlags) String() string     { return strings.Join(*f, ",") }
func (f *imageFlags) Set(v string) error { *f = append(*f, v); return nil }

// bootstrap creates what a new cloud needs; running it again changes
// nothing but passwords given anew.
func bootstrap(ctx context.Context, cfg config.Config, args []string, log *slog.Logger) error {
	fs := flag.NewFlagSet("bootstrap", flag.ContinueOnError)
	// The passwords come from the environment: a command line is
	// readable by every user of the host (ps). The flags stay for tests.
	adminPass := fs.String("admin-password", os.Getenv("CAPSULE_ADMIN_PASSWORD"),
		"password of user admin (required; default $CAPSULE_ADMIN_PASSWORD, prefer it: ps shows flags)")
	demoPass := fs.String("demo-password", os.Getenv("CAPSULE_DEMO_PASSWORD"),
		"password of user demo (required; default $CAPSULE_DEMO_PASSWORD, prefer it: ps shows flags)")
	var images imageFlags
	fs.Var(&images, "image", "NAME=REGISTRY_REF of a public base image (repeatable)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *adminPass == "" || *demoPass == "" {
		return errors.New("bootstrap: CAPSULE_ADMIN_PASSWORD and CAPSULE_DEMO_PASSWORD (or -admin-password and -demo-password) are required")
	}
	st, err := store.Open(ctx, cfg.Database.Driver, cfg.Database.DSN)
	if err != nil {
		return err
	}
	defer st.Close()

	for _, r := range []string{"admin", "member", "reader"} {
		if _, err := identity.EnsureRole(ctx, st, r); err != nil {
			return err
		}
	}
	type account struct{ user, pass, project, role string }
	for _, a := range []account{{"admin", *adminPass, "admin", "admin"}, {"demo", *demoPass, "demo", "member"}} {
		p, err := identity.EnsureProject(ctx, st, a.project, a.project+" project")
		if err != nil {
			return err
		}
		u, err := identity.EnsureUser(ctx, st, a.user, a.pass, p.ID, cfg.API.PasswordHashRounds)
		if err != nil {
			return err
		}
		roles := []string{a.role}
		if a.role == "admin" {
			roles = append(roles, "member", "reader")
		} else {
			roles = append(roles, "reader")
		}
		for _, r := range roles {
			if err := identity.Grant(ctx, st, u.ID, p.ID, r); err != nil {
				return err
			}
		}
	}
	if _, err := identity.EnsureProject(ctx, st, "service", "service project"); err != nil {
		return err
	}
	for _, f := range defaultFlavors {
		var n int64
		if err := st.WithContext(ctx).Model(&store.Flavor{}).Where("deleted = ? AND (flavor_id = ? OR name = ?)", false, f.FlavorID, f.Name).Count(&n).Error; err != nil {
			return fmt.Errorf("bootstrap flavors: %w", err)
		}
		if n > 0 {
			continue
		}
		f.RxtxFactor, f.IsPublic = 1.0, true
		if err := st.WithContext(ctx).Create(&f).Error; err != nil {
			return fmt.Errorf("bootstrap flavor %s: %w", f.Name, err)
		}
	}
	admin, err := identity.EnsureProject(ctx, st, "admin", "admin project")
	if err != nil {
		return err
	}
	for _, spec := range images {
		name, ref, ok := strings.Cut(spec, "=")
		if !ok || name == "" || ref == "" {
			return fmt.Errorf("bootstrap: bad -image %q, want NAME=REGISTRY_REF", spec)
		}
		// The size is informative (Glance's "size"); an unreachable
		// registry must not stop the bootstrap.
		size, err := registry.New(cfg.Registry).ImageSize(ctx, ref)
		if err != nil {
			log.Warn("image size unknown", "image", ref, "error", err)
		}
		if _, err := image.Register(ctx, st, name, ref, size, admin.ID, true); err != nil {
			return err
		}
	}
	log.Info("bootstrap done", "flavors", len(defaultFlavors), "images", len(images))
	return nil
}
