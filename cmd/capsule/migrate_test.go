package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/migrations"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"
	"github.com/gophercloud/gophercloud/v2/pagination"
)

func TestParseInterspersed(t *testing.T) {
	for _, c := range []struct {
		args []string
		pos  string
		host string
		wait bool
	}{
		{[]string{"vm1", "--host", "h2", "--wait"}, "vm1", "h2", true},
		{[]string{"--wait", "vm1"}, "vm1", "", true},
		{[]string{"vm1", "m1.big", "--wait"}, "vm1,m1.big", "", true},
		{[]string{"--host=h3", "vm1", "--", "--odd-name"}, "vm1,--odd-name", "h3", false},
		{nil, "", "", false},
	} {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		host := fs.String("host", "", "")
		wait := fs.Bool("wait", false, "")
		pos, err := parseInterspersed(fs, c.args)
		if err != nil {
			t.Fatalf("%v: %v", c.args, err)
		}
		if strings.Join(pos, ",") != c.pos || *host != c.host || *wait != c.wait {
			t.Errorf("%v: pos %v host %q wait %v", c.args, pos, *host, *wait)
		}
	}
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	if _, err := parseInterspersed(fs, []string{"vm1", "--nope"}); err == nil {
		t.Error("unknown flag accepted")
	}
}

func TestMigrateBody(t *testing.T) {
	for host, want := range map[string]string{"": `{"migrate":null}`, "h2": `{"migrate":{"host":"h2"}}`} {
		b, _ := json.Marshal(migrateBody(host))
		if string(b) != want {
			t.Errorf("host %q: %s, want %s", host, b, want)
		}
	}
}

func TestVerdict(t *testing.T) {
	for _, c := range []struct {
		goal         waitGoal
		status, task string
		done, failed bool
	}{
		{goalVerify, "RESIZE", "resize_migrating", false, false},
		{goalVerify, "VERIFY_RESIZE", "", true, false},
		{goalVerify, "ACTIVE", "", false, true}, // rolled back
		{goalVerify, "SHUTOFF", "", false, true},
		{goalVerify, "ERROR", "", false, true},
		{goalVerify, "ACTIVE", "resize_prep", false, false},
		{goalSettled, "VERIFY_RESIZE", "resize_confirming", false, false},
		{goalSettled, "REVERT_RESIZE", "resize_reverting", false, false},
		{goalSettled, "ACTIVE", "", true, false},
		{goalSettled, "SHUTOFF", "", true, false},
		{goalSettled, "ERROR", "", false, true},
	} {
		done, failed := verdict(c.goal, serverState{Status: c.status, Task: c.task})
		if done != c.done || failed != c.failed {
			t.Errorf("goal %d %s/%s: done %v failed %v", c.goal, c.status, c.task, done, failed)
		}
	}
}

func TestProgressLine(t *testing.T) {
	for _, c := range []struct {
		st   serverState
		want string
	}{
		{serverState{Status: "RESIZE", Task: "resize_prep"}, "RESIZE (resize_prep)"},
		{serverState{Status: "RESIZE", Task: "resize_prep", Mig: &serverMigration{Status: "pre-migrating", SourceCompute: "h1"}},
			"RESIZE (resize_prep)  pre-migrating (scheduling)  h1 → ?"},
		{serverState{Status: "RESIZE", Task: "resize_migrating", Mig: &serverMigration{Status: "migrating", SourceCompute: "h1",
			DestCompute: "h2", DiskTotal: 40 << 20, DiskProcessed: 10 << 20}},
			"RESIZE (resize_migrating)  migrating (push)  h1 → h2  pushed 10.0 MiB of 40.0 MiB (25%)"},
		{serverState{Status: "RESIZE", Task: "resize_finish", Mig: &serverMigration{Status: "post-migrating", SourceCompute: "h1",
			DestCompute: "h2", DiskTotal: 2048, DiskProcessed: 2048}},
			"RESIZE (resize_finish)  post-migrating (pull)  h1 → h2  pulled 2.0 KiB of 2.0 KiB (100%)"},
		{serverState{Status: "VERIFY_RESIZE", Mig: &serverMigration{Status: "finished", SourceCompute: "h1", DestCompute: "h2"}},
			"VERIFY_RESIZE  finished  h1 → h2"},
	} {
		if got := progressLine(c.st); got != c.want {
			t.Errorf("got  %q\nwant %q", got, c.want)
		}
	}
}

func TestHumanBytes(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 1536: "1.5 KiB", 5 << 30: "5.0 GiB"} {
		if got := humanBytes(n); got != want {
			t.Errorf("%d: %q, want %q", n, got, want)
		}
	}
}

func TestProgressPlainAndTTY(t *testing.T) {
	var buf bytes.Buffer
	p := &progress{w: &buf}
	for _, l := range []string{"a", "a", "b"} {
		p.show(l)
	}
	p.end()
	if buf.String() != "a\nb\n" {
		t.Errorf("plain output %q", buf.String())
	}
	buf.Reset()
	p = &progress{w: &buf, tty: true}
	p.show("a")
	p.show("b")
	p.end()
	if buf.String() != "\r\033[Ka\r\033[Kb\n" {
		t.Errorf("tty output %q", buf.String())
	}
	var nilp *progress
	nilp.show("x") // evacuations wait without a progress line
	nilp.end()
}

func TestEvacuationTableAndMigrationRows(t *testing.T) {
	evs := []evacuation{
		{ID: "s1", Name: "web", From: "h1", To: "h2", Result: "migrated (ACTIVE)"},
		{ID: "s2", Name: "db", From: "h1", Result: "failed: boom", Failed: true},
	}
	if n := failures(evs); n != 1 {
		t.Errorf("failures = %d", n)
	}
	rows := evacuationRows(evs)
	if len(rows) != 2 || len(rows[0]) != len(evacuationHeaders) || rows[1][4] != "failed: boom" {
		t.Errorf("rows %v", rows)
	}
	at := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	mr := migrationRows([]migrations.Migration{{ID: 7, UUID: "u", InstanceID: "s1", MigrationType: "migration", Status: "finished",
		SourceCompute: "h1", DestCompute: "h2", CreatedAt: at, UpdatedAt: at}})
	want := []string{"7", "u", "s1", "migration", "finished", "h1", "h2", "2026-03-01T10:00:00Z", "2026-03-01T10:00:00Z"}
	if len(mr) != 1 || strings.Join(mr[0], ",") != strings.Join(want, ",") || len(want) != len(migrationHeaders) {
		t.Errorf("migration rows %v", mr)
	}
}

func TestLooksLikeUUID(t *testing.T) {
	if !looksLikeUUID("0f8e8d3a-1b2c-4d5e-8f90-123456789abc") || looksLikeUUID("web-1") || looksLikeUUID("0f8e8d3a-1b2c-4d5e-8f90-123456789abz") {
		t.Error("looksLikeUUID")
	}
}

func TestServerExtDecodesHost(t *testing.T) {
	var s serverExt
	if err := json.Unmarshal([]byte(`{"id":"s1","name":"web","status":"ACTIVE","OS-EXT-SRV-ATTR:host":"h2","OS-EXT-STS:task_state":null}`), &s); err != nil {
		t.Fatal(err)
	}
	if s.ID != "s1" || s.Name != "web" || s.Host != "h2" || s.TaskState != "" {
		t.Errorf("decoded %+v", s)
	}
	var list []serverExt
	if err := json.Unmarshal([]byte(`[{"id":"a","OS-EXT-SRV-ATTR:host":null},{"id":"b","OS-EXT-SRV-ATTR:host":"h1"}]`), &list); err != nil {
		t.Fatal(err)
	}
	if list[0].Host != "" || list[1].Host != "h1" {
		t.Errorf("list %+v", list)
	}
}

func TestExtractServersKeepsHost(t *testing.T) {
	var body any
	if err := json.Unmarshal([]byte(`{"servers":[{"id":"a","name":"web","OS-EXT-SRV-ATTR:host":"h1"},{"id":"b","OS-EXT-SRV-ATTR:host":null}]}`), &body); err != nil {
		t.Fatal(err)
	}
	page := servers.ServerPage{LinkedPageBase: pagination.LinkedPageBase{PageResult: pagination.PageResult{Result: gophercloud.Result{Body: body}}}}
	list, err := extractServers(page)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].ID != "a" || list[0].Name != "web" || list[0].Host != "h1" || list[1].Host != "" {
		t.Errorf("servers %+v", list)
	}
}
