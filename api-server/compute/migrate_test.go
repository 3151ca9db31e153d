package compute

import (
	"context"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/capsule-cloud/capsule/bus"
	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/migrate"
	"github.com/capsule-cloud/capsule/store"
	"gorm.io/gorm"
)

// fakeMigrator records package migrate's calls and answers with what the
// test set, standing in for the conductor's engine.
type fakeMigrator struct {
	mu       sync.Mutex
	begins   []migrate.BeginRequest
	finishes []string // "confirm <id>" / "revert <id>"
	kicks    []uint
	beginErr error
	pending  *store.Migration // nil: ErrNoPending
}

func (m *fakeMigrator) Begin(ctx context.Context, st *store.Store, req migrate.BeginRequest) (*store.Migration, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if req.Guard != nil {
		// As migrate.Begin: the guard runs in the recording transaction.
		if err := st.WithContext(ctx).Transaction(func(tx *gorm.DB) error { return req.Guard(tx) }); err != nil {
			return nil, err
		}
	}
	m.begins = append(m.begins, req)
	if m.beginErr != nil {
		return nil, m.beginErr
	}
	return &store.Migration{ID: 41, InstanceID: req.Instance.ID}, nil
}

func (m *fakeMigrator) Pending(_ context.Context, _ *store.Store, id string) (*store.Migration, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.pending == nil || m.pending.InstanceID != id {
		return nil, migrate.ErrNoPending
	}
	return m.pending, nil
}

func (m *fakeMigrator) finish(what string, inst *store.Instance) (*store.Migration, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.finishes = append(m.finishes, what+" "+inst.ID)
	return m.pending, nil
}

func (m *fakeMigrator) Confirm(_ context.Context, _ *store.Store, inst *store.Instance, _ migrate.Request) (*store.Migration, error) {
	return m.finish("confirm", inst)
}

func (m *fakeMigrator) Revert(_ context.Context, _ *store.Store, inst *store.Instance, _ migrate.Request) (*store.Migration, error) {
	return m.finish("revert", inst)
}

func (m *fakeMigrator) Kick(_ context.Context, _ bus.Bus, id uint) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.kicks = append(m.kicks, id)
	return nil
}

// newMigrateFixture is newFixture with the engine replaced by fake.
func newMigrateFixture(t *testing.T, fake *fakeMigrator) *fixture {
	t.Helper()
	f := newFixture(t)
	v := stubValidator{
		"demo":  {UserID: "u-demo", ProjectID: "p-demo", Roles: []string{"member", "reader"}},
		"admin": {UserID: "u-admin", ProjectID: "p-admin", Roles: []string{"admin", "member"}, IsAdminProject: true},
	}
	svc := New(f.st, f.bus, Options{PublicHost: "127.0.0.1", ComputePort: 8774, Validator: v, CallTimeout: time.Second})
	svc.mig = fake
	f.srv.Close()
	f.srv = httptest.NewServer(svc.Handler())
	t.Cleanup(f.srv.Close)
	return f
}

// addHost registers compute host h (alive unless down).
func (f *fixture) addHost(h string, disabled, down bool) {
	f.t.Helper()
	beat := time.Now().UTC()
	if down {
		beat = beat.Add(-time.Hour)
	}
	var reason *string
	if disabled {
		r := "maintenance"
		reason = &r
	}
	if err := f.st.DB.Create(&store.Service{UUID: "svc-" + h, Host: h, Binary: store.ComputeBinary, Zone: "nova",
		LastHeartbeat: &beat, Disabled: disabled, DisabledReason: reason, VCPUs: 8, MemoryMB: 8192, DiskGB: 100,
		CPUAllocationRatio: 1, RAMAllocationRatio: 1, DiskAllocationRatio: 1}).Error; err != nil {
		f.t.Fatal(err)
	}
}

// faultOf is the message of a fault body, whatever its name.
func faultOf(body map[string]any) string {
	for _, v := range body {
		if m, ok := v.(map[string]any); ok {
			s, _ := m["message"].(string)
			return s
		}
	}
	return ""
}

func TestMigrateValidation(t *testing.T) {
	fake := &fakeMigrator{}
	f := newMigrateFixture(t, fake)
	id := f.create("demo", "mig")
	f.placeActive(id, 4)
	f.addHost("h2", false, false)
	f.addHost("h3", true, false)
	f.addHost("h4", false, true)
	action := "/v2.1/servers/" + id + "/action"
	mv := func(v string) []string { return []string{"X-OpenStack-Nova-API-Version", v} }

	resp, body := f.do("POST", action, "demo", `{"migrate":null}`)
	expectFault(t, resp, body, 403, "forbidden")
	if !strings.Contains(faultOf(body), "os-migrate-server:migrate") {
		t.Errorf("403 message %q", faultOf(body))
	}
	for _, c := range []struct {
		name, body, version, want string
	}{
		{"host below 2.56", `{"migrate":{"host":"h2"}}`, "2.55", "'host' was unexpected"},
		{"unknown property", `{"migrate":{"force":true}}`, "2.56", "'force' was unexpected"},
		{"not an object", `{"migrate":"h2"}`, "2.56", "is not of type"},
		{"empty host", `{"migrate":{"host":""}}`, "2.56", "host"},
		{"unknown host", `{"migrate":{"host":"nohost"}}`, "2.56", "Compute host nohost could not be found."},
		{"same host", `{"migrate":{"host":"h1"}}`, "2.56", "host where the server exists"},
		{"disabled host", `{"migrate":{"host":"h3"}}`, "2.56", "h3 is disabled (maintenance)"},
		{"down host", `{"migrate":{"host":"h4"}}`, "2.56", "h4 is down"},
	} {
		resp, body := f.do("POST", action, "admin", c.body, mv(c.version)...)
		expectFault(t, resp, body, 400, "badRequest")
		if msg := faultOf(body); !strings.Contains(msg, c.want) {
			t.Errorf("%s: message %q, want it to contain %q", c.name, msg, c.want)
		}
	}
	if len(fake.begins) != 0 {
		t.Fatalf("migrate.Begin called for refused requests: %+v", fake.begins)
	}

	// A state that forbids it: Nova's 409 wording, nothing begun.
	if err := f.st.DB.Model(&store.Instance{}).Where("id = ?", id).Update("vm_state", "paused").Error; err != nil {
		t.Fatal(err)
	}
	resp, body = f.do("POST", action, "admin", `{"migrate":null}`)
	expectFault(t, resp, body, 409, "conflictingRequest")
	if want := "Cannot 'migrate' instance " + id + " while it is in vm_state paused"; faultOf(body) != want {
		t.Errorf("409 message %q, want %q", faultOf(body), want)
	}
	if err := f.st.DB.Model(&store.Instance{}).Where("id = ?", id).Updates(map[string]any{"vm_state": "active", "task_state": "powering-off"}).Error; err != nil {
		t.Fatal(err)
	}
	resp, body = f.do("POST", action, "admin", `{"migrate":null}`)
	expectFault(t, resp, body, 409, "conflictingRequest")
	if len(fake.begins) != 0 {
		t.Fatalf("migrate.Begin called in a wrong state: %+v", fake.begins)
	}
	if err := f.st.DB.Model(&store.Instance{}).Where("id = ?", id).Update("task_state", "").Error; err != nil {
		t.Fatal(err)
	}

	// Valid: null (2.1), {} and a named host (2.56) reach Begin, then Kick.
	for i, c := range []struct{ body, version, host string }{
		{`{"migrate":null}`, "2.1", ""},
		{`{"migrate":{}}`, "2.1", ""},
		{`{"migrate":{"host":null}}`, "2.56", ""},
		{`{"migrate":{"host":"h2"}}`, "2.56", "h2"},
	} {
		resp, body := f.do("POST", action, "admin", c.body, mv(c.version)...)
		if resp.StatusCode != 202 {
			t.Fatalf("%s: %d %v", c.body, resp.StatusCode, body)
		}
		b := fake.begins[i]
		if b.Host != c.host || b.Action != "migrate" || b.NewFlavor != nil || b.Instance.ID != id ||
			b.UserID != "u-admin" || b.RequestID != resp.Header.Get("x-compute-request-id") || b.RequestID == "" {
			t.Errorf("%s: Begin got %+v", c.body, b)
		}
		if len(fake.kicks) != i+1 || fake.kicks[i] != 41 {
			t.Errorf("%s: kicks %v", c.body, fake.kicks)
		}
	}

	// Begin's own refusals map to 409.
	fake.beginErr = &lifecycle.ConflictError{Action: lifecycle.ActMigrate, VM: lifecycle.Active, Task: lifecycle.ResizePrep}
	resp, body = f.do("POST", action, "admin", `{"migrate":null}`)
	expectFault(t, resp, body, 409, "conflictingRequest")
	if !strings.Contains(faultOf(body), "task_state resize_prep") {
		t.Errorf("409 message %q", faultOf(body))
	}
	fake.beginErr = migrate.ErrStateChanged
	resp, body = f.do("POST", action, "admin", `{"migrate":null}`)
	expectFault(t, resp, body, 409, "conflictingRequest")
}

func TestLiveMigrateRefused(t *testing.T) {
	f := newMigrateFixture(t, &fakeMigrator{})
	id := f.create("demo", "lm")
	f.placeActive(id, 4)
	action := "/v2.1/servers/" + id + "/action"
	resp, body := f.do("POST", action, "admin", `{"os-migrateLive":{"host":null,"block_migration":"auto"}}`, "X-OpenStack-Nova-API-Version", "2.30")
	expectFault(t, resp, body, 400, "badRequest")
	if msg := faultOf(body); !strings.Contains(msg, "live migration is not supported") || !strings.Contains(msg, "cold migration") {
		t.Errorf("os-migrateLive message %q", msg)
	}
	resp, body = f.do("POST", action, "demo", `{"os-migrateLive":{"host":null,"block_migration":"auto"}}`)
	expectFault(t, resp, body, 403, "forbidden")
}

// TestResizeWithoutRoomMigrates: a host without room for the new flavor
// turns the resize into a cold migration with that flavor; one with room
// keeps the live path.
func TestResizeWithoutRoomMigrates(t *testing.T) {
	fake := &fakeMigrator{}
	f := newMigrateFixture(t, fake)
	if err := f.st.DB.Create(&store.Flavor{FlavorID: "4", Name: "m1.huge", VCPUs: 8, MemoryMB: 256, RootGB: 1, IsPublic: true, RxtxFactor: 1}).Error; err != nil {
		t.Fatal(err)
	}
	id := f.create("demo", "rs")
	f.placeActive(id, 3)
	action := "/v2.1/servers/" + id + "/action"
	resp, body := f.do("POST", action, "demo", `{"resize":{"flavorRef":"4"}}`)
	if resp.StatusCode != 202 {
		t.Fatalf("resize without room = %d %v", resp.StatusCode, body)
	}
	if len(fake.begins) != 1 {
		t.Fatalf("Begin calls %d", len(fake.begins))
	}
	b := fake.begins[0]
	if b.NewFlavor == nil || b.NewFlavor.FlavorID != "4" || b.Host != "" || b.Action != "resize" || b.UserID != "u-demo" || b.ProjectID != "p-demo" {
		t.Errorf("Begin got %+v", b)
	}
	if len(fake.kicks) != 1 {
		t.Errorf("kicks %v", fake.kicks)
	}
	// The refused live claim left the instance and its claim as they were
	// (Begin, faked here, is what changes them).
	if inst := f.instance(id); inst.FlavorID != "1" || inst.TaskState != "" {
		t.Errorf("instance changed by the live path: flavor %s task %q", inst.FlavorID, inst.TaskState)
	}
	if c := f.claim(id); c.VCPUs != 1 {
		t.Errorf("claim changed: %+v", c)
	}
	if sent := f.bus.Sent(bus.ComputeQueue("h1")); len(sent) != 0 {
		t.Errorf("live resize cast: %v", sent)
	}

	// Quota still applies before anything starts.
	if err := f.st.DB.Create(&store.Flavor{FlavorID: "5", Name: "m1.giant", VCPUs: 64, MemoryMB: 256, RootGB: 1, IsPublic: true, RxtxFactor: 1}).Error; err != nil {
		t.Fatal(err)
	}
	resp, body = f.do("POST", action, "demo", `{"resize":{"flavorRef":"5"}}`)
	expectFault(t, resp, body, 403, "forbidden")

	// With room: the live path, no migration begun.
	if err := f.st.DB.Create(&store.Flavor{FlavorID: "3", Name: "m1.big", VCPUs: 2, MemoryMB: 256, RootGB: 1, IsPublic: true, RxtxFactor: 1}).Error; err != nil {
		t.Fatal(err)
	}
	resp, body = f.do("POST", action, "demo", `{"resize":{"flavorRef":"3"}}`)
	if resp.StatusCode != 202 || len(fake.begins) != 1 {
		t.Fatalf("live resize = %d %v (Begin calls %d)", resp.StatusCode, body, len(fake.begins))
	}
	if sent := f.bus.Sent(bus.ComputeQueue("h1")); len(sent) != 1 {
		t.Errorf("live resize not cast: %v", sent)
	}
}

// TestResizeWithoutRoomReachesEngine runs the fallback against package
// migrate itself: a cold resize recorded with the new flavor, RESIZE
// before the 202.
func TestResizeWithoutRoomReachesEngine(t *testing.T) {
	f := newFixture(t)
	if err := f.st.DB.Create(&store.Flavor{FlavorID: "4", Name: "m1.huge", VCPUs: 8, MemoryMB: 256, RootGB: 1, IsPublic: true, RxtxFactor: 1}).Error; err != nil {
		t.Fatal(err)
	}
	id := f.create("demo", "rs")
	f.placeActive(id, 3)
	resp, body := f.do("POST", "/v2.1/servers/"+id+"/action", "demo", `{"resize":{"flavorRef":"4"}}`)
	if resp.StatusCode != 202 {
		t.Fatalf("resize without room = %d %v", resp.StatusCode, body)
	}
	inst := f.instance(id)
	if inst.TaskState != "resize_prep" || inst.FlavorID != "4" || inst.OldFlavorID != "1" {
		t.Errorf("instance after cold resize: task %q flavor %s old %s", inst.TaskState, inst.FlavorID, inst.OldFlavorID)
	}
	var m store.Migration
	if err := f.st.DB.Where("instance_id = ?", id).First(&m).Error; err != nil {
		t.Fatal(err)
	}
	if m.MigrationType != "resize" || m.Step == "" || m.RequestedHost != "" || m.NewFlavorID == m.OldFlavorID {
		t.Errorf("migration %+v", m)
	}
	if c := f.claim(id); c.VCPUs != 1 || c.Host != "h1" {
		t.Errorf("source claim changed before scheduling: %+v", c)
	}
}

func TestConfirmRevertColdMigration(t *testing.T) {
	fake := &fakeMigrator{}
	f := newMigrateFixture(t, fake)
	id := f.create("demo", "cm")
	f.placeActive(id, 4)
	action := "/v2.1/servers/" + id + "/action"
	// Nothing pending: the live path answers (409: not resized).
	resp, body := f.do("POST", action, "demo", `{"confirmResize":null}`)
	expectFault(t, resp, body, 409, "conflictingRequest")

	fake.pending = &store.Migration{ID: 9, InstanceID: id}
	if err := f.st.DB.Model(&store.Instance{}).Where("id = ?", id).Update("vm_state", "resized").Error; err != nil {
		t.Fatal(err)
	}
	resp, body = f.do("POST", action, "demo", `{"confirmResize":null}`)
	if resp.StatusCode != 204 {
		t.Fatalf("confirm = %d %v", resp.StatusCode, body)
	}
	resp, body = f.do("POST", action, "demo", `{"revertResize":null}`)
	if resp.StatusCode != 202 {
		t.Fatalf("revert = %d %v", resp.StatusCode, body)
	}
	if want := []string{"confirm " + id, "revert " + id}; strings.Join(fake.finishes, ",") != strings.Join(want, ",") {
		t.Errorf("finishes %v, want %v", fake.finishes, want)
	}
	if len(fake.kicks) != 2 || fake.kicks[0] != 9 {
		t.Errorf("kicks %v", fake.kicks)
	}
	// A pending migration in a state that forbids a confirm: 409, not sent.
	if err := f.st.DB.Model(&store.Instance{}).Where("id = ?", id).Update("task_state", "resize_reverting").Error; err != nil {
		t.Fatal(err)
	}
	resp, body = f.do("POST", action, "demo", `{"confirmResize":null}`)
	expectFault(t, resp, body, 409, "conflictingRequest")
	if len(fake.finishes) != 2 {
		t.Errorf("finishes %v", fake.finishes)
	}
}

func TestServerMigrations(t *testing.T) {
	f := newMigrateFixture(t, &fakeMigrator{})
	id := f.create("demo", "sm")
	f.placeActive(id, 4)
	now := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	migs := []store.Migration{
		{UUID: "m-push", InstanceID: id, MigrationType: "migration", Status: lifecycle.MigrationMigrating, SourceCompute: "h1",
			SourceNode: "h1", DestCompute: "h2", DestNode: "h2", DestHost: "h2", ImageBytes: 1000, PushedBytes: 400, PulledBytes: 0,
			UserID: "u-admin", ProjectID: "p-admin", CreatedAt: now, UpdatedAt: now.Add(time.Minute)},
		{UUID: "m-old", InstanceID: id, MigrationType: "migration", Status: lifecycle.MigrationError, SourceCompute: "h1",
			DestCompute: "h3", CreatedAt: now.Add(-time.Hour), UpdatedAt: now.Add(-time.Hour)},
	}
	for i := range migs {
		if err := f.st.DB.Create(&migs[i]).Error; err != nil {
			t.Fatal(err)
		}
	}
	base := "/v2.1/servers/" + id + "/migrations"
	mv := func(v string) []string { return []string{"X-OpenStack-Nova-API-Version", v} }

	// The size is unknown (0) until the export pushed it all.
	unknown := store.Migration{ID: 99, Status: lifecycle.MigrationMigrating, PushedBytes: 300}
	if v := serverMigrationView(apiVersion{2, 59}, &unknown); v["disk_total_bytes"] != int64(0) ||
		v["disk_processed_bytes"] != int64(300) || v["disk_remaining_bytes"] != int64(0) {
		t.Errorf("view with unknown size: %v", v)
	}

	resp, body := f.do("GET", base, "admin", "", mv("2.22")...)
	expectFault(t, resp, body, 404, "itemNotFound")
	resp, body = f.do("GET", base, "demo", "", mv("2.59")...)
	expectFault(t, resp, body, 403, "forbidden")
	resp, body = f.do("GET", "/v2.1/servers/00000000-0000-4000-8000-000000000000/migrations", "admin", "", mv("2.59")...)
	expectFault(t, resp, body, 404, "itemNotFound")

	resp, body = f.do("GET", base, "admin", "", mv("2.59")...)
	if resp.StatusCode != 200 {
		t.Fatalf("list = %d %v", resp.StatusCode, body)
	}
	list := body["migrations"].([]any)
	if len(list) != 1 {
		t.Fatalf("in-progress migrations %v, want only the pushing one", list)
	}
	m := list[0].(map[string]any)
	want := map[string]any{"id": float64(migs[0].ID), "uuid": "m-push", "server_uuid": id, "status": "migrating",
		"source_compute": "h1", "source_node": "h1", "dest_compute": "h2", "dest_host": "h2", "dest_node": "h2",
		"created_at": "2026-03-01T10:00:00.000000", "updated_at": "2026-03-01T10:01:00.000000",
		"memory_total_bytes": float64(0), "memory_processed_bytes": float64(0), "memory_remaining_bytes": float64(0),
		"disk_total_bytes": float64(1000), "disk_processed_bytes": float64(400), "disk_remaining_bytes": float64(600)}
	for k, v := range want {
		if m[k] != v {
			t.Errorf("%s = %v, want %v", k, m[k], v)
		}
	}
	if len(m) != len(want) {
		t.Errorf("fields %v, want exactly %d", m, len(want))
	}
	// Below 2.59 there is no uuid.
	_, body = f.do("GET", base, "admin", "", mv("2.23")...)
	if _, has := body["migrations"].([]any)[0].(map[string]any)["uuid"]; has {
		t.Error("uuid shown below 2.59")
	}

	// The import phase shows the pulled bytes.
	if err := f.st.DB.Model(&store.Migration{}).Where("id = ?", migs[0].ID).
		Updates(map[string]any{"status": lifecycle.MigrationPostMigrating, "pushed_bytes": 1000, "pulled_bytes": 250}).Error; err != nil {
		t.Fatal(err)
	}
	resp, body = f.do("GET", base+"/"+itoa(migs[0].ID), "admin", "", mv("2.59")...)
	if resp.StatusCode != 200 {
		t.Fatalf("show = %d %v", resp.StatusCode, body)
	}
	m = body["migration"].(map[string]any)
	if m["status"] != "post-migrating" || m["disk_processed_bytes"] != float64(250) || m["disk_remaining_bytes"] != float64(750) {
		t.Errorf("show during import: %v", m)
	}
	// Over or unknown: 404 in Nova's words.
	for _, mid := range []string{itoa(migs[1].ID), "999", "abc"} {
		resp, body = f.do("GET", base+"/"+mid, "admin", "", mv("2.59")...)
		expectFault(t, resp, body, 404, "itemNotFound")
		if !strings.Contains(faultOf(body), "is not found for server "+id) {
			t.Errorf("404 message %q", faultOf(body))
		}
	}
}

func itoa(n uint) string { return strconv.FormatUint(uint64(n), 10) }

// TestOSMigrationsListsColdMigrations: /os-migrations shows cold
// migrations in every status, with Nova's filters.
func TestOSMigrationsListsColdMigrations(t *testing.T) {
	f := newMigrateFixture(t, &fakeMigrator{})
	now := time.Now().UTC()
	for i, m := range []store.Migration{
		{UUID: "a", InstanceID: "i-1", MigrationType: "migration", Status: lifecycle.MigrationPreMigrating, SourceCompute: "h1", DestCompute: ""},
		{UUID: "b", InstanceID: "i-1", MigrationType: "migration", Status: lifecycle.MigrationError, SourceCompute: "h1", DestCompute: "h2"},
		{UUID: "c", InstanceID: "i-2", MigrationType: "resize", Status: lifecycle.MigrationFinished, SourceCompute: "h2", DestCompute: "h3"},
		{UUID: "d", InstanceID: "i-3", MigrationType: "resize", Status: lifecycle.MigrationConfirmed, SourceCompute: "h4", DestCompute: "h4"},
	} {
		m.CreatedAt, m.UpdatedAt = now.Add(time.Duration(i)*time.Second), now
		if err := f.st.DB.Create(&m).Error; err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		query string
		want  []string
	}{
		{"", []string{"d", "c", "b", "a"}},
		{"?migration_type=migration", []string{"b", "a"}},
		{"?status=error", []string{"b"}},
		{"?host=h2", []string{"c", "b"}},
		{"?instance_uuid=i-1&status=pre-migrating", []string{"a"}},
	} {
		resp, body := f.do("GET", "/v2.1/os-migrations"+c.query, "admin", "", "X-OpenStack-Nova-API-Version", "2.59")
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d %v", c.query, resp.StatusCode, body)
		}
		var got []string
		for _, it := range body["migrations"].([]any) {
			got = append(got, it.(map[string]any)["uuid"].(string))
		}
		if strings.Join(got, ",") != strings.Join(c.want, ",") {
			t.Errorf("%q: %v, want %v", c.query, got, c.want)
		}
	}
}

// TestMigrateWithEngineEntryPoints runs the handlers against package
// migrate itself (no fake): RESIZE before the 202, the migration recorded
// and kicked, listed by os-server-migrations and os-migrations; then a
// confirm of the migration waiting in VERIFY_RESIZE goes to the engine's
// confirm, not the live resize's.
func TestMigrateWithEngineEntryPoints(t *testing.T) {
	f := newFixture(t)
	id := f.create("demo", "real")
	f.placeActive(id, 4)
	f.addHost("h2", false, false)
	action := "/v2.1/servers/" + id + "/action"
	resp, body := f.do("POST", action, "admin", `{"migrate":{"host":"h2"}}`, "X-OpenStack-Nova-API-Version", "2.56")
	if resp.StatusCode != 202 {
		t.Fatalf("migrate = %d %v", resp.StatusCode, body)
	}
	_, body = f.do("GET", "/v2.1/servers/"+id, "admin", "")
	if s := body["server"].(map[string]any); s["status"] != "RESIZE" {
		t.Errorf("status after migrate %v, want RESIZE", s["status"])
	}
	var m store.Migration
	if err := f.st.DB.Where("instance_id = ?", id).First(&m).Error; err != nil {
		t.Fatal(err)
	}
	if m.MigrationType != "migration" || m.RequestedHost != "h2" || m.SourceCompute != "h1" || m.Step == "" ||
		m.RequestID != resp.Header.Get("x-compute-request-id") {
		t.Errorf("migration %+v", m)
	}
	sent := f.bus.Sent(bus.ConductorQueue)
	var kicked bool
	for _, msg := range sent {
		var a migrate.Advance
		if msg.Kind == migrate.KindMigrationAdvance && msg.Decode(&a) == nil && a.MigrationID == m.ID {
			kicked = true
		}
	}
	if !kicked {
		t.Errorf("no %s for migration %d on the conductor queue (%d messages)", migrate.KindMigrationAdvance, m.ID, len(sent))
	}
	// A second migrate meanwhile conflicts.
	resp, body = f.do("POST", action, "admin", `{"migrate":null}`)
	expectFault(t, resp, body, 409, "conflictingRequest")

	_, body = f.do("GET", "/v2.1/servers/"+id+"/migrations", "admin", "", "X-OpenStack-Nova-API-Version", "2.59")
	if list := body["migrations"].([]any); len(list) != 1 || list[0].(map[string]any)["status"] != "pre-migrating" ||
		list[0].(map[string]any)["uuid"] != m.UUID {
		t.Errorf("server migrations %v", list)
	}
	_, body = f.do("GET", "/v2.1/os-migrations?migration_type=migration", "admin", "", "X-OpenStack-Nova-API-Version", "2.59")
	if list := body["migrations"].([]any); len(list) != 1 || list[0].(map[string]any)["instance_uuid"] != id {
		t.Errorf("os-migrations %v", list)
	}

	// As the engine leaves it after the import: on h2, VERIFY_RESIZE.
	if err := f.st.DB.Model(&store.Migration{}).Where("id = ?", m.ID).Updates(map[string]any{"step": string(migrate.StepFinished),
		"status": lifecycle.MigrationFinished, "dest_compute": "h2", "dest_host": "h2", "dest_node": "h2"}).Error; err != nil {
		t.Fatal(err)
	}
	if err := f.st.DB.Model(&store.Instance{}).Where("id = ?", id).Updates(map[string]any{"vm_state": "resized", "task_state": "",
		"host": "h2"}).Error; err != nil {
		t.Fatal(err)
	}
	resp, body = f.do("POST", action, "admin", `{"confirmResize":null}`)
	if resp.StatusCode != 204 {
		t.Fatalf("confirm = %d %v", resp.StatusCode, body)
	}
	if err := f.st.DB.First(&m, m.ID).Error; err != nil {
		t.Fatal(err)
	}
	if m.Step != string(migrate.StepConfirming) || m.Status != lifecycle.MigrationConfirming {
		t.Errorf("after confirm: step %s status %s", m.Step, m.Status)
	}
	if inst := f.instance(id); inst.VMState != "active" || inst.TaskState != "" {
		t.Errorf("after confirm: %s/%q", inst.VMState, inst.TaskState)
	}
}

// TestResizeChangingCPUPolicyMigrates: a new flavor with another
// hw:cpu_policy is made anew on another host (a cold migration with the
// new flavor), even where the host has room: the policy is fixed when the
// server's container is made.
func TestResizeChangingCPUPolicyMigrates(t *testing.T) {
	fake := &fakeMigrator{}
	f := newMigrateFixture(t, fake)
	fl := store.Flavor{FlavorID: "7", Name: "d1.small", VCPUs: 1, MemoryMB: 256, RootGB: 1, IsPublic: true, RxtxFactor: 1,
		ExtraSpecs: []store.FlavorExtraSpec{{Key: "hw:cpu_policy", Value: "dedicated"}}}
	if err := f.st.DB.Create(&fl).Error; err != nil {
		t.Fatal(err)
	}
	id := f.create("demo", "pol")
	f.placeActive(id, 3)
	resp, body := f.do("POST", "/v2.1/servers/"+id+"/action", "demo", `{"resize":{"flavorRef":"7"}}`)
	if resp.StatusCode != 202 {
		t.Fatalf("resize to a dedicated flavor = %d %v", resp.StatusCode, body)
	}
	if len(fake.begins) != 1 || fake.begins[0].NewFlavor == nil || fake.begins[0].NewFlavor.FlavorID != "7" || fake.begins[0].Action != "resize" {
		t.Fatalf("Begin calls %+v, want one resize to flavor 7", fake.begins)
	}
	if sent := f.bus.Sent(bus.ComputeQueue("h1")); len(sent) != 0 {
		t.Errorf("a live resize was cast too: %v", sent)
	}
	if c := f.claim(id); c.VCPUs != 1 || c.Host != "h1" {
		t.Errorf("claim changed by the live path: %+v", c)
	}
}
