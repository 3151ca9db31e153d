package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/flavors"
	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/images"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/networks"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/subnets"
)

// acceptanceSuites are the packages of gophercloud's own acceptance tests
// (internal/acceptance/openstack/..., build tag acceptance, of the
// gophercloud version in go.mod) that TestGophercloudAcceptance runs: the
// services Capsule implements and the Neutron extensions it lists, plus
// Cinder v3 (the volumes being built).
var acceptanceSuites = []string{
	"compute/v2",
	"identity/v3",
	"image/v2",
	"networking/v2",
	"networking/v2/extensions", // security groups, provider networks, tags
	"networking/v2/extensions/quotas",
	"networking/v2/extensions/portsbinding",
	"networking/v2/extensions/mtu",
	"blockstorage/v3",
}

// acceptanceExpected is the checked-in list of acceptance tests known not
// to pass, each with its reason (docs/compatibility.md mirrors it).
const acceptanceExpected = "testdata/gophercloud-acceptance.txt"

// acceptanceResult is how one acceptance test ended.
type acceptanceResult struct {
	suite, test string
	outcome     string // pass, fail or skip
	output      string // the test's output (tail), for a failure or a skip
	elapsed     time.Duration
}

// expectedFailure is one line of acceptanceExpected: a test that fails
// today and why.
type expectedFailure struct {
	suite, test, reason string
}

// TestGophercloudAcceptance runs gophercloud v2's own acceptance tests
// against a cloud of its own (one host, physnet1 on a real OVS bridge, a
// network "private" for the servers, the busybox image, flavors m1.tiny
// and m1.small), as admin, the way gophercloud's CI runs them against
// DevStack. Each test runs in a process of its own with a time limit
// (CAPSULE_ACCEPTANCE_TEST_TIMEOUT, default 4m), so a hang costs one test;
// the tests of a suite run one after another and the suites side by side,
// as go test runs packages. The test fails when a test not listed in
// testdata/gophercloud-acceptance.txt fails (a regression) or when a
// listed one no longer exists; a listed test that now passes is reported
// so the list shrinks.
//
// By hand (docs/operations.md): CAPSULE_ACCEPTANCE_SUITES=identity/v3
// (comma-separated) picks suites, CAPSULE_ACCEPTANCE_RUN=regexp picks
// tests, CAPSULE_ACCEPTANCE_OUT=dir keeps every test's output there.
func TestGophercloudAcceptance(t *testing.T) {
	t.Parallel()
	suites := acceptanceSuites
	if s := os.Getenv("CAPSULE_ACCEPTANCE_SUITES"); s != "" {
		suites = strings.Split(s, ",")
	}
	var runRE *regexp.Regexp
	if s := os.Getenv("CAPSULE_ACCEPTANCE_RUN"); s != "" {
		runRE = regexp.MustCompile(s)
	}
	perTest := 4 * time.Minute
	if s := os.Getenv("CAPSULE_ACCEPTANCE_TEST_TIMEOUT"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("CAPSULE_ACCEPTANCE_TEST_TIMEOUT: %v", err)
		}
		perTest = d
	}
	outDir := os.Getenv("CAPSULE_ACCEPTANCE_OUT")
	expected, err := readExpectedFailures(acceptanceExpected)
	if err != nil {
		t.Fatal(err)
	}

	// The test binaries build while the cloud starts.
	binDir := t.TempDir()
	type built struct {
		bin string
		err error
	}
	builds := make(map[string]chan built, len(suites))
	for _, s := range suites {
		ch := make(chan built, 1)
		builds[s] = ch
		go func() {
			bin := filepath.Join(binDir, strings.ReplaceAll(s, "/", "_")+".test")
			out, err := exec.Command("go", "test", "-c", "-tags", "acceptance", "-o", bin, acceptancePackage(s)).CombinedOutput()
			if err != nil {
				err = fmt.Errorf("build the %s acceptance tests: %v\n%s", s, err, out)
			}
			ch <- built{bin, err}
		}()
	}

	c := startCloud(t, withBridge, withQuota(40))
	env := c.acceptanceEnv(t)

	var mu sync.Mutex
	var results []acceptanceResult
	var wg sync.WaitGroup
	for _, s := range suites {
		b := <-builds[s]
		if b.err != nil {
			t.Error(b.err)
			continue
		}
		tests, err := listTests(b.bin)
		if err != nil {
			t.Errorf("list the %s acceptance tests: %v", s, err)
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, name := range tests {
				if runRE != nil && !runRE.MatchString(name) {
					continue
				}
				tenv := env
				if ephemeralFlavorTests[name] {
					tenv = append(env[:len(env):len(env)], "OS_FLAVOR_ID="+acceptanceEphemeralFlavor)
				}
				r := runAcceptanceTest(b.bin, s, name, tenv, perTest)
				if outDir != "" {
					p := filepath.Join(outDir, strings.ReplaceAll(s, "/", "_")+"."+name+"."+r.outcome+".log")
					_ = os.WriteFile(p, []byte(r.output), 0o644)
				}
				mu.Lock()
				results = append(results, r)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	judgeAcceptance(t, results, expected, suites, runRE)
}

// acceptancePackage is the import path of one acceptance suite.
func acceptancePackage(suite string) string {
	return "github.com/gophercloud/gophercloud/v2/internal/acceptance/openstack/" + suite
}

// acceptanceEphemeralFlavor is the flavor with an ephemeral disk size
// (2 GB) that the tests of ephemeralFlavorTests boot with: gophercloud's
// CI gives all its tests such a flavor (its flavor 99 has
// --ephemeral 10), and Nova refuses ephemeral disks beyond the flavor's
// size, so with m1.tiny's 0 they would be refused as Nova refuses them.
const acceptanceEphemeralFlavor = "99"

// ephemeralFlavorTests boot with acceptanceEphemeralFlavor.
var ephemeralFlavorTests = map[string]bool{"TestBootFromMultiEphemeralServer": true}

// acceptanceEnv prepares what the acceptance tests expect to find (a
// network named private with a subnet, an image, two flavors) and returns
// their environment: the OS_* variables of gophercloud's acceptance
// README, as admin.
func (c *cloud) acceptanceEnv(t *testing.T) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pc, err := c.provider(ctx, "admin", c.adminPass, "admin")
	if err != nil {
		t.Fatalf("authenticate admin: %v", err)
	}
	nc, err := openstack.NewNetworkV2(pc, gophercloud.EndpointOpts{Region: "RegionOne"})
	if err != nil {
		t.Fatal(err)
	}
	shared := true
	n, err := networks.Create(ctx, nc, networks.CreateOpts{Name: "private", Shared: &shared}).Extract()
	if err != nil {
		t.Fatalf("create network private: %v", err)
	}
	if _, err := subnets.Create(ctx, nc, subnets.CreateOpts{NetworkID: n.ID, Name: "private-subnet", CIDR: "10.0.0.0/24",
		IPVersion: gophercloud.IPv4}).Extract(); err != nil {
		t.Fatalf("create the subnet of private: %v", err)
	}
	cc, err := openstack.NewComputeV2(pc, gophercloud.EndpointOpts{Region: "RegionOne"})
	if err != nil {
		t.Fatal(err)
	}
	disk, eph := 1, 2
	if _, err := flavors.Create(ctx, cc, flavors.CreateOpts{ID: acceptanceEphemeralFlavor, Name: "m1.acctest", RAM: 128, VCPUs: 1,
		Disk: &disk, Ephemeral: &eph}).Extract(); err != nil {
		t.Fatalf("create flavor m1.acctest: %v", err)
	}
	ic, err := openstack.NewImageV2(pc, gophercloud.EndpointOpts{Region: "RegionOne"})
	if err != nil {
		t.Fatal(err)
	}
	pages, err := images.List(ic, images.ListOpts{Name: "busybox"}).AllPages(ctx)
	if err != nil {
		t.Fatalf("list images: %v", err)
	}
	imgs, err := images.ExtractImages(pages)
	if err != nil || len(imgs) != 1 {
		t.Fatalf("image busybox: %v %v", imgs, err)
	}
	return append(os.Environ(),
		"OS_AUTH_URL="+c.authURL(), "OS_USERNAME=admin", "OS_PASSWORD="+c.adminPass,
		"OS_PROJECT_NAME=admin", "OS_DOMAIN_NAME=Default", "OS_USER_DOMAIN_NAME=Default",
		"OS_PROJECT_DOMAIN_NAME=Default", "OS_REGION_NAME=RegionOne", "OS_INTERFACE=public",
		"OS_IMAGE_ID="+imgs[0].ID, "OS_FLAVOR_ID=1", "OS_FLAVOR_ID_RESIZE=2",
		"OS_NETWORK_NAME=private", "OS_NETWORK_ID="+n.ID,
		// No floating IPs nor external networks (docs/compatibility.md):
		// names the tests need set, which nothing matches.
		"OS_POOL_NAME=public", "OS_EXTGW_ID=00000000-0000-0000-0000-000000000000",
		// The newest release: the tests of the newest behaviour run.
		"OS_BRANCH=master",
	)
}

// listTests lists the top-level tests of a compiled test binary.
func listTests(bin string) ([]string, error) {
	out, err := exec.Command(bin, "-test.list", ".").Output()
	if err != nil {
		return nil, err
	}
	var tests []string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, "Test") {
			tests = append(tests, l)
		}
	}
	return tests, nil
}

// runAcceptanceTest runs one test of a suite in a process of its own, in
// a scratch directory (some tests write files), with the binary's own
// -test.timeout as the time limit and a kill a little later should even
// that not end it.
func runAcceptanceTest(bin, suite, name string, env []string, limit time.Duration) acceptanceResult {
	start := time.Now()
	dir, err := os.MkdirTemp("", "capsule-acceptance")
	if err != nil {
		return acceptanceResult{suite: suite, test: name, outcome: "fail", output: err.Error()}
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithTimeout(context.Background(), limit+30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-test.run", "^"+regexp.QuoteMeta(name)+"$", "-test.v",
		"-test.timeout", limit.String(), "-test.count", "1")
	cmd.Dir, cmd.Env = dir, env
	out, err := cmd.CombinedOutput()
	r := acceptanceResult{suite: suite, test: name, output: string(out), elapsed: time.Since(start)}
	var exit *exec.ExitError
	switch {
	case err == nil && strings.Contains(r.output, "--- SKIP: "+name+" "):
		r.outcome = "skip"
	case err == nil:
		r.outcome = "pass"
	default:
		r.outcome = "fail"
		if !errors.As(err, &exit) || ctx.Err() != nil { // killed, or never ran
			r.output += "\n" + err.Error()
		}
	}
	return r
}

// judgeAcceptance reports the results per suite and fails the test on a
// failure the expected list does not have.
func judgeAcceptance(t *testing.T, results []acceptanceResult, expected map[string]expectedFailure, suites []string, runRE *regexp.Regexp) {
	t.Helper()
	sort.Slice(results, func(i, j int) bool {
		if results[i].suite != results[j].suite {
			return results[i].suite < results[j].suite
		}
		return results[i].test < results[j].test
	})
	type counts struct{ pass, fail, skip int }
	per := map[string]*counts{}
	for _, s := range suites {
		per[s] = &counts{}
	}
	seen := map[string]bool{}
	var nowPassing []string
	for _, r := range results {
		key := r.suite + " " + r.test
		seen[key] = true
		e, listed := expected[key]
		switch r.outcome {
		case "pass":
			per[r.suite].pass++
			if listed {
				nowPassing = append(nowPassing, key+" ("+e.reason+")")
			}
		case "skip":
			per[r.suite].skip++
			t.Logf("skipped: %s: %s", key, skipReason(r.output))
		case "fail":
			per[r.suite].fail++
			if listed {
				t.Logf("expected failure: %s (%s)", key, e.reason)
				continue
			}
			t.Errorf("acceptance test %s failed (%s), and testdata/gophercloud-acceptance.txt does not expect it:\n%s",
				key, r.elapsed.Round(time.Second), tail(r.output, 6000))
		}
	}
	for _, s := range suites {
		n := per[s]
		t.Logf("gophercloud acceptance %s: %d passed, %d failed, %d skipped", s, n.pass, n.fail, n.skip)
	}
	for _, k := range nowPassing {
		t.Logf("NOW PASSES, remove it from testdata/gophercloud-acceptance.txt: %s", k)
	}
	if runRE != nil || len(suites) != len(acceptanceSuites) {
		return // a partial run: the list is not checked for stale entries
	}
	for key := range expected {
		if !seen[key] {
			t.Errorf("testdata/gophercloud-acceptance.txt lists %s, which no suite has", key)
		}
	}
}

// skipReason is the message of a skipped test's t.Skip.
func skipReason(out string) string {
	lines := strings.Split(strings.TrimSpace(out), "\n")
	for i, l := range lines {
		if strings.Contains(l, "--- SKIP:") && i > 0 {
			return strings.TrimSpace(lines[i-1])
		}
	}
	return ""
}

// readExpectedFailures reads the expected list: "suite test reason..."
// per line, # comments.
func readExpectedFailures(path string) (map[string]expectedFailure, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]expectedFailure{}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fields := strings.Fields(line)
		if len(fields) < 3 {
			return nil, fmt.Errorf("%s:%d: want \"suite test reason\", got %q", path, n, line)
		}
		e := expectedFailure{suite: fields[0], test: fields[1], reason: strings.Join(fields[2:], " ")}
		key := e.suite + " " + e.test
		if _, dup := out[key]; dup {
			return nil, fmt.Errorf("%s:%d: %s listed twice", path, n, key)
		}
		out[key] = e
	}
	return out, sc.Err()
}

// TestGophercloudAcceptanceListMirrored checks that docs/compatibility.md's
// table of acceptance tests that do not pass is the expected list, line
// for line (no cloud needed).
func TestGophercloudAcceptanceListMirrored(t *testing.T) {
	t.Parallel()
	expected, err := readExpectedFailures(acceptanceExpected)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := os.ReadFile("../docs/compatibility.md")
	if err != nil {
		t.Fatal(err)
	}
	_, table, ok := strings.Cut(string(doc), "<!-- acceptance-list begin -->")
	table, _, ok2 := strings.Cut(table, "<!-- acceptance-list end -->")
	if !ok || !ok2 {
		t.Fatal("docs/compatibility.md has no <!-- acceptance-list begin/end --> table")
	}
	documented := map[string]string{}
	for _, l := range strings.Split(table, "\n") {
		cells := strings.Split(strings.Trim(strings.TrimSpace(l), "|"), "|")
		if len(cells) != 3 || strings.TrimSpace(cells[0]) == "Suite" || strings.HasPrefix(strings.TrimSpace(cells[0]), "---") {
			continue
		}
		documented[strings.TrimSpace(cells[0])+" "+strings.TrimSpace(cells[1])] = strings.TrimSpace(cells[2])
	}
	for key, e := range expected {
		if got, ok := documented[key]; !ok {
			t.Errorf("docs/compatibility.md does not list %s (%s)", key, e.reason)
		} else if got != e.reason {
			t.Errorf("docs/compatibility.md gives %s the reason %q, %s says %q", key, got, acceptanceExpected, e.reason)
		}
	}
	for key := range documented {
		if _, ok := expected[key]; !ok {
			t.Errorf("docs/compatibility.md lists %s, which %s does not", key, acceptanceExpected)
		}
	}
}
