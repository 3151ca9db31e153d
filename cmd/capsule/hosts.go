package main

import (
	"context"
	"errors"
)

// Owned by the migration CLI work: host disable/enable/evacuate.

func (c *cli) hostDisable(ctx context.Context, args []string) error {
	return errors.New("not implemented yet")
}
func (c *cli) hostEnable(ctx context.Context, args []string) error {
	return errors.New("not implemented yet")
}
func (c *cli) hostEvacuate(ctx context.Context, args []string) error {
	return errors.New("not implemented yet")
}
