package bot_test

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"opsbot/bot/bottest"
)

// BenchmarkMetricsCost is the price of metrics on the hot path: approvals
// per second through the local API with 32 clients, on a bot with metrics
// (ops.listen set, scraped every 15 s meanwhile, Prometheus's default) and
// on two without: the second bot without metrics measures what this
// machine's noise alone makes of two identical bots (the floor under which
// a difference means nothing). Each round measures the three back to back
// in a rotating order; the figures are the medians of the rounds' ratios,
// so a burst of noise from a shared machine moves one round, not the
// result. Run with -benchtime 1x.
func BenchmarkMetricsCost(b *testing.B) {
	const rounds, per = 18, 400
	// The states on memory (/dev/shm): the disk's fsync varies by tens of
	// percent between rounds on a shared machine and would hide the CPU
	// that metrics cost.
	shm, err := os.MkdirTemp("/dev/shm", "opsbot-bench-")
	if err != nil {
		b.Skipf("no /dev/shm: %v", err)
	}
	b.Cleanup(func() { os.RemoveAll(shm) })
	state := func(name string) bottest.Option {
		return bottest.WithState(fmt.Sprintf("state: {path: %q}", filepath.Join(shm, name+".db")))
	}
	kits := []*bottest.Kit{
		bottest.New(b, bottest.WithYAML(`ops: {listen: "127.0.0.1:0"}`), state("on")),
		bottest.New(b, state("off")),
		bottest.New(b, state("off2")),
	}
	stop := make(chan struct{})
	go func() { // a Prometheus-like scraper
		for {
			scrapeTB(b, kits[0])
			select {
			case <-stop:
				return
			case <-time.After(15 * time.Second):
			}
		}
	}()
	defer close(stop)
	var rate [3]float64
	var cost, floor []float64 // per round: 1 - on/off, 1 - off2/off
	for r := 0; r < rounds; r++ {
		var round [3]float64
		for j := range kits {
			i := (r + j) % len(kits) // each goes first, second and third in turn
			k := kits[i]
			ids := make([]string, per)
			for n := range ids {
				msgs := k.Say("alice", fmt.Sprintf("/ops new golive service=m%d-%d version=v1 rollback_app=redeploy hotfix=true", r, n))
				ids[n] = ticketID.FindString(bottest.Title(msgs))
			}
			var next atomic.Int64
			var wg sync.WaitGroup
			start := time.Now()
			for w := 0; w < 32; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for n := int(next.Add(1)) - 1; n < per; n = int(next.Add(1)) - 1 {
						k.Say("bob", "/ops approve "+ids[n])
					}
				}()
			}
			wg.Wait()
			round[i] = float64(per) / time.Since(start).Seconds()
			rate[i] += round[i] / rounds
		}
		cost = append(cost, 1-round[0]/round[1])
		floor = append(floor, 1-round[2]/round[1])
	}
	median := func(v []float64) float64 {
		sort.Float64s(v)
		return 100 * (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	mc, mf := median(cost), median(floor)
	b.ReportMetric(rate[0], "approvals/s-metrics-on")
	b.ReportMetric(rate[1], "approvals/s-metrics-off")
	b.ReportMetric(mc, "%-slower-with-metrics(median)")
	b.ReportMetric(mf, "%-apart-identical-bots(median)")
	b.Logf("approvals/s through the local API, 32 clients, %d rounds of %d: metrics on (scraped every 15 s) %.0f, off %.0f, off again %.0f on average; "+
		"with metrics slower by a median %.1f%% (rounds from %.1f%% to %.1f%%); two identical bots without metrics %.1f%% apart (from %.1f%% to %.1f%%)",
		rounds, per, rate[0], rate[1], rate[2], mc, 100*cost[0], 100*cost[len(cost)-1], mf, 100*floor[0], 100*floor[len(floor)-1])
}

func scrapeTB(b *testing.B, k *bottest.Kit) {
	resp, err := http.Get("http://" + k.Bot.OpsAddr() + "/metrics")
	if err == nil {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}
