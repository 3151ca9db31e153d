// Package limits turns a flavor's extra specs, with Nova's names and units
// (libvirt semantics), into the typed resource limits a driver applies:
// CPU quota/period/shares and policy, disk bytes/IOPS throttles, NIC
// shaping and the pid cap. It is pure: the API validates with it when
// extra specs are set, the agent parses with it when it builds a server.
//
// Keys in the namespaces Capsule owns or interprets (quota:, hw:,
// capsule:) must be known and well-formed; keys in any other namespace are
// stored and ignored, as Nova below microversion 2.86 does.
package limits

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// Extra spec keys understood by Capsule.
const (
	KeyCPUShares = "quota:cpu_shares"
	KeyCPUPeriod = "quota:cpu_period"
	KeyCPUQuota  = "quota:cpu_quota"
	KeyCPUPolicy = "hw:cpu_policy"

	KeyDiskReadBytes  = "quota:disk_read_bytes_sec"
	KeyDiskWriteBytes = "quota:disk_write_bytes_sec"
	KeyDiskTotalBytes = "quota:disk_total_bytes_sec"
	KeyDiskReadIOPS   = "quota:disk_read_iops_sec"
	KeyDiskWriteIOPS  = "quota:disk_write_iops_sec"
	KeyDiskTotalIOPS  = "quota:disk_total_iops_sec"

	KeyVIFInboundAverage  = "quota:vif_inbound_average"
	KeyVIFInboundPeak     = "quota:vif_inbound_peak"
	KeyVIFInboundBurst    = "quota:vif_inbound_burst"
	KeyVIFOutboundAverage = "quota:vif_outbound_average"
	KeyVIFOutboundPeak    = "quota:vif_outbound_peak"
	KeyVIFOutboundBurst   = "quota:vif_outbound_burst"

	KeyPidsMax = "capsule:pids_max"

	// KeyNUMANodes is accepted (Tempest's extra-spec tests set it) and
	// recorded, not applied: a container shares the host's memory
	// topology.
	KeyNUMANodes = "hw:numa_nodes"
)

// Bounds of the values, from the kernel and libvirt.
const (
	// CFS period bounds (kernel: 1 ms to 1 s).
	MinCPUPeriodUS = 1000
	MaxCPUPeriodUS = 1000000
	// DefaultCPUPeriodUS is the kernel's and libvirt's default period.
	DefaultCPUPeriodUS = 100000
	// MinCPUQuotaUS is the kernel's smallest CFS quota (1 ms);
	// MaxCPUQuotaUS is libvirt's largest per-vCPU quota.
	MinCPUQuotaUS = 1000
	MaxCPUQuotaUS = 17592186044415
	// cgroup v1 cpu.shares bounds (the kernel clamps outside them).
	MinCPUShares = 2
	MaxCPUShares = 262144
	// MinPidsMax: below this a server cannot even boot its init and a
	// shell; MaxPidsMax is the kernel's largest pid_max.
	MinPidsMax = 16
	MaxPidsMax = 4194304
)

// Namespaces whose keys must be known: quota: and hw: are Nova's (an
// unknown key there is a typo or a feature Capsule lacks, and silently
// ignoring it would run a server without the limit its flavor promises),
// capsule: is ours.
var strictNamespaces = []string{"quota:", "hw:", "capsule:"}

// Limits are the resource limits a flavor's extra specs ask for. The zero
// value asks for nothing beyond the flavor's vCPUs and RAM: a hard quota of
// VCPUs CPUs, shares proportional to VCPUs, no disk or NIC throttling and
// the agent's default pid cap.
type Limits struct {
	CPU  CPU
	Disk Disk
	VIF  VIF
	// PidsMax is capsule:pids_max, the cap on the server's tasks; 0 when
	// unset, then the agent's configured default applies (there is
	// always one: the thread-leak lesson).
	PidsMax int64
	// NUMANodes is hw:numa_nodes, accepted for compatibility and not
	// applied (see KeyNUMANodes); 0 when unset.
	NUMANodes int64
}

// CPU limits, libvirt's <cputune> semantics.
type CPU struct {
	// Shares is quota:cpu_shares, the relative weight under contention
	// (1024 = one normal CPU); 0 when unset.
	Shares int64
	// PeriodUS is quota:cpu_period, the CFS period in µs; 0 when unset.
	PeriodUS int64
	// QuotaUS is quota:cpu_quota, µs of CPU time per period PER vCPU as
	// libvirt applies it to each vCPU thread; 0 when unset, negative for
	// "no quota" (each vCPU may then use a whole CPU).
	QuotaUS int64
	// Dedicated is hw:cpu_policy=dedicated, Nova's PCPU model: the
	// server needs one CPU of its host's cpu_dedicated_set per vCPU
	// (CPUPools), exclusively. The scheduler counts them per host
	// (store.ClaimOnHost) and the docker driver pins the server to them
	// (drivers/docker/cpuset.go), refusing the build when none are free.
	Dedicated bool
}

// CFS returns the CFS period and whole-server quota, in µs, for a server
// with vcpus vCPUs. Nova's quota is per vCPU, so the server's quota is
// quota × vCPUs; a per-vCPU quota above the period, or none, gives each
// vCPU at most one whole CPU, as a VM's vCPU thread can use no more. So a
// server never gets more than its vCPUs' worth of CPU: what the flavor
// promises and no more.
func (c CPU) CFS(vcpus int) (periodUS, quotaUS int64) {
	periodUS = c.PeriodUS
	if periodUS == 0 {
		periodUS = DefaultCPUPeriodUS
	}
	perVCPU := c.QuotaUS
	if perVCPU <= 0 || perVCPU > periodUS {
		perVCPU = periodUS
	}
	return periodUS, perVCPU * int64(max(vcpus, 1))
}

// EffectiveShares is the CPU weight to apply: quota:cpu_shares when set,
// else 1024 per vCPU (a bigger flavor weighs more, as libvirt's default).
func (c CPU) EffectiveShares(vcpus int) int64 {
	if c.Shares > 0 {
		return c.Shares
	}
	return 1024 * int64(max(vcpus, 1))
}

// Disk throttles, bytes and operations per second; 0 means not limited.
// A total_* limit cannot be combined with read/write ones of the same unit
// (Parse refuses it, as libvirt does).
type Disk struct {
	ReadBytesSec, WriteBytesSec, TotalBytesSec int64
	ReadIOPSSec, WriteIOPSSec, TotalIOPSSec    int64
}

// Throttles returns the per-direction limits to apply (0 = none). The
// kernel's throttles are per direction, so a total_* limit is applied to
// reads and to writes each: a server doing both at once may reach twice
// the total, which is the closest a per-direction throttle gets.
func (d Disk) Throttles() (readBps, writeBps, readIOPS, writeIOPS int64) {
	readBps, writeBps = d.ReadBytesSec, d.WriteBytesSec
	if d.TotalBytesSec > 0 {
		readBps, writeBps = d.TotalBytesSec, d.TotalBytesSec
	}
	readIOPS, writeIOPS = d.ReadIOPSSec, d.WriteIOPSSec
	if d.TotalIOPSSec > 0 {
		readIOPS, writeIOPS = d.TotalIOPSSec, d.TotalIOPSSec
	}
	return readBps, writeBps, readIOPS, writeIOPS
}

// Limited reports whether any disk throttle is set.
func (d Disk) Limited() bool { return d != Disk{} }

// VIF is the NIC shaping of each of the server's ports. Inbound is traffic
// into the server, outbound traffic out of it (libvirt's <bandwidth>).
type VIF struct {
	Inbound, Outbound Shaping
}

// Limited reports whether any direction is shaped.
func (v VIF) Limited() bool { return v.Inbound.Limited() || v.Outbound.Limited() }

// Shaping of one direction, in Nova's units: kilobytes per second and
// kilobytes. 0 means unset; Peak and Burst are only set with Average.
type Shaping struct {
	AverageKBps int64 // quota:vif_*_average
	PeakKBps    int64 // quota:vif_*_peak, >= AverageKBps
	BurstKB     int64 // quota:vif_*_burst
}

// Limited reports whether this direction is shaped.
func (s Shaping) Limited() bool { return s.AverageKBps > 0 }

// AverageBytesPerSec is the average rate in bytes/s. libvirt hands the
// value to tc as "kbps", which iproute2 reads as 1000 bytes/s, so 1250
// KB/s is 10 Mbit/s.
func (s Shaping) AverageBytesPerSec() uint64 { return uint64(s.AverageKBps) * 1000 }

// PeakBytesPerSec is the peak rate in bytes/s (same unit as the average).
func (s Shaping) PeakBytesPerSec() uint64 { return uint64(s.PeakKBps) * 1000 }

// BurstBytes is the burst size in bytes. libvirt hands it to tc as "kb",
// which iproute2 reads as 1024 bytes.
func (s Shaping) BurstBytes() uint64 { return uint64(s.BurstKB) * 1024 }

// Error is one rejected extra spec.
type Error struct {
	Key, Value, Reason string
}

func (e *Error) Error() string {
	return fmt.Sprintf("extra spec %s=%q: %s", e.Key, e.Value, e.Reason)
}

// Errors are all the rejected extra specs of one Parse, sorted by key.
type Errors []*Error

func (es Errors) Error() string {
	msgs := make([]string, len(es))
	for i, e := range es {
		msgs[i] = e.Error()
	}
	return strings.Join(msgs, "; ")
}

// Unwrap lets errors.As find each *Error.
func (es Errors) Unwrap() []error {
	out := make([]error, len(es))
	for i, e := range es {
		out[i] = e
	}
	return out
}

// field is how one known key is parsed.
type field struct {
	min, max int64
	// zeroOK: 0 is accepted and means "unset" (Nova's validators accept
	// it for these keys).
	zeroOK bool
	// negOK: any negative value is accepted (cpu_quota: no quota).
	negOK bool
	dst   func(*Limits) *int64
	unit  string
}

var intFields = map[string]field{
	KeyCPUShares: {min: MinCPUShares, max: MaxCPUShares, zeroOK: true, dst: func(l *Limits) *int64 { return &l.CPU.Shares }, unit: "a relative weight"},
	KeyCPUPeriod: {min: MinCPUPeriodUS, max: MaxCPUPeriodUS, zeroOK: true, dst: func(l *Limits) *int64 { return &l.CPU.PeriodUS }, unit: "µs"},
	KeyCPUQuota:  {min: MinCPUQuotaUS, max: MaxCPUQuotaUS, zeroOK: true, negOK: true, dst: func(l *Limits) *int64 { return &l.CPU.QuotaUS }, unit: "µs per period per vCPU, negative for no quota"},

	KeyDiskReadBytes:  diskField(func(l *Limits) *int64 { return &l.Disk.ReadBytesSec }, "bytes/s"),
	KeyDiskWriteBytes: diskField(func(l *Limits) *int64 { return &l.Disk.WriteBytesSec }, "bytes/s"),
	KeyDiskTotalBytes: diskField(func(l *Limits) *int64 { return &l.Disk.TotalBytesSec }, "bytes/s"),
	KeyDiskReadIOPS:   diskField(func(l *Limits) *int64 { return &l.Disk.ReadIOPSSec }, "operations/s"),
	KeyDiskWriteIOPS:  diskField(func(l *Limits) *int64 { return &l.Disk.WriteIOPSSec }, "operations/s"),
	KeyDiskTotalIOPS:  diskField(func(l *Limits) *int64 { return &l.Disk.TotalIOPSSec }, "operations/s"),

	KeyVIFInboundAverage:  vifField(func(l *Limits) *int64 { return &l.VIF.Inbound.AverageKBps }, "KB/s"),
	KeyVIFInboundPeak:     vifField(func(l *Limits) *int64 { return &l.VIF.Inbound.PeakKBps }, "KB/s"),
	KeyVIFInboundBurst:    vifField(func(l *Limits) *int64 { return &l.VIF.Inbound.BurstKB }, "KB"),
	KeyVIFOutboundAverage: vifField(func(l *Limits) *int64 { return &l.VIF.Outbound.AverageKBps }, "KB/s"),
	KeyVIFOutboundPeak:    vifField(func(l *Limits) *int64 { return &l.VIF.Outbound.PeakKBps }, "KB/s"),
	KeyVIFOutboundBurst:   vifField(func(l *Limits) *int64 { return &l.VIF.Outbound.BurstKB }, "KB"),

	KeyNUMANodes: {min: 1, max: 1024, dst: func(l *Limits) *int64 { return &l.NUMANodes }, unit: "NUMA nodes"},
	KeyPidsMax:   {min: MinPidsMax, max: MaxPidsMax, dst: func(l *Limits) *int64 { return &l.PidsMax }, unit: "tasks"},
}

// Disk and NIC rates: 0 means unlimited, as in Nova; the upper bound only
// keeps the byte conversions from overflowing.
func diskField(dst func(*Limits) *int64, unit string) field {
	return field{min: 1, max: 1 << 50, zeroOK: true, dst: dst, unit: unit}
}

func vifField(dst func(*Limits) *int64, unit string) field {
	return field{min: 1, max: 1 << 40, zeroOK: true, dst: dst, unit: unit}
}

// vmwareOnly are Nova keys in quota: that only the VMware driver reads.
var vmwareOnly = func() map[string]bool {
	m := map[string]bool{}
	for _, r := range []string{"cpu", "memory", "disk_io", "vif"} {
		for _, s := range []string{"limit", "reservation", "shares_level", "shares_share"} {
			m["quota:"+r+"_"+s] = true
		}
	}
	return m
}()

// Parse validates extraSpecs for a flavor of vcpus vCPUs and returns the
// limits they ask for. Every rejected key is reported (as Errors, each
// naming its key) rather than only the first, so an operator fixes a
// flavor in one go.
func Parse(extraSpecs map[string]string, vcpus int) (Limits, error) {
	var l Limits
	var errs Errors
	bad := func(k, reason string) {
		errs = append(errs, &Error{Key: k, Value: extraSpecs[k], Reason: reason})
	}
	keys := make([]string, 0, len(extraSpecs))
	for k := range extraSpecs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := strings.TrimSpace(extraSpecs[k])
		if f, ok := intFields[k]; ok {
			n, reason := f.parse(v)
			if reason != "" {
				bad(k, reason)
				continue
			}
			*f.dst(&l) = n
			continue
		}
		switch {
		case k == KeyCPUPolicy:
			switch v {
			case "shared":
			case "dedicated":
				l.CPU.Dedicated = true
			default:
				bad(k, `must be "shared" or "dedicated"`)
			}
		case vmwareOnly[k]:
			bad(k, "is read by Nova's VMware driver only; Capsule does not support it")
		case strict(k):
			bad(k, "unknown extra spec in a namespace Capsule validates (quota:, hw:, capsule:)")
		}
	}
	if vcpus < 1 {
		errs = append(errs, &Error{Key: "vcpus", Value: strconv.Itoa(vcpus), Reason: "a flavor has at least 1 vCPU"})
	}
	errs = append(errs, combinations(extraSpecs, l)...)
	if len(errs) > 0 {
		sort.SliceStable(errs, func(i, j int) bool { return errs[i].Key < errs[j].Key })
		return Limits{}, errs
	}
	return l, nil
}

func strict(k string) bool {
	for _, ns := range strictNamespaces {
		if strings.HasPrefix(k, ns) {
			return true
		}
	}
	return false
}

// parse reads one integer value; reason is empty when it is valid.
func (f field) parse(v string) (int64, string) {
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0, "must be an integer (" + f.unit + ")"
	}
	switch {
	case n == 0 && f.zeroOK, n < 0 && f.negOK:
		return n, ""
	case n < f.min || n > f.max:
		r := fmt.Sprintf("must be between %d and %d (%s)", f.min, f.max, f.unit)
		if f.zeroOK {
			r += ", or 0 for unset"
		}
		return 0, r
	}
	return n, ""
}

// combinations checks what single keys cannot: libvirt refuses a total
// throttle together with a read or write one of the same unit, and a peak
// or burst without the average it shapes around (a peak below the average
// would make no sense to HTB either).
func combinations(specs map[string]string, l Limits) Errors {
	var errs Errors
	conflict := func(total string, others ...string) {
		if _, ok := specs[total]; !ok {
			return
		}
		for _, o := range others {
			if _, ok := specs[o]; ok {
				errs = append(errs, &Error{Key: total, Value: specs[total],
					Reason: "cannot be combined with " + o + " (libvirt refuses total and read/write throttles together)"})
			}
		}
	}
	conflict(KeyDiskTotalBytes, KeyDiskReadBytes, KeyDiskWriteBytes)
	conflict(KeyDiskTotalIOPS, KeyDiskReadIOPS, KeyDiskWriteIOPS)
	for _, d := range []struct {
		s                    Shaping
		average, peak, burst string
	}{
		{l.VIF.Inbound, KeyVIFInboundAverage, KeyVIFInboundPeak, KeyVIFInboundBurst},
		{l.VIF.Outbound, KeyVIFOutboundAverage, KeyVIFOutboundPeak, KeyVIFOutboundBurst},
	} {
		if d.s.AverageKBps == 0 {
			for _, k := range []string{d.peak, d.burst} {
				if n := *fieldOf(k, &l); n != 0 {
					errs = append(errs, &Error{Key: k, Value: specs[k], Reason: "needs " + d.average + " (libvirt shapes around the average)"})
				}
			}
			continue
		}
		if d.s.PeakKBps != 0 && d.s.PeakKBps < d.s.AverageKBps {
			errs = append(errs, &Error{Key: d.peak, Value: specs[d.peak], Reason: "must be at least " + d.average})
		}
	}
	return errs
}

func fieldOf(k string, l *Limits) *int64 { return intFields[k].dst(l) }

// Keys lists every extra spec key Parse accepts, sorted (for docs and
// error messages).
func Keys() []string {
	out := []string{KeyCPUPolicy}
	for k := range intFields {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
