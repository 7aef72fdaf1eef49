package main

import (
	"os"
	"regexp"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// exportedNames lists every metric name serve exports, from the collectors themselves.
func exportedNames() map[string]bool {
	reg := prometheus.NewRegistry()
	newEventMetrics(defaultTopWorkloads, 20).register(reg)
	reg.MustRegister(newScrapeCollector(nil, nil, nil, 0, 1))
	descs := make(chan *prometheus.Desc, 64)
	go func() {
		for _, c := range []prometheus.Collector{newEventMetrics(defaultTopWorkloads, 20).created, newEventMetrics(defaultTopWorkloads, 20).lifetime,
			newEventMetrics(defaultTopWorkloads, 20).overflow, newEventMetrics(defaultTopWorkloads, 20).resets, newEventMetrics(defaultTopWorkloads, 20).connect,
			newEventMetrics(defaultTopWorkloads, 20).connectD, newScrapeCollector(nil, nil, nil, 0, 1)} {
			c.Describe(descs)
		}
		close(descs)
	}()
	names := map[string]bool{}
	fq := regexp.MustCompile(`fqName: "([a-z_]+)"`)
	for d := range descs {
		if m := fq.FindStringSubmatch(d.String()); m != nil {
			names[m[1]] = true
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				names[m[1]+suffix] = true
			}
		}
	}
	return names
}

// The dashboard and the alerts must only use metrics twtrace exports.
func TestDeployReferencesExportedMetrics(t *testing.T) {
	names := exportedNames()
	if len(names) < 10 {
		t.Fatalf("found only %d metric names", len(names))
	}
	if _, err := os.Stat("../../deploy"); err != nil {
		t.Skip("run outside the source tree (the kernel matrix's VM): no deploy/ to check")
	}
	metric := regexp.MustCompile(`twtrace_[a-z_]+`)
	for _, file := range []string{"../../deploy/grafana/twtrace-dashboard.json", "../../deploy/prometheus/alerts.yaml"} {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		used := metric.FindAllString(string(data), -1)
		if len(used) == 0 {
			t.Errorf("%s uses no twtrace metric", file)
		}
		for _, name := range used {
			if !names[name] {
				t.Errorf("%s uses %s, which twtrace does not export", file, name)
			}
		}
	}
}

// Every alert rule has a promtool unit test that fires it (make test runs them).
func TestAlertsHaveRuleTests(t *testing.T) {
	rules, err := os.ReadFile("../../deploy/prometheus/alerts.yaml")
	if err != nil {
		t.Skip("run outside the source tree (the kernel matrix's VM): no deploy/ to check")
	}
	tests, err := os.ReadFile("../../deploy/prometheus/alerts_test.yaml")
	must(t, err)
	alerts := regexp.MustCompile(`(?m)^\s*- alert: (\w+)$`).FindAllSubmatch(rules, -1)
	if len(alerts) == 0 {
		t.Fatal("no alert found in alerts.yaml")
	}
	for _, a := range alerts {
		fires := regexp.MustCompile(`alertname: ` + string(a[1]) + `\n\s+exp_alerts:\n\s+- exp_labels:`)
		if !fires.Match(tests) {
			t.Errorf("alert %s has no test in alerts_test.yaml that fires it", a[1])
		}
	}
}
