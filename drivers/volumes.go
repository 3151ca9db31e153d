package drivers

import (
	"context"
	"io"
)

// VolumeHost is a driver whose running instances have a process the
// agent can mount persistent volumes into (package volume mounts into
// that process's mount namespace, live).
type VolumeHost interface {
	// InitPID is the host PID of running instance id's init (its PID 1
	// as the host sees it); ErrInvalidState when it does not run,
	// ErrNotFound when it is missing.
	InitPID(ctx context.Context, id string) (int, error)
}

// ImageExporter is a driver that can hand out an image's root filesystem
// as a tar stream (a volume created from an image starts with it).
type ImageExporter interface {
	// ExportImage fetches image ref when missing and streams its
	// filesystem; closing the stream frees what the export made.
	ExportImage(ctx context.Context, ref string) (io.ReadCloser, error)
}
