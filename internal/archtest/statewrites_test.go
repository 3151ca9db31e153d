package archtest

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// domainPackage is the only package that may write an instance's
// vm_state or task_state.
const domainPackage = "instance"

// stateColumns and stateFields are the instance's state, as columns and
// as store.Instance fields.
var (
	stateColumns = map[string]bool{"vm_state": true, "task_state": true}
	stateFields  = map[string]bool{"VMState": true, "TaskState": true}
)

// TestStateWritesOnlyInDomain fails listing every write of vm_state or
// task_state in the module's non-test code outside package instance: a
// column key in a map literal or an index assignment (the fields of
// gorm's Updates), the column as Update/UpdateColumn's argument, an SQL
// "SET" of the column, or an assignment to a VMState/TaskState field.
func TestStateWritesOnlyInDomain(t *testing.T) {
	root := moduleRoot(t)
	var found []string
	files := 0
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			name := d.Name()
			if path != root && (strings.HasPrefix(name, ".") || name == "testdata" || name == "vendor" || rel == domainPackage) {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		files++
		fset := token.NewFileSet()
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		for _, w := range stateWrites(fset, f) {
			found = append(found, rel+":"+w)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files < 100 {
		t.Fatalf("scanned only %d files under %s: the walk is broken", files, root)
	}
	if len(found) > 0 {
		t.Errorf("instance state written outside package %s (use its operations: Begin, Finish, Apply, ...):\n  %s",
			domainPackage, strings.Join(found, "\n  "))
	}
}

// TestStateWritesCaught: the scanner finds each kind of write, and
// leaves reads alone.
func TestStateWritesCaught(t *testing.T) {
	src := `package p

import "gorm.io/gorm"

func f(tx *gorm.DB, inst *I, fields map[string]any) {
	tx.Updates(map[string]any{"task_state": "", "host": "h"})
	fields["vm_state"] = "error"
	tx.Update("task_state", "")
	tx.Exec("UPDATE instances SET vm_state = 'error'")
	inst.TaskState = "x"
	inst.VMState, inst.Host = "a", "b"
	tx.Where("vm_state = ? AND task_state = ?", "a", "")
	_ = inst.TaskState == "" 
	log("vm_state", inst.VMState)
}
`
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "p.go", src, 0)
	if err != nil {
		t.Fatal(err)
	}
	got := stateWrites(fset, f)
	want := []string{"6", "7", "8", "9", "10", "11"}
	if len(got) != len(want) {
		t.Fatalf("writes = %q, want one on each of lines %v", got, want)
	}
	for i, w := range want {
		if !strings.HasPrefix(got[i], w+":") {
			t.Errorf("write %d = %q, want line %s", i, got[i], w)
		}
	}
}

// stateWrites returns "line: what" for each write of the instance state
// in f. Map literals count only in a file that talks to the database
// (imports gorm or the store): elsewhere "task_state" is a JSON key.
func stateWrites(fset *token.FileSet, f *ast.File) []string {
	db := false
	for _, imp := range f.Imports {
		p, _ := strconv.Unquote(imp.Path.Value)
		if p == "gorm.io/gorm" || p == module+"/store" {
			db = true
		}
	}
	var out []string
	report := func(n ast.Node, what string) {
		out = append(out, fmt.Sprintf("%d: %s", fset.Position(n.Pos()).Line, what))
	}
	column := func(e ast.Expr) (string, bool) {
		lit, ok := e.(*ast.BasicLit)
		if !ok || lit.Kind != token.STRING {
			return "", false
		}
		s, err := strconv.Unquote(lit.Value)
		return s, err == nil && stateColumns[s]
	}
	ast.Inspect(f, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.CompositeLit:
			if !db {
				return true
			}
			for _, el := range n.Elts {
				if kv, ok := el.(*ast.KeyValueExpr); ok {
					if c, ok := column(kv.Key); ok {
						report(kv, fmt.Sprintf("%q in a map of columns", c))
					}
				}
			}
		case *ast.AssignStmt:
			for _, lhs := range n.Lhs {
				switch l := lhs.(type) {
				case *ast.IndexExpr:
					if c, ok := column(l.Index); ok {
						report(l, fmt.Sprintf("[%q] assigned", c))
					}
				case *ast.SelectorExpr:
					if stateFields[l.Sel.Name] {
						report(l, "."+l.Sel.Name+" assigned")
					}
				}
			}
		case *ast.CallExpr:
			if sel, ok := n.Fun.(*ast.SelectorExpr); ok && (sel.Sel.Name == "Update" || sel.Sel.Name == "UpdateColumn") && len(n.Args) > 0 {
				if c, ok := column(n.Args[0]); ok {
					report(n, fmt.Sprintf("%s(%q)", sel.Sel.Name, c))
				}
			}
		case *ast.BasicLit:
			if n.Kind == token.STRING {
				s := strings.ToLower(n.Value)
				for c := range stateColumns {
					if strings.Contains(s, "set "+c) || strings.Contains(s, ", "+c+" =") {
						report(n, "SQL sets "+c)
						break
					}
				}
			}
		}
		return true
	})
	return out
}
