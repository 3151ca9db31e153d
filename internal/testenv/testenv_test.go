package testenv

import (
	"fmt"
	"runtime"
	"testing"
)

// Require skips on a developer's machine and fails under CI's
// CAPSULE_TEST_REQUIRE=1; a present component does neither.
func TestRequire(t *testing.T) {
	for _, c := range []struct {
		require         string
		ok              bool
		skipped, failed bool
	}{
		{"", true, false, false},
		{"", false, true, false},
		{"1", true, false, false},
		{"1", false, false, true},
	} {
		t.Setenv("CAPSULE_TEST_REQUIRE", c.require)
		rec := &recorder{}
		done := make(chan struct{})
		go func() { // Skip and Fatal end their goroutine
			defer close(done)
			Require(rec, c.ok, "thing %s missing", "x")
		}()
		<-done
		if rec.skipped != c.skipped || rec.failed != c.failed {
			t.Errorf("REQUIRE=%q ok=%v: skipped %v failed %v, want %v %v", c.require, c.ok, rec.skipped, rec.failed, c.skipped, c.failed)
		}
		if !c.ok && rec.msg == "" {
			t.Errorf("REQUIRE=%q: no message", c.require)
		}
	}
}

func TestEnv(t *testing.T) {
	t.Setenv("CAPSULE_TEST_SOMETHING", "v")
	if got := Env(t, "CAPSULE_TEST_SOMETHING", "something"); got != "v" {
		t.Errorf("Env = %q", got)
	}
}

// recorder is a testing.TB that records a Skip or Fatal instead of acting.
type recorder struct {
	testing.TB
	skipped, failed bool
	msg             string
}

func (r *recorder) Helper() {}
func (r *recorder) Skip(args ...any) {
	r.skipped, r.msg = true, fmt.Sprint(args...)
	runtime.Goexit()
}
func (r *recorder) Fatalf(format string, args ...any) {
	r.failed, r.msg = true, fmt.Sprintf(format, args...)
	runtime.Goexit()
}
