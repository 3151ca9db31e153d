package archtest

import (
	"errors"
	"go/build"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
)

const module = "github.com/capsule-cloud/capsule"

// importRules: no package under From may depend, directly or not, on a
// package under any of Never (paths relative to the module).
var importRules = []struct {
	From  []string
	Never []string
	Why   string
}{
	{From: []string{"api-server"}, Never: []string{"conductor", "scheduler", "agent"},
		Why: "the API changes instances through package instance and talks to hosts over the bus only"},
	{From: []string{"agent", "drivers", "vif", "ovs"}, Never: []string{"store", "instance", "migrate", "conductor", "scheduler"},
		Why: "host packages have no database access: agents hold no database credentials"},
	{From: []string{"instance", "lifecycle", "store"}, Never: []string{"api-server", "conductor", "scheduler", "migrate", "agent"},
		Why: "the domain layer is below the roles that call it"},
}

// TestImportRules enforces importRules on the packages' non-test imports
// (what `go list -deps` reports), read with go/build.
func TestImportRules(t *testing.T) {
	root := moduleRoot(t)
	graph := importGraph(t, root)
	if len(graph) < 20 {
		t.Fatalf("found only %d packages under %s: the walk is broken", len(graph), root)
	}
	for _, r := range importRules {
		for pkg := range graph {
			if !under(pkg, r.From) {
				continue
			}
			for _, dep := range deps(graph, pkg) {
				if under(dep, r.Never) {
					t.Errorf("%s depends on %s (through %s): %s", pkg, dep, strings.Join(pathTo(graph, pkg, dep), " → "), r.Why)
				}
			}
		}
	}
}

// TestImportRulesCatchViolations: the checker sees an indirect import.
func TestImportRulesCatchViolations(t *testing.T) {
	g := map[string][]string{"api-server/compute": {"migrate"}, "migrate": {"scheduler"}, "scheduler": nil}
	if !slices.Contains(deps(g, "api-server/compute"), "scheduler") {
		t.Error("an indirect dependency is not seen")
	}
	if p := pathTo(g, "api-server/compute", "scheduler"); strings.Join(p, ",") != "api-server/compute,migrate,scheduler" {
		t.Errorf("path = %v", p)
	}
}

// under reports whether pkg (module-relative) is one of prefixes or
// inside one.
func under(pkg string, prefixes []string) bool {
	for _, p := range prefixes {
		if pkg == p || strings.HasPrefix(pkg, p+"/") {
			return true
		}
	}
	return false
}

// moduleRoot is the directory of go.mod above the working directory.
func moduleRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.mod not found")
		}
		dir = parent
	}
}

// importGraph maps every package of the module (module-relative path) to
// the module packages its non-test files import, for this platform.
func importGraph(t *testing.T, root string) map[string][]string {
	t.Helper()
	graph := map[string][]string{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			return nil
		}
		name := d.Name()
		if path != root && (strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_") || name == "testdata" || name == "vendor") {
			return filepath.SkipDir
		}
		pkg, err := build.Default.ImportDir(path, 0)
		var noGo *build.NoGoError
		if errors.As(err, &noGo) {
			return nil
		}
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, path)
		if err != nil {
			return err
		}
		var imports []string
		for _, imp := range pkg.Imports {
			if dep, ok := strings.CutPrefix(imp, module+"/"); ok {
				imports = append(imports, dep)
			}
		}
		graph[filepath.ToSlash(rel)] = imports
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return graph
}

// deps returns every package pkg depends on, sorted.
func deps(graph map[string][]string, pkg string) []string {
	seen := map[string]bool{}
	var visit func(string)
	visit = func(p string) {
		for _, d := range graph[p] {
			if !seen[d] {
				seen[d] = true
				visit(d)
			}
		}
	}
	visit(pkg)
	out := make([]string, 0, len(seen))
	for d := range seen {
		out = append(out, d)
	}
	sort.Strings(out)
	return out
}

// pathTo returns an import chain from pkg to dep (breadth first: a
// shortest one).
func pathTo(graph map[string][]string, pkg, dep string) []string {
	prev := map[string]string{pkg: ""}
	queue := []string{pkg}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		if p == dep {
			var chain []string
			for q := dep; q != ""; q = prev[q] {
				chain = append([]string{q}, chain...)
			}
			return chain
		}
		for _, d := range graph[p] {
			if _, ok := prev[d]; !ok {
				prev[d] = p
				queue = append(queue, d)
			}
		}
	}
	return nil
}
