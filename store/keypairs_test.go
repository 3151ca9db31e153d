package store_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/capsule-cloud/capsule/internal/storetest"
	"github.com/capsule-cloud/capsule/store"
)

func newKeypair(user, name string) *store.Keypair {
	return &store.Keypair{UserID: user, Name: name, Type: "ssh", PublicKey: "ssh-ed25519 AAAA " + name, Fingerprint: "aa:bb"}
}

func TestKeypairsCreateGetListDelete(t *testing.T) {
	storetest.ForEach(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		for _, n := range []string{"b", "a", "C"} {
			if err := st.CreateKeypair(ctx, newKeypair("u1", n), -1); err != nil {
				t.Fatalf("create %s: %v", n, err)
			}
		}
		// The same name for another user is another keypair.
		if err := st.CreateKeypair(ctx, newKeypair("u2", "a"), -1); err != nil {
			t.Fatalf("create a for u2: %v", err)
		}
		if err := st.CreateKeypair(ctx, newKeypair("u1", "a"), -1); !errors.Is(err, store.ErrConflict) {
			t.Fatalf("duplicate name: err = %v, want ErrConflict", err)
		}
		kp, err := st.GetKeypair(ctx, "u1", "a")
		if err != nil {
			t.Fatal(err)
		}
		if kp.ID == 0 || kp.CreatedAt.IsZero() || kp.UpdatedAt != nil || kp.PublicKey != "ssh-ed25519 AAAA a" {
			t.Errorf("stored keypair %+v: want an id, created_at, no updated_at and the key", kp)
		}
		if _, err := st.GetKeypair(ctx, "u2", "b"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("another user's keypair: err = %v, want ErrNotFound", err)
		}
		if n, err := st.CountKeypairs(ctx, "u1"); err != nil || n != 3 {
			t.Errorf("count of u1's keypairs = %d, %v; want 3", n, err)
		}
		list, err := st.ListKeypairs(ctx, "u1")
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, k := range list {
			names = append(names, k.Name)
		}
		if fmt.Sprint(names) != "[C a b]" {
			t.Errorf("list = %v, want [C a b] (byte order)", names)
		}
		if err := st.DeleteKeypair(ctx, "u1", "a"); err != nil {
			t.Fatal(err)
		}
		if err := st.DeleteKeypair(ctx, "u1", "a"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("second delete: err = %v, want ErrNotFound", err)
		}
		if _, err := st.GetKeypair(ctx, "u2", "a"); err != nil {
			t.Errorf("u2's keypair a after u1's delete: %v", err)
		}
	})
}

// TestKeypairQuotaUnderConcurrency: the count and the insert are atomic,
// so concurrent creates never exceed the limit.
func TestKeypairQuotaUnderConcurrency(t *testing.T) {
	storetest.ForEach(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		const limit, tries = 3, 8
		var wg sync.WaitGroup
		errs := make([]error, tries)
		for i := range tries {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i] = st.CreateKeypair(ctx, newKeypair("u1", fmt.Sprintf("k%d", i)), limit)
			}()
		}
		wg.Wait()
		ok := 0
		for i, err := range errs {
			switch {
			case err == nil:
				ok++
			case !errors.Is(err, store.ErrKeypairQuota):
				t.Errorf("create k%d: %v, want nil or ErrKeypairQuota", i, err)
			}
		}
		list, err := st.ListKeypairs(ctx, "u1")
		if err != nil {
			t.Fatal(err)
		}
		if ok != limit || len(list) != limit {
			t.Errorf("%d creates succeeded, %d stored; want %d", ok, len(list), limit)
		}
		// Another user has a quota of their own.
		if err := st.CreateKeypair(ctx, newKeypair("u2", "k0"), limit); err != nil {
			t.Errorf("u2's first keypair: %v", err)
		}
	})
}

// TestMigration8AddsKeyData: a database migrated before migration 8 gets
// the keypairs table and instances.key_data.
func TestMigration8AddsKeyData(t *testing.T) {
	storetest.ForEach(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		m := st.DB.Migrator()
		if err := m.DropTable(&store.Keypair{}); err != nil {
			t.Fatal(err)
		}
		if err := m.DropColumn(&store.Instance{}, "KeyData"); err != nil {
			t.Fatal(err)
		}
		if err := st.DB.Exec("DELETE FROM schema_migrations WHERE version >= 8").Error; err != nil {
			t.Fatal(err)
		}
		if err := st.Migrate(ctx); err != nil {
			t.Fatalf("migrate: %v", err)
		}
		if !m.HasTable(&store.Keypair{}) || !m.HasColumn(&store.Instance{}, "KeyData") {
			t.Fatal("migration 8 did not add the keypairs table and instances.key_data")
		}
		if err := st.CreateKeypair(ctx, newKeypair("u1", "k"), -1); err != nil {
			t.Fatalf("create after migration: %v", err)
		}
		if err := st.CreateKeypair(ctx, newKeypair("u1", "k"), -1); !errors.Is(err, store.ErrConflict) {
			t.Errorf("unique (user_id, name) after migration: err = %v, want ErrConflict", err)
		}
	})
}
