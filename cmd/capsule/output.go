package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
)

// table prints rows under headers, or a JSON list of objects with -f json.
func (c *cli) table(headers []string, rows [][]string) error {
	if c.format == "json" {
		out := make([]map[string]string, 0, len(rows))
		for _, r := range rows {
			m := map[string]string{}
			for i, h := range headers {
				m[h] = r[i]
			}
			out = append(out, m)
		}
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	// Cells come from the cloud (tenants name servers): stripped of
	// terminal controls. JSON escapes them itself.
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(safeCells(headers), "\t"))
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(safeCells(r), "\t"))
	}
	return tw.Flush()
}

// record prints one object as field/value lines, or JSON.
func (c *cli) record(fields []string, values map[string]any) error {
	if c.format == "json" {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(values)
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	for _, f := range fields {
		fmt.Fprintf(tw, "%s\t%s\n", safe(f), safe(fmt.Sprint(values[f])))
	}
	return tw.Flush()
}

func safeCells(cells []string) []string {
	out := make([]string, len(cells))
	for i, c := range cells {
		out[i] = safe(c)
	}
	return out
}
