package configs

import (
	"slices"
	"testing"
)

// TestAnalyzePromQL checks the name finder the dashboard test relies on.
func TestAnalyzePromQL(t *testing.T) {
	for _, c := range []struct {
		expr                              string
		metrics, labels, created, without []string
	}{
		{
			expr:    `sum by (instance, source) (rate(edgerelay_events_received_total{job=~".*", instance=~".*"}[5m]))`,
			metrics: []string{"edgerelay_events_received_total"},
			labels:  []string{"instance", "source", "job", "instance"},
		},
		{
			expr:    `(time() - max by (instance, sink) (a_ts{sink="x"})) and on (instance, sink) (max(b) by (instance) > 0) or vector(0)`,
			metrics: []string{"a_ts", "b"},
			labels:  []string{"instance", "sink", "sink", "instance", "sink", "instance"},
		},
		{
			expr:    `max without (uuid, index) (label_replace(m / 1048576, "gpu", "$1", "index", "(.*)"))`,
			metrics: []string{"m"},
			labels:  []string{"uuid", "index", "index"},
			created: []string{"gpu"},
			without: []string{"uuid", "index"},
		},
		{
			expr:    `count_values without (x) ("v", up offset 5m) * on (a) group_left (b) c[1h:5m]`,
			metrics: []string{"up", "c"},
			labels:  []string{"x", "a", "b"},
			created: []string{"v"},
			without: []string{"x"},
		},
	} {
		got, err := analyzePromQL(c.expr)
		if err != nil {
			t.Errorf("%s: %v", c.expr, err)
			continue
		}
		for _, f := range []struct {
			what      string
			got, want []string
		}{{"metrics", got.metrics, c.metrics}, {"labels", got.labels, c.labels}, {"created", got.created, c.created}, {"without", got.without, c.without}} {
			if !slices.Equal(f.got, f.want) {
				t.Errorf("%s: %s = %q, want %q", c.expr, f.what, f.got, f.want)
			}
		}
	}
	for _, bad := range []string{`sum(rate(x[5m])`, `x{a="b"`, `x{a}`, `x{a="b}`} {
		if _, err := analyzePromQL(bad); err == nil {
			t.Errorf("%s: no error", bad)
		}
	}
	if got := expandGrafana(`rate(x{job=~"$job", i=~"${instance:regex}"}[$__rate_interval]) [[v]]`); got != `rate(x{job=~".*", i=~".*"}[5m]) .*` {
		t.Errorf("expandGrafana: %s", got)
	}
}
