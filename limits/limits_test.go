package limits_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/capsule-cloud/capsule/limits"
)

func TestParseAccepts(t *testing.T) {
	for _, tc := range []struct {
		name  string
		specs map[string]string
		vcpus int
		want  limits.Limits
	}{
		{name: "nothing", specs: nil, vcpus: 1, want: limits.Limits{}},
		{name: "other namespaces are ignored", vcpus: 2,
			specs: map[string]string{"aggregate_instance_extra_specs:ssd": "true", "trait:HW_CPU_X86_AVX": "required",
				"hw_rng:allowed": "True", "resources:VGPU": "1", "nonamespace": "x"},
			want: limits.Limits{}},
		{name: "cpu", vcpus: 2,
			specs: map[string]string{"quota:cpu_shares": "512", "quota:cpu_period": "50000", "quota:cpu_quota": "25000", "hw:cpu_policy": "shared"},
			want:  limits.Limits{CPU: limits.CPU{Shares: 512, PeriodUS: 50000, QuotaUS: 25000}}},
		{name: "cpu zero means unset, negative quota means none", vcpus: 1,
			specs: map[string]string{"quota:cpu_shares": "0", "quota:cpu_period": "0", "quota:cpu_quota": "-1"},
			want:  limits.Limits{CPU: limits.CPU{QuotaUS: -1}}},
		{name: "dedicated", vcpus: 4, specs: map[string]string{"hw:cpu_policy": "dedicated"},
			want: limits.Limits{CPU: limits.CPU{Dedicated: true}}},
		{name: "disk read/write", vcpus: 1,
			specs: map[string]string{"quota:disk_read_bytes_sec": "10485760", "quota:disk_write_bytes_sec": "5242880",
				"quota:disk_read_iops_sec": "200", "quota:disk_write_iops_sec": "100"},
			want: limits.Limits{Disk: limits.Disk{ReadBytesSec: 10485760, WriteBytesSec: 5242880, ReadIOPSSec: 200, WriteIOPSSec: 100}}},
		{name: "disk totals", vcpus: 1,
			specs: map[string]string{"quota:disk_total_bytes_sec": "1000000", "quota:disk_total_iops_sec": "50"},
			want:  limits.Limits{Disk: limits.Disk{TotalBytesSec: 1000000, TotalIOPSSec: 50}}},
		{name: "total bytes with read iops is fine", vcpus: 1,
			specs: map[string]string{"quota:disk_total_bytes_sec": "1000000", "quota:disk_read_iops_sec": "50"},
			want:  limits.Limits{Disk: limits.Disk{TotalBytesSec: 1000000, ReadIOPSSec: 50}}},
		{name: "vif", vcpus: 1,
			specs: map[string]string{"quota:vif_inbound_average": "1250", "quota:vif_inbound_peak": "2500", "quota:vif_inbound_burst": "64",
				"quota:vif_outbound_average": "625"},
			want: limits.Limits{VIF: limits.VIF{Inbound: limits.Shaping{AverageKBps: 1250, PeakKBps: 2500, BurstKB: 64},
				Outbound: limits.Shaping{AverageKBps: 625}}}},
		{name: "numa nodes are accepted", vcpus: 1, specs: map[string]string{"hw:numa_nodes": "2"}, want: limits.Limits{NUMANodes: 2}},
		{name: "pids", vcpus: 1, specs: map[string]string{"capsule:pids_max": " 256 "}, want: limits.Limits{PidsMax: 256}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := limits.Parse(tc.specs, tc.vcpus)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if got != tc.want {
				t.Errorf("Parse = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestParseRejects(t *testing.T) {
	for _, tc := range []struct {
		specs map[string]string
		vcpus int
		key   string // the key the error must name
		msg   string // and a part of its reason
	}{
		{map[string]string{"quota:cpu_quota": "abc"}, 1, "quota:cpu_quota", "integer"},
		{map[string]string{"quota:cpu_quota": "1.5"}, 1, "quota:cpu_quota", "integer"},
		{map[string]string{"quota:cpu_quota": ""}, 1, "quota:cpu_quota", "integer"},
		{map[string]string{"quota:cpu_quota": "999"}, 1, "quota:cpu_quota", "between 1000"},
		{map[string]string{"quota:cpu_period": "999"}, 1, "quota:cpu_period", "between 1000 and 1000000"},
		{map[string]string{"quota:cpu_period": "1000001"}, 1, "quota:cpu_period", "between"},
		{map[string]string{"quota:cpu_period": "-5"}, 1, "quota:cpu_period", "between"},
		{map[string]string{"quota:cpu_shares": "1"}, 1, "quota:cpu_shares", "between 2 and 262144"},
		{map[string]string{"quota:cpu_shares": "262145"}, 1, "quota:cpu_shares", "between"},
		{map[string]string{"hw:cpu_policy": "mixed"}, 1, "hw:cpu_policy", "shared"},
		{map[string]string{"hw:cpu_thread_policy": "isolate"}, 1, "hw:cpu_thread_policy", "unknown"},
		{map[string]string{"quota:cpu_quotas": "1000"}, 1, "quota:cpu_quotas", "unknown"},
		{map[string]string{"capsule:pid_max": "100"}, 1, "capsule:pid_max", "unknown"},
		{map[string]string{"quota:cpu_limit": "1000"}, 1, "quota:cpu_limit", "VMware"},
		{map[string]string{"quota:disk_read_bytes_sec": "-1"}, 1, "quota:disk_read_bytes_sec", "between"},
		{map[string]string{"quota:disk_write_iops_sec": "10k"}, 1, "quota:disk_write_iops_sec", "integer"},
		{map[string]string{"quota:disk_total_bytes_sec": "100", "quota:disk_read_bytes_sec": "100"}, 1, "quota:disk_total_bytes_sec", "quota:disk_read_bytes_sec"},
		{map[string]string{"quota:disk_total_iops_sec": "100", "quota:disk_write_iops_sec": "100"}, 1, "quota:disk_total_iops_sec", "quota:disk_write_iops_sec"},
		{map[string]string{"quota:vif_inbound_average": "x"}, 1, "quota:vif_inbound_average", "integer"},
		{map[string]string{"quota:vif_outbound_peak": "100"}, 1, "quota:vif_outbound_peak", "quota:vif_outbound_average"},
		{map[string]string{"quota:vif_inbound_burst": "100"}, 1, "quota:vif_inbound_burst", "quota:vif_inbound_average"},
		{map[string]string{"quota:vif_inbound_average": "100", "quota:vif_inbound_peak": "50"}, 1, "quota:vif_inbound_peak", "at least"},
		{map[string]string{"hw:numa_nodes": "0"}, 1, "hw:numa_nodes", "between 1"},
		{map[string]string{"capsule:pids_max": "15"}, 1, "capsule:pids_max", "between 16"},
		{map[string]string{"capsule:pids_max": "0"}, 1, "capsule:pids_max", "between 16"},
		{map[string]string{"capsule:pids_max": "99999999"}, 1, "capsule:pids_max", "between"},
		{nil, 0, "vcpus", "at least 1"},
	} {
		_, err := limits.Parse(tc.specs, tc.vcpus)
		if err == nil {
			t.Errorf("Parse(%v) accepted", tc.specs)
			continue
		}
		var e *limits.Error
		if !errors.As(err, &e) || e.Key != tc.key {
			t.Errorf("Parse(%v) = %v, want an error naming %s", tc.specs, err, tc.key)
			continue
		}
		if !strings.Contains(err.Error(), tc.key) || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("Parse(%v) = %q, want it to mention %q and %q", tc.specs, err, tc.key, tc.msg)
		}
	}
}

// Every bad key is reported at once, in key order.
func TestParseReportsAll(t *testing.T) {
	_, err := limits.Parse(map[string]string{"quota:cpu_quota": "x", "hw:foo": "1", "quota:cpu_shares": "1", "zzz:ok": "1"}, 1)
	var es limits.Errors
	if !errors.As(err, &es) || len(es) != 3 {
		t.Fatalf("err = %v, want 3 errors", err)
	}
	if es[0].Key != "hw:foo" || es[1].Key != "quota:cpu_quota" || es[2].Key != "quota:cpu_shares" {
		t.Errorf("keys = %s %s %s", es[0].Key, es[1].Key, es[2].Key)
	}
	if s := err.Error(); strings.Count(s, "; ") != 2 || strings.Contains(s, "\n") {
		t.Errorf("message %q: want one line, three parts", s)
	}
}

func TestCFS(t *testing.T) {
	for _, tc := range []struct {
		cpu                limits.CPU
		vcpus              int
		wantPeriod, wantQt int64
	}{
		{limits.CPU{}, 1, 100000, 100000},
		{limits.CPU{}, 4, 100000, 400000},
		{limits.CPU{QuotaUS: 50000}, 1, 100000, 50000},
		{limits.CPU{QuotaUS: 50000}, 2, 100000, 100000},
		{limits.CPU{PeriodUS: 10000, QuotaUS: 5000}, 3, 10000, 15000},
		{limits.CPU{PeriodUS: 20000}, 2, 20000, 40000},
		// No quota, or more than a period per vCPU: a vCPU is at most a CPU.
		{limits.CPU{QuotaUS: -1}, 2, 100000, 200000},
		{limits.CPU{QuotaUS: 300000}, 2, 100000, 200000},
	} {
		p, q := tc.cpu.CFS(tc.vcpus)
		if p != tc.wantPeriod || q != tc.wantQt {
			t.Errorf("%+v.CFS(%d) = %d/%d, want %d/%d", tc.cpu, tc.vcpus, q, p, tc.wantQt, tc.wantPeriod)
		}
	}
	if s := (limits.CPU{}).EffectiveShares(3); s != 3072 {
		t.Errorf("default shares for 3 vCPUs = %d", s)
	}
	if s := (limits.CPU{Shares: 100}).EffectiveShares(3); s != 100 {
		t.Errorf("shares = %d, want 100", s)
	}
}

func TestDiskThrottles(t *testing.T) {
	r, w, ri, wi := limits.Disk{ReadBytesSec: 1, WriteBytesSec: 2, ReadIOPSSec: 3, WriteIOPSSec: 4}.Throttles()
	if r != 1 || w != 2 || ri != 3 || wi != 4 {
		t.Errorf("read/write throttles = %d %d %d %d", r, w, ri, wi)
	}
	r, w, ri, wi = limits.Disk{TotalBytesSec: 7, TotalIOPSSec: 9}.Throttles()
	if r != 7 || w != 7 || ri != 9 || wi != 9 {
		t.Errorf("total throttles = %d %d %d %d", r, w, ri, wi)
	}
	if (limits.Disk{}).Limited() || !(limits.Disk{TotalIOPSSec: 1}).Limited() {
		t.Error("Limited is wrong")
	}
}

func TestShapingUnits(t *testing.T) {
	s := limits.Shaping{AverageKBps: 1250, PeakKBps: 2500, BurstKB: 64}
	// 1250 KB/s is 10 Mbit/s, as the issue and libvirt's tc "kbps" have it.
	if got := s.AverageBytesPerSec() * 8; got != 10_000_000 {
		t.Errorf("average = %d bit/s, want 10 Mbit/s", got)
	}
	if s.PeakBytesPerSec() != 2_500_000 || s.BurstBytes() != 64*1024 {
		t.Errorf("peak %d, burst %d", s.PeakBytesPerSec(), s.BurstBytes())
	}
	if !(limits.VIF{Outbound: s}).Limited() || (limits.VIF{}).Limited() {
		t.Error("VIF.Limited is wrong")
	}
}

func TestKeys(t *testing.T) {
	keys := limits.Keys()
	if len(keys) != 18 {
		t.Errorf("Keys() = %d keys, want 18: %v", len(keys), keys)
	}
	specs := map[string]string{}
	for _, k := range keys {
		specs[k] = "x"
	}
	// Every listed key is known: the errors are about values only.
	_, err := limits.Parse(specs, 1)
	if err == nil || strings.Contains(err.Error(), "unknown") {
		t.Errorf("Parse of all keys with bad values = %v", err)
	}
}
