package store_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/capsule-cloud/capsule/internal/storetest"
	"github.com/capsule-cloud/capsule/store"
)

// TestUpdateTags: tags stay sorted and distinct, the limit holds, an
// aborted change writes nothing, and concurrent additions are all kept
// (the row lock), on SQLite and PostgreSQL.
func TestUpdateTags(t *testing.T) {
	storetest.ForEach(t, func(t *testing.T, st *store.Store) {
		ctx := context.Background()
		inst := store.Instance{ID: "11111111-0000-4000-8000-000000000001", Name: "tagged", ProjectID: "p", VMState: "active"}
		if err := st.DB.Create(&inst).Error; err != nil {
			t.Fatal(err)
		}
		add := func(tag string) func([]string) ([]string, error) {
			return func(tags []string) ([]string, error) { return append(tags, tag), nil }
		}
		if _, err := st.UpdateTags(ctx, inst.ID, add("b")); err != nil {
			t.Fatal(err)
		}
		got, err := st.UpdateTags(ctx, inst.ID, func(tags []string) ([]string, error) { return append(tags, "a", "b"), nil })
		if err != nil || !slices.Equal(got, []string{"a", "b"}) {
			t.Fatalf("tags = %v, %v; want [a b]", got, err)
		}
		boom := errors.New("boom")
		if _, err := st.UpdateTags(ctx, inst.ID, func([]string) ([]string, error) { return nil, boom }); !errors.Is(err, boom) {
			t.Fatalf("aborted change: %v", err)
		}
		many := make([]string, store.MaxServerTags+1)
		for i := range many {
			many[i] = fmt.Sprintf("t%02d", i)
		}
		if _, err := st.UpdateTags(ctx, inst.ID, func([]string) ([]string, error) { return many, nil }); !errors.Is(err, store.ErrTooManyTags) {
			t.Fatalf("51 tags: %v, want ErrTooManyTags", err)
		}
		var back store.Instance
		st.DB.Where("id = ?", inst.ID).First(&back)
		if got := store.TagsOf(&back); !slices.Equal(got, []string{"a", "b"}) {
			t.Fatalf("tags after refused changes = %v", got)
		}

		var wg sync.WaitGroup
		for i := range 10 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := st.UpdateTags(ctx, inst.ID, add(fmt.Sprintf("c%d", i))); err != nil {
					t.Errorf("concurrent add: %v", err)
				}
			}()
		}
		wg.Wait()
		st.DB.Where("id = ?", inst.ID).First(&back)
		if got := store.TagsOf(&back); len(got) != 12 {
			t.Errorf("after 10 concurrent adds: %v, want 12 tags", got)
		}
		if _, err := st.UpdateTags(ctx, "no-such", add("x")); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("unknown instance: %v", err)
		}
	})
}
