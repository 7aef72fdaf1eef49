package main

import (
	"bufio"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"github.com/twtrace/twtrace/tracer"
)

// soakSample is one look at the running agent.
type soakSample struct {
	at      time.Duration
	rssKiB  uint64
	entries map[string]int // hash maps' entry counts, by map name
	lost    float64        // twtrace_events_lost_total
}

// soak runs the node agent (serve) under churn in both close orders at once, and
// samples its RSS, its maps' entry counts and its lost-event counter.
func soak(cfg config) error {
	agent := twtraceTool("twtrace serve", cfg.twtrace, "serve", "--listen", "127.0.0.1:0")
	r, err := agent.start()
	if err != nil {
		return err
	}
	m := regexp.MustCompile(`"listen":"([^"]+)"`).FindStringSubmatch(r.stderr.String())
	if m == nil {
		r.stop()
		return fmt.Errorf("serve did not say where it listens:\n%s", r.stderr.String())
	}
	metricsURL := "http://" + m[1] + "/metrics"
	pid := r.cmd.Process.Pid

	perOrder := max(1, cfg.clients/2)
	var churns []*exec.Cmd
	for _, order := range closeOrders {
		c := exec.Command(cfg.churn, "-json", "-close", order, "-clients", fmt.Sprint(perOrder), "-duration", cfg.soak.String())
		if err := c.Start(); err != nil {
			r.stop()
			return err
		}
		churns = append(churns, c)
	}
	start := time.Now()
	var samples []soakSample
	for time.Since(start) < cfg.soak {
		time.Sleep(cfg.sampleEvery)
		s := soakSample{at: time.Since(start).Round(time.Second), rssKiB: statusKB(pid, "VmRSS"), entries: mapEntries(pid)}
		s.lost, _ = scrapeSum(metricsURL, "twtrace_events_lost_total")
		samples = append(samples, s)
		fmt.Fprintf(os.Stderr, "%6s  RSS %6.1f MiB  maps %v  lost %.0f\n", s.at, float64(s.rssKiB)/1024, s.entries, s.lost)
	}
	for _, c := range churns {
		c.Wait()
	}
	stderr, peak, err := r.stop()
	if err != nil {
		return fmt.Errorf("serve: %w\n%s", err, stderr)
	}
	lost, _ := agent.lost(stderr)
	report := soakMarkdown(cfg, samples, peak, lost, stderr)
	fmt.Print(report)
	return replaceSection(cfg.out, "make soak", report)
}

// mapEntries counts the entries of the hash maps the process holds and the records of its
// record tables (socks, tws); other arrays and the ring buffer have a fixed size by construction.
func mapEntries(pid int) map[string]int {
	out := map[string]int{}
	for _, id := range objectsOf(pid).Maps {
		m, err := ebpf.NewMapFromID(ebpf.MapID(id))
		if err != nil {
			continue
		}
		if info, err := m.Info(); err == nil && counted(info) {
			if n, err := tracer.CountRecords(m); err == nil {
				out[info.Name] = n
			}
		}
		m.Close()
	}
	return out
}

// counted says whether a map's entries come and go: hashes, and the record tables.
func counted(info *ebpf.MapInfo) bool {
	return info.Type == ebpf.Hash || info.Type == ebpf.LRUHash || info.Type == ebpf.Array && (info.Name == "socks" || info.Name == "tws")
}

func scrapeSum(url, metric string) (float64, error) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var sum float64
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, metric+" ") || strings.HasPrefix(line, metric+"{") {
			f := strings.Fields(line)
			v, _ := strconv.ParseFloat(f[len(f)-1], 64)
			sum += v
		}
	}
	return sum, sc.Err()
}

// flat compares the last samples with the first ones after warm-up: growth within 10%,
// or within slack (small counts move by more than 10% without growing).
func flat(values []float64, slack float64) (first, last float64, ok bool) {
	if len(values) < 2 {
		return 0, 0, false
	}
	k := max(1, len(values)/4)
	mean := func(xs []float64) float64 {
		s := 0.0
		for _, x := range xs {
			s += x
		}
		return s / float64(len(xs))
	}
	first, last = mean(values[:k]), mean(values[len(values)-k:])
	return first, last, last <= first*1.10 || last-first <= slack
}

func soakMarkdown(cfg config, samples []soakSample, peakKiB uint64, lost uint64, stderr string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "## Soak (`make soak`)\n\n%s.\n\n", machine())
	fmt.Fprintf(&b, "`twtrace serve` (every event family, default 4 MiB ring buffer) for %s while two churn processes run at full speed, "+
		"%d clients closing first and %d servers closing first, in private namespaces. Sampled every %s; the first minute is warm-up. "+
		"Flat means the mean of the last quarter of the samples is within 10%% of the first quarter's (or within 2 MiB / 64 entries).\n\n",
		cfg.soak, max(1, cfg.clients/2), max(1, cfg.clients/2), cfg.sampleEvery)
	warm := 0
	for warm < len(samples) && samples[warm].at < time.Minute {
		warm++
	}
	if warm >= len(samples)-1 {
		warm = 0
	}
	post := samples[warm:]
	fmt.Fprintf(&b, "| series | first quarter | last quarter | flat |\n| --- | ---: | ---: | --- |\n")
	rss := make([]float64, len(post))
	for i, s := range post {
		rss[i] = float64(s.rssKiB) / 1024
	}
	f, l, ok := flat(rss, 2)
	fmt.Fprintf(&b, "| RSS (MiB) | %.1f | %.1f | %s |\n", f, l, yesNo(ok))
	var names []string
	if len(post) > 0 {
		for name := range post[0].entries {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	for _, name := range names {
		vals := make([]float64, len(post))
		for i, s := range post {
			vals[i] = float64(s.entries[name])
		}
		f, l, ok := flat(vals, 64)
		fmt.Fprintf(&b, "| map `%s` entries | %.0f | %.0f | %s |\n", name, f, l, yesNo(ok))
	}
	fmt.Fprintf(&b, "\nPeak RSS %.1f MiB. Events lost: %d (summary at exit; `twtrace_events_lost_total` at the last sample: %.0f).\n",
		float64(peakKiB)/1024, lost, samples[len(samples)-1].lost)
	if i := strings.LastIndex(stderr, "twtrace: "); i >= 0 {
		fmt.Fprintf(&b, "\nThe agent's summary at exit:\n\n```\n%s```\n", stderr[i:])
	}
	return b.String()
}
