package fake_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/capsule-cloud/capsule/drivers"
	"github.com/capsule-cloud/capsule/drivers/drivertest"
	"github.com/capsule-cloud/capsule/drivers/fake"
)

func TestConformance(t *testing.T) {
	drivertest.Run(t, func(t *testing.T) drivers.Driver { return fake.New() }, "example/busybox:latest",
		drivertest.WithFileReader(func(t *testing.T, d drivers.Driver, id, path string) string {
			in, ok := d.(*fake.Driver).Get(id)
			if !ok {
				t.Fatalf("instance %s not found", id)
			}
			return in.Files[path]
		}))
}

func TestFailCreate(t *testing.T) {
	d := fake.New()
	boom := errors.New("boom")
	d.FailCreate = func(spec drivers.Spec) error {
		if spec.Name == "bad" {
			return boom
		}
		return nil
	}
	spec := drivertest.Spec("img")
	spec.Name = "bad"
	if err := d.Create(context.Background(), spec); !errors.Is(err, boom) {
		t.Fatalf("create: %v, want boom", err)
	}
	if _, ok := d.Get(spec.ID); ok {
		t.Fatal("failed create left an instance")
	}
	spec.Name = "good"
	if err := d.Create(context.Background(), spec); err != nil {
		t.Fatalf("create: %v", err)
	}
	in, ok := d.Get(spec.ID)
	if !ok || in.Spec.PidsLimit != spec.PidsLimit || in.Power != drivers.PowerShutdown {
		t.Fatalf("instance = %+v, %v", in, ok)
	}
	if got := d.Calls(fake.OpCreate); got != 2 {
		t.Errorf("create calls = %d, want 2", got)
	}
}

func TestFailHookAndCrash(t *testing.T) {
	d := fake.New()
	ctx := context.Background()
	spec := drivertest.Spec("img")
	if err := d.Create(ctx, spec); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("dockerd down")
	d.SetFail(func(op fake.Op, id string) error {
		if op == fake.OpStart && id == spec.ID {
			return boom
		}
		return nil
	})
	if err := d.Start(ctx, spec.ID); !errors.Is(err, boom) {
		t.Fatalf("start: %v, want injected error", err)
	}
	d.SetFail(nil)
	if err := d.Start(ctx, spec.ID); err != nil {
		t.Fatal(err)
	}
	if err := d.Crash(spec.ID, 137); err != nil {
		t.Fatal(err)
	}
	st, err := d.Status(ctx, spec.ID)
	if err != nil || st.Power != drivers.PowerCrashed || st.ExitCode != 137 {
		t.Fatalf("status after crash = %+v, %v", st, err)
	}
	out, _ := d.ConsoleOutput(ctx, spec.ID, -1)
	if !strings.Contains(out, "ready") {
		t.Errorf("console = %q", out)
	}
}

func TestDelayHonoursContext(t *testing.T) {
	d := fake.New()
	d.Delay = time.Hour
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := d.List(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("list: %v, want deadline exceeded", err)
	}
}
