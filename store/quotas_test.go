package store_test

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/capsule-cloud/capsule/internal/storetest"
	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/store"
)

func TestQuotaLimitsLevels(t *testing.T) {
	storetest.ForEach(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		if got, err := st.QuotaLimits(ctx, "p1", ""); err != nil || len(got) != 0 {
			t.Fatalf("untouched project: %v %v", got, err)
		}
		if err := st.SetQuotaLimits(ctx, "p1", "", map[string]int{"instances": 3, "ram": -1}); err != nil {
			t.Fatal(err)
		}
		// A second set replaces one value and adds another (an upsert on
		// the unique key, not a duplicate row).
		if err := st.SetQuotaLimits(ctx, "p1", "", map[string]int{"instances": 5, "cores": 7}); err != nil {
			t.Fatal(err)
		}
		if err := st.SetQuotaLimits(ctx, "p1", "u1", map[string]int{"instances": 2}); err != nil {
			t.Fatal(err)
		}
		if err := st.SetQuotaLimits(ctx, "p2", "", map[string]int{"instances": 9}); err != nil {
			t.Fatal(err)
		}
		got, err := st.QuotaLimits(ctx, "p1", "")
		if want := map[string]int{"instances": 5, "cores": 7, "ram": -1}; err != nil || !reflect.DeepEqual(got, want) {
			t.Fatalf("project level = %v %v, want %v", got, err, want)
		}
		got, err = st.QuotaLimits(ctx, "p1", "u1")
		if want := map[string]int{"instances": 2}; err != nil || !reflect.DeepEqual(got, want) {
			t.Fatalf("user level = %v %v, want %v", got, err, want)
		}
		users, err := st.UserQuotaLimits(ctx, "p1")
		if err != nil || len(users) != 1 || users[0].UserID != "u1" || users[0].HardLimit != 2 {
			t.Fatalf("user limits = %+v %v", users, err)
		}
		var n int64
		st.DB.Model(&store.QuotaLimit{}).Where("project_id = ?", "p1").Count(&n)
		if n != 4 {
			t.Fatalf("%d rows for p1, want 4", n)
		}

		// Deleting a user's level keeps the project's; deleting the
		// project's takes the users' too, and never another project's.
		if err := st.DeleteQuotaLimits(ctx, "p1", "u1"); err != nil {
			t.Fatal(err)
		}
		if got, _ := st.QuotaLimits(ctx, "p1", "u1"); len(got) != 0 {
			t.Fatalf("user level after delete = %v", got)
		}
		if got, _ := st.QuotaLimits(ctx, "p1", ""); len(got) != 3 {
			t.Fatalf("project level after user delete = %v", got)
		}
		if err := st.SetQuotaLimits(ctx, "p1", "u1", map[string]int{"cores": 1}); err != nil {
			t.Fatal(err)
		}
		if err := st.DeleteQuotaLimits(ctx, "p1", ""); err != nil {
			t.Fatal(err)
		}
		st.DB.Model(&store.QuotaLimit{}).Where("project_id = ?", "p1").Count(&n)
		if n != 0 {
			t.Fatalf("%d rows left for p1 after project delete", n)
		}
		if got, _ := st.QuotaLimits(ctx, "p2", ""); got["instances"] != 9 {
			t.Fatalf("p2 = %v after deleting p1", got)
		}
	})
}

func TestSetQuotaLimitsNeedsAProject(t *testing.T) {
	st := storetest.SQLite(t)
	err := st.SetQuotaLimits(context.Background(), "", "", map[string]int{"instances": 1})
	if !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("err = %v, want ErrNotFound", err)
	}
}

func TestCountQuotaUsage(t *testing.T) {
	storetest.ForEach(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		now := time.Now().UTC()
		for i, in := range []store.Instance{
			{ID: "a", ProjectID: "p1", UserID: "u1", VCPUs: 1, MemoryMB: 128},
			{ID: "b", ProjectID: "p1", UserID: "u1", VCPUs: 2, MemoryMB: 512},
			{ID: "c", ProjectID: "p1", UserID: "u2", VCPUs: 4, MemoryMB: 1024},
			{ID: "d", ProjectID: "p1", UserID: "u1", VCPUs: 8, MemoryMB: 4096, DeletedAt: &now},
			{ID: "e", ProjectID: "p2", UserID: "u1", VCPUs: 16, MemoryMB: 8192},
			// Offloaded: an instance without cores or RAM; unshelving: all three.
			{ID: "f", ProjectID: "p1", UserID: "u2", VCPUs: 32, MemoryMB: 256, VMState: lifecycle.ShelvedOffloaded},
			{ID: "g", ProjectID: "p2", UserID: "u1", VCPUs: 1, MemoryMB: 64, VMState: lifecycle.ShelvedOffloaded,
				TaskState: lifecycle.Unshelving},
		} {
			if err := st.DB.Create(&in).Error; err != nil {
				t.Fatalf("instance %d: %v", i, err)
			}
		}
		for _, c := range []struct {
			project, user string
			want          store.QuotaUsage
		}{
			{"p1", "", store.QuotaUsage{Instances: 4, Cores: 7, RAM: 1664}},
			{"p2", "", store.QuotaUsage{Instances: 2, Cores: 17, RAM: 8256}},
			{"p1", "u1", store.QuotaUsage{Instances: 2, Cores: 3, RAM: 640}},
			{"p1", "u3", store.QuotaUsage{}},
			{"p3", "", store.QuotaUsage{}},
		} {
			got, err := st.CountQuotaUsage(ctx, c.project, c.user)
			if err != nil || got != c.want {
				t.Errorf("usage of %s/%q = %+v %v, want %+v", c.project, c.user, got, err, c.want)
			}
		}
	})
}
