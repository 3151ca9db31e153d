package main

import (
	"context"
	"errors"
)

// Owned by the migration CLI work: server migrate/resize, migration list.

func (c *cli) serverMigrate(ctx context.Context, args []string) error {
	return errors.New("not implemented yet")
}
func (c *cli) serverResize(ctx context.Context, args []string) error {
	return errors.New("not implemented yet")
}
func (c *cli) migrationList(ctx context.Context, args []string) error {
	return errors.New("not implemented yet")
}
