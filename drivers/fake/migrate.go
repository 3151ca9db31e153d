package fake

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/capsule-cloud/capsule/drivers"
)

// Ops of drivers.Migrator, for counting and error injection (the Fail
// hook gets the instance id for Volumes, the ref for Pull and
// RemoveImage).
const (
	OpVolumes     Op = "volumes"
	OpPull        Op = "pull"
	OpRemoveImage Op = "remove_image"
)

// Image is what the in-memory registry holds for one ref.
type Image struct {
	Digest string
	Size   int64
	Base   string            // the image the snapshotted instance ran
	Files  map[string]string // the instance's files at the snapshot
}

// Registry is an in-memory image registry. Each fake driver has its own;
// give two drivers the same one (UseRegistry) to move instances between
// them as between two hosts.
type Registry struct {
	mu     sync.Mutex
	images map[string]Image
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry { return &Registry{images: map[string]Image{}} }

func (r *Registry) put(ref string, img Image) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.images[ref] = img
}

func (r *Registry) get(ref string) (Image, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	img, ok := r.images[ref]
	if ok {
		img.Files = copyMap(img.Files)
	}
	return img, ok
}

// Get returns the image pushed to ref, if any.
func (r *Registry) Get(ref string) (Image, bool) { return r.get(ref) }

// Delete removes ref, as deleting a tag in a real registry.
func (r *Registry) Delete(ref string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.images, ref)
}

// UseRegistry makes the driver push to and pull from r.
func (d *Driver) UseRegistry(r *Registry) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.registry = r
}

// Registry returns the registry the driver pushes to.
func (d *Driver) Registry() *Registry {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.registry
}

// HasImage reports whether ref is in this host's image store (pulled and
// not removed).
func (d *Driver) HasImage(ref string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.images[ref]
}

// WriteFile writes a file on instance id's disk, as its tenant would.
func (d *Driver) WriteFile(id, path, data string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	in, ok := d.instances[id]
	if !ok {
		return fmt.Errorf("fake write %s: %w", id, drivers.ErrNotFound)
	}
	if in.Files == nil {
		in.Files = map[string]string{}
	}
	in.Files[path] = data
	return nil
}

// SetVolumes records mounts of instance id that Volumes reports.
func (d *Driver) SetVolumes(id string, vols ...string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	in, ok := d.instances[id]
	if !ok {
		return fmt.Errorf("fake set volumes %s: %w", id, drivers.ErrNotFound)
	}
	in.Volumes = append([]string(nil), vols...)
	return nil
}

var _ drivers.Migrator = (*Driver)(nil)

// Volumes implements drivers.Migrator.
func (d *Driver) Volumes(ctx context.Context, id string) ([]string, error) {
	if err := d.begin(ctx, OpVolumes, id); err != nil {
		return nil, err
	}
	defer d.mu.Unlock()
	in, err := d.lookup(OpVolumes, id)
	if err != nil {
		return nil, err
	}
	return slices.Clone(in.Volumes), nil
}

// Pull implements drivers.Migrator: it fetches ref from the registry into
// the host's image store, telling progress the image's size, which it
// returns (0 when the image was already here).
func (d *Driver) Pull(ctx context.Context, ref string, progress func(bytes int64)) (int64, error) {
	if err := d.begin(ctx, OpPull, ref); err != nil {
		return 0, err
	}
	defer d.mu.Unlock()
	img, ok := d.registry.get(ref)
	if !ok {
		return 0, fmt.Errorf("fake pull %s: manifest unknown: %w", ref, drivers.ErrNotFound)
	}
	if d.images[ref] {
		return 0, nil
	}
	d.images[ref] = true
	if progress != nil {
		progress(img.Size)
	}
	return img.Size, nil
}

// RemoveImage implements drivers.Migrator: it drops ref from the host's
// image store; a missing image is fine, and instances created from it
// keep their files (as a container keeps its image).
func (d *Driver) RemoveImage(ctx context.Context, ref string) error {
	if err := d.begin(ctx, OpRemoveImage, ref); err != nil {
		return err
	}
	defer d.mu.Unlock()
	delete(d.images, ref)
	return nil
}
