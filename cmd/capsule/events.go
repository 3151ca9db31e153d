package main

import (
	"context"
	"errors"
)

// Owned by the observability work: host events.

func (c *cli) hostEvents(ctx context.Context, args []string) error {
	return errors.New("not implemented yet")
}
