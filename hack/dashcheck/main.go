// dashcheck checks Grafana dashboard JSON against Grafana's own schema and every PromQL
// expression in it against Prometheus' parser.
//
//	dashcheck dashboards/*.json
//
// Schema: github.com/grafana/grafana-foundation-sdk/go decodes the dashboard strictly, so an
// unknown or mistyped field fails, down to each panel's options and fieldConfig custom
// settings, decoded by the options type of the panel's own type (gauge, heatmap, ...), and
// the rest of each fieldConfig (defaults, overrides), which the SDK's panel decoder reads
// loosely. A panel type the SDK does not know fails too (its options could not be checked).
//
// PromQL: every target's expr, and the metric selector inside each query variable's
// label_values(...), parsed by github.com/prometheus/prometheus/promql/parser after
// replacing Grafana's variables: $__rate_interval, $__interval and $__range by durations,
// $__range_s by a number, and every other $var / ${var} / ${var:format} by ".*" (they sit
// inside label matchers).
//
// Exit status 0 when every file passes, 1 when any fails (each problem on stderr), 2 on
// usage errors.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strings"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/cog/plugins"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/prometheus/prometheus/promql/parser"
)

// The parser of Prometheus' defaults (no experimental functions).
var promql = parser.NewParser(parser.Options{})

// Legacy top-level keys Grafana still reads but the schema no longer lists, with the values
// allowed. "style" is the dashboard theme of Grafana <= 10; later Grafana ignores it.
var legacy = map[string][]string{"style": {"dark", "light"}}

var (
	builtins = []struct {
		re   *regexp.Regexp
		with string
	}{
		{regexp.MustCompile(`\$\{?__range_s\}?`), "300"},
		{regexp.MustCompile(`\$\{?__range_ms\}?`), "300000"},
		{regexp.MustCompile(`\$\{?__interval_ms\}?`), "60000"},
		{regexp.MustCompile(`\$\{?__(rate_interval|interval|range)\}?`), "5m"},
	}
	userVar     = regexp.MustCompile(`\$\{\w+(:\w+)?\}|\$\w+`)
	labelValues = regexp.MustCompile(`^\s*label_values\((.*),\s*\w+\s*\)\s*$`)
	bareLabel   = regexp.MustCompile(`^\s*label_values\(\s*\w+\s*\)\s*$`)
)

// Substitute replaces Grafana's variables as described in the package comment.
func Substitute(expr string) string {
	for _, b := range builtins {
		expr = b.re.ReplaceAllString(expr, b.with)
	}
	return userVar.ReplaceAllString(expr, ".*")
}

func checkFile(path string) []string {
	raw, err := os.ReadFile(path)
	if err != nil {
		return []string{err.Error()}
	}
	var problems []string
	var top map[string]json.RawMessage
	if err := json.Unmarshal(raw, &top); err != nil {
		return []string{"not a JSON object: " + err.Error()}
	}
	for key, allowed := range legacy {
		if value, ok := top[key]; ok {
			var s string
			if json.Unmarshal(value, &s) != nil || !contains(allowed, s) {
				problems = append(problems, fmt.Sprintf("%s: must be one of %v, got %s", key, allowed, value))
			}
			delete(top, key)
		}
	}
	stripped, _ := json.Marshal(top)
	var dash dashboard.Dashboard
	if err := dash.UnmarshalJSONStrict(stripped); err != nil {
		problems = append(problems, splitErrors("schema", err)...)
	}
	problems = append(problems, checkPanels(top["panels"], "panels")...)
	problems = append(problems, checkVariables(top["templating"])...)
	return problems
}

// The SDK decodes an unknown panel type's options loosely: refuse such types here.
func checkPanels(raw json.RawMessage, where string) []string {
	var panels []map[string]json.RawMessage
	if raw == nil || json.Unmarshal(raw, &panels) != nil {
		return nil // the schema decode reports a malformed list
	}
	var problems []string
	for i, panel := range panels {
		here := fmt.Sprintf("%s[%d]", where, i)
		var kind, title string
		_ = json.Unmarshal(panel["type"], &kind)
		_ = json.Unmarshal(panel["title"], &title)
		if title != "" {
			here += fmt.Sprintf(" (%q)", title)
		}
		if kind == "row" {
			problems = append(problems, checkPanels(panel["panels"], here+".panels")...)
			continue
		}
		if _, found := cog.ConfigForPanelcfgVariant(kind); !found {
			problems = append(problems, fmt.Sprintf("%s: panel type %q is not known to the schema", here, kind))
		}
		// The SDK's panel decoder reads fieldConfig loosely (only defaults.custom strictly):
		// decode it strictly too, so an unknown key in defaults or an override fails.
		if raw := panel["fieldConfig"]; raw != nil {
			var fc dashboard.FieldConfigSource
			if err := fc.UnmarshalJSONStrict(raw); err != nil {
				problems = append(problems, splitErrors(here+".fieldConfig", err)...)
			}
		}
		var targets []map[string]json.RawMessage
		_ = json.Unmarshal(panel["targets"], &targets)
		for j, target := range targets {
			var expr string
			if target["expr"] == nil || json.Unmarshal(target["expr"], &expr) != nil {
				continue
			}
			if err := parsePromQL(expr); err != nil {
				problems = append(problems, fmt.Sprintf("%s.targets[%d].expr: %v", here, j, err))
			}
		}
	}
	return problems
}

func checkVariables(raw json.RawMessage) []string {
	var templating struct {
		List []struct {
			Name  string          `json:"name"`
			Type  string          `json:"type"`
			Query json.RawMessage `json:"query"`
		} `json:"list"`
	}
	if raw == nil || json.Unmarshal(raw, &templating) != nil {
		return nil
	}
	var problems []string
	for _, v := range templating.List {
		if v.Type != "query" {
			continue
		}
		var query string
		if json.Unmarshal(v.Query, &query) != nil {
			var q struct {
				Query string `json:"query"`
			}
			_ = json.Unmarshal(v.Query, &q)
			query = q.Query
		}
		if bareLabel.MatchString(query) {
			continue
		}
		m := labelValues.FindStringSubmatch(query)
		if m == nil {
			problems = append(problems, fmt.Sprintf("variable %s: query %q is not label_values(<selector>, <label>)", v.Name, query))
			continue
		}
		if err := parsePromQL(m[1]); err != nil {
			problems = append(problems, fmt.Sprintf("variable %s: %v", v.Name, err))
		}
	}
	return problems
}

func parsePromQL(expr string) error {
	if strings.TrimSpace(expr) == "" {
		return fmt.Errorf("empty expression")
	}
	if _, err := promql.ParseExpr(Substitute(expr)); err != nil {
		return fmt.Errorf("PromQL %q: %v", expr, err)
	}
	return nil
}

func splitErrors(prefix string, err error) []string {
	var out []string
	for _, line := range strings.Split(err.Error(), "\n") {
		if strings.TrimSpace(line) != "" {
			out = append(out, prefix+": "+line)
		}
	}
	sort.Strings(out)
	return out
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func main() {
	if len(os.Args) < 2 || os.Args[1] == "-h" || os.Args[1] == "--help" {
		fmt.Fprintln(os.Stderr, "usage: dashcheck DASHBOARD.json...")
		os.Exit(2)
	}
	plugins.RegisterDefaultPlugins()
	failed := false
	for _, path := range os.Args[1:] {
		problems := checkFile(path)
		if len(problems) == 0 {
			fmt.Printf("%s: ok\n", path)
			continue
		}
		failed = true
		for _, p := range problems {
			fmt.Fprintf(os.Stderr, "%s: %s\n", path, p)
		}
	}
	if failed {
		os.Exit(1)
	}
}
