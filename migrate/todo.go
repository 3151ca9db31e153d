package migrate

import (
	"context"
	"errors"

	"github.com/capsule-cloud/capsule/store"
)

// Placeholders until the engine lands (the migrate/ engine work replaces
// this file).

func begin(ctx context.Context, st *store.Store, req BeginRequest) (*store.Migration, error) {
	return nil, errors.New("cold migration is not implemented yet")
}

func pending(ctx context.Context, st *store.Store, instanceID string) (*store.Migration, error) {
	return nil, ErrNoPending
}

func confirm(ctx context.Context, st *store.Store, inst *store.Instance, req Request) (*store.Migration, error) {
	return nil, ErrNoPending
}

func revert(ctx context.Context, st *store.Store, inst *store.Instance, req Request) (*store.Migration, error) {
	return nil, ErrNoPending
}
