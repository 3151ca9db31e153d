package docker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"sort"
	"sync"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"

	"github.com/capsule-cloud/capsule/drivers"
	"github.com/capsule-cloud/capsule/limits"
)

// Why servers are pinned: nproc (busybox and GNU), the JVM, Go's runtime
// and every thread pool size themselves from sched_getaffinity, the CPUs a
// process may run on, not from its CFS quota. Unpinned, a 1-vCPU server
// counts every host CPU and starts that many workers. So each server whose
// vCPUs are fewer than the host's CPUs gets a cpuset of exactly its vCPUs,
// chosen among the least-used CPUs so servers spread across cores (the
// quota still caps its total CPU time). LXCFS's cpuinfo, stat and
// sys/devices/system/cpu/online follow the cpuset too.
//
// The host's CPUs are two pools, Nova's model (limits.CPUPools): the
// cpu_dedicated_set (Options.CPUDedicatedSet), where each CPU goes whole
// to one hw:cpu_policy=dedicated server, and the others, shared by every
// other server. The scheduler counts the dedicated CPUs per host (PCPUs),
// so a dedicated build normally finds its CPUs free; the driver still
// refuses one that does not (ErrNoFreeCPUs), e.g. after the operator
// shrank the set.

// LabelCPUPolicy marks a server pinned to exclusive CPUs
// (hw:cpu_policy=dedicated): no other server is pinned to its CPUs.
const LabelCPUPolicy = "capsule.cpu_policy"

const (
	policyDedicated = "dedicated"
	policyShared    = "shared"
)

// ErrNoFreeCPUs: a dedicated server needs more CPUs of the host's
// cpu_dedicated_set than are free of other pinned servers.
var ErrNoFreeCPUs = errors.New("not enough dedicated host CPUs free for exclusive pinning")

// pinning serializes the choice of CPUs with the create or update that
// applies it, so two concurrent boots do not both pick the idle core.
type pinning struct {
	mu    sync.Mutex
	pools *limits.CPUPools // the host's CPUs split by the dedicated set, found once
	// pending are the CPUs picked for creates in flight, by instance id:
	// counted by cpuUse until the instance's container is listed, so the
	// container create itself runs outside mu (concurrent boots would
	// otherwise queue on each other's creates).
	pending map[string]pendingPick
	// cpusets caches, by container ID, the cpuset of this driver's own
	// servers (owner label = Options.Owner), so a create's cpuUse lists
	// the containers instead of inspecting each one (an inspect per
	// server per boot, under mu). Only docker update changes a cpuset and
	// only this driver updates its own servers: update empties the cache
	// (cpusetsMu, not mu, which a resize holds across its update). Other
	// agents' servers on a shared dockerd are inspected every time.
	cpusetsMu sync.Mutex
	cpusets   map[string]string
}

// cachedCPUset returns the cached cpuset of container id.
func (p *pinning) cachedCPUset(id string) (string, bool) {
	p.cpusetsMu.Lock()
	defer p.cpusetsMu.Unlock()
	s, ok := p.cpusets[id]
	return s, ok
}

// cacheCPUset records container id's cpuset.
func (p *pinning) cacheCPUset(id, cpuset string) {
	p.cpusetsMu.Lock()
	defer p.cpusetsMu.Unlock()
	if p.cpusets == nil {
		p.cpusets = map[string]string{}
	}
	p.cpusets[id] = cpuset
}

// keepCPUsets drops the cached cpusets of containers not in ids (removed).
func (p *pinning) keepCPUsets(ids map[string]bool) {
	p.cpusetsMu.Lock()
	defer p.cpusetsMu.Unlock()
	for id := range p.cpusets {
		if !ids[id] {
			delete(p.cpusets, id)
		}
	}
}

// forgetCPUsets empties the cache (a container's resources are updated).
func (p *pinning) forgetCPUsets() {
	p.cpusetsMu.Lock()
	defer p.cpusetsMu.Unlock()
	clear(p.cpusets)
}

// pendingPick is the CPUs a create in flight was given.
type pendingPick struct {
	cpus      []int
	dedicated bool
}

// cpuUse is how the host's CPUs are taken by the servers pinned to them.
type cpuUse struct {
	load      map[int]int  // shared servers pinned to each CPU
	dedicated map[int]bool // CPUs held by a dedicated server
}

// pickCPUs chooses the CPUs of a server of vcpus vCPUs: nil means no
// pinning (it may use the whole host). keep are its current CPUs (a
// resize), kept when possible so its caches stay warm. A dedicated server
// gets CPUs of the dedicated pool that no other pinned server uses; a
// shared one the least-used CPUs of the shared pool (not pinned at all
// when it is as big as a host without dedicated CPUs).
func pickCPUs(pools limits.CPUPools, use cpuUse, vcpus int, dedicated bool, keep []int) ([]int, error) {
	kept := func(c int) bool { return slices.Contains(keep, c) }
	order := func(cpus []int) {
		sort.SliceStable(cpus, func(i, j int) bool {
			a, b := cpus[i], cpus[j]
			if kept(a) != kept(b) {
				return kept(a)
			}
			if use.load[a] != use.load[b] {
				return use.load[a] < use.load[b]
			}
			return a < b
		})
	}
	if dedicated {
		if len(pools.Dedicated) == 0 {
			return nil, fmt.Errorf("hw:cpu_policy=dedicated: this host has no dedicated CPUs (agent cpu_dedicated_set is empty): %w",
				ErrNoFreeCPUs)
		}
		var free []int
		for _, c := range pools.Dedicated {
			if use.load[c] == 0 && !use.dedicated[c] {
				free = append(free, c)
			}
		}
		if len(free) < vcpus {
			return nil, fmt.Errorf("hw:cpu_policy=dedicated: %d vCPUs need as many dedicated host CPUs free, %d of %d (%s) are: %w",
				vcpus, len(free), len(pools.Dedicated), limits.FormatCPUList(pools.Dedicated), ErrNoFreeCPUs)
		}
		order(free)
		out := free[:vcpus]
		slices.Sort(out)
		return out, nil
	}
	var avail []int
	for _, c := range pools.Shared {
		if !use.dedicated[c] { // a dedicated server pinned before the set was configured
			avail = append(avail, c)
		}
	}
	switch {
	case len(avail) == 0:
		return nil, fmt.Errorf("every shared host CPU is held by dedicated servers: %w", ErrNoFreeCPUs)
	case vcpus >= len(avail) && len(avail) == len(pools.Shared)+len(pools.Dedicated):
		return nil, nil
	case vcpus >= len(avail):
		// Bigger than the shared pool: all of it, so dedicated CPUs
		// stay dedicated.
		return avail, nil
	}
	order(avail)
	out := avail[:vcpus]
	slices.Sort(out)
	return out, nil
}

// cpuPools returns the host's CPUs split into the shared and dedicated
// pools (d.pin.mu held, or at driver start): the online CPUs when dockerd
// is local and sees them all, else 0..NCPU-1; the dedicated set must be
// among them and leave a shared CPU.
func (d *Driver) cpuPools(ctx context.Context) (limits.CPUPools, error) {
	if d.pin.pools != nil {
		return *d.pin.pools, nil
	}
	info, err := d.cli.Info(ctx)
	if err != nil {
		return limits.CPUPools{}, fmt.Errorf("docker info: %w", err)
	}
	if info.NCPU <= 0 {
		return limits.CPUPools{}, fmt.Errorf("docker info reports %d CPUs", info.NCPU)
	}
	cpus := make([]int, info.NCPU)
	for i := range cpus {
		cpus[i] = i
	}
	if d.local() {
		if b, err := os.ReadFile("/sys/devices/system/cpu/online"); err == nil {
			if online, err := limits.ParseCPUList(string(b)); err == nil && len(online) == info.NCPU {
				cpus = online
			}
		}
	}
	pools, err := limits.SplitCPUs(cpus, d.opts.CPUDedicatedSet)
	if err != nil {
		return limits.CPUPools{}, err
	}
	d.pin.pools = &pools
	return pools, nil
}

// cpuUse counts how the servers on this dockerd are pinned (stopped ones
// included: they keep their CPUs for their next start), leaving out
// container except (a resize's own) and a root disk resize's kept
// container (its revert re-picks its CPUs, as a resize does). Every Capsule server counts, whatever
// agent owns it (Options.Owner): agents sharing a dockerd share its CPUs.
// A cpuset of the whole host is no pinning.
func (d *Driver) cpuUse(ctx context.Context, pools limits.CPUPools, except string) (cpuUse, error) {
	host := len(pools.Shared) + len(pools.Dedicated)
	use := cpuUse{load: map[int]int{}, dedicated: map[int]bool{}}
	cs, err := d.cli.ContainerList(ctx, container.ListOptions{
		All:     true,
		Filters: filters.NewArgs(filters.Arg("label", LabelManaged+"=true")),
	})
	if err != nil {
		return use, fmt.Errorf("list containers for cpu pinning: %w", err)
	}
	listed := make(map[string]bool, len(cs))
	present := make(map[string]bool, len(cs))
	for _, s := range cs {
		present[s.ID] = true
	}
	d.pin.keepCPUsets(present)
	for _, s := range cs {
		if !isSandbox(s) && !isKept(s) {
			listed[s.Labels[LabelInstance]] = true
		}
		if s.ID == except || isSandbox(s) || isKept(s) {
			continue
		}
		cpuset, ok := d.cpusetOf(ctx, s)
		if !ok {
			continue // removed since the listing
		}
		cpus, err := limits.ParseCPUList(cpuset)
		if err != nil {
			d.log.Warn("ignoring a container's unreadable cpuset", "container", s.ID, "cpuset", cpuset, "err", err)
			continue
		}
		dedicated := s.Labels[LabelCPUPolicy] == policyDedicated
		if len(cpus) == 0 || (!dedicated && len(cpus) >= host) {
			continue
		}
		use.add(cpus, dedicated)
	}
	for id, p := range d.pin.pending {
		if !listed[id] {
			use.add(p.cpus, p.dedicated)
		}
	}
	return use, nil
}

// cpusetOf returns the cpuset of listed container s: cached for this
// driver's own servers (see pinning.cpusets), else inspected; false when
// it is gone.
func (d *Driver) cpusetOf(ctx context.Context, s container.Summary) (string, bool) {
	own := s.Labels[LabelOwnerHost] == d.opts.Owner
	if own {
		if cpuset, ok := d.pin.cachedCPUset(s.ID); ok {
			return cpuset, true
		}
	}
	c, err := d.cli.ContainerInspect(ctx, s.ID)
	if err != nil || c.HostConfig == nil {
		return "", false
	}
	if own {
		d.pin.cacheCPUset(s.ID, c.HostConfig.CpusetCpus)
	}
	return c.HostConfig.CpusetCpus, true
}

// add counts a server pinned to cpus.
func (u cpuUse) add(cpus []int, dedicated bool) {
	for _, cpu := range cpus {
		if dedicated {
			u.dedicated[cpu] = true
		} else {
			u.load[cpu]++
		}
	}
}

// createPinned creates the workload container of spec pinned to its CPUs,
// choosing them under the pinning lock and holding them as pending (see
// pinning) while the container is created.
func (d *Driver) createPinned(ctx context.Context, spec drivers.Spec, cfg *container.Config, host *container.HostConfig) (container.CreateResponse, error) {
	cpus, err := d.pickPending(ctx, spec)
	if err != nil {
		return container.CreateResponse{}, err
	}
	defer func() {
		d.pin.mu.Lock()
		delete(d.pin.pending, spec.ID)
		d.pin.mu.Unlock()
	}()
	host.Resources.CpusetCpus = limits.FormatCPUList(cpus)
	resp, err := d.cli.ContainerCreate(ctx, cfg, host, nil, nil, ContainerName(spec.ID))
	if err == nil && cfg.Labels[LabelOwnerHost] == d.opts.Owner {
		d.pin.cacheCPUset(resp.ID, host.Resources.CpusetCpus)
	}
	return resp, err
}

// pickPending chooses spec's CPUs and records them as pending.
func (d *Driver) pickPending(ctx context.Context, spec drivers.Spec) ([]int, error) {
	d.pin.mu.Lock()
	defer d.pin.mu.Unlock()
	pools, err := d.cpuPools(ctx)
	if err != nil {
		return nil, fmt.Errorf("cpu pinning: %w", err)
	}
	use, err := d.cpuUse(ctx, pools, "")
	if err != nil {
		return nil, err
	}
	cpus, err := pickCPUs(pools, use, spec.VCPUs, spec.Limits.CPU.Dedicated, nil)
	if err != nil {
		return nil, err
	}
	if d.pin.pending == nil {
		d.pin.pending = map[string]pendingPick{}
	}
	d.pin.pending[spec.ID] = pendingPick{cpus: cpus, dedicated: spec.Limits.CPU.Dedicated}
	return cpus, nil
}

// resizeCPUs returns the cpuset of container c resized to vcpus (to set
// with docker update, where "" leaves it as is) and the one to restore on
// a rollback. d.pin.mu must be held until the update is done. The CPU
// policy cannot change: it is a label, which docker update cannot set.
func (d *Driver) resizeCPUs(ctx context.Context, c container.InspectResponse, vcpus int, l limits.Limits) (set, rollback string, err error) {
	dedicated := c.Config.Labels[LabelCPUPolicy] == policyDedicated
	if l.CPU.Dedicated != dedicated {
		return "", "", fmt.Errorf("the new flavor changes hw:cpu_policy, which cannot be changed on an existing container: %w", drivers.ErrNotSupported)
	}
	pools, err := d.cpuPools(ctx)
	if err != nil {
		return "", "", fmt.Errorf("cpu pinning: %w", err)
	}
	cur, err := limits.ParseCPUList(c.HostConfig.CpusetCpus)
	if err != nil {
		return "", "", err
	}
	use, err := d.cpuUse(ctx, pools, c.ID)
	if err != nil {
		return "", "", err
	}
	// A dedicated server grows only onto free dedicated CPUs: without
	// them the resize fails here and the caller rolls it back.
	cpus, err := pickCPUs(pools, use, vcpus, dedicated, cur)
	if err != nil {
		return "", "", err
	}
	all := limits.FormatCPUList(slices.Sorted(slices.Values(append(slices.Clone(pools.Shared), pools.Dedicated...))))
	rollback = c.HostConfig.CpusetCpus
	switch {
	case cpus != nil:
		set = limits.FormatCPUList(cpus)
	case len(cur) > 0:
		set = all // unpinned: "" would leave the old cpuset
	}
	if rollback == "" && set != "" {
		rollback = all
	}
	return set, rollback, nil
}
