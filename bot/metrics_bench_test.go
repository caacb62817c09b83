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
	state := shmState(b)
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
	r := compareApprovals(b, kits, rounds, per)
	rate, mc, mf := r.rate, r.cost, r.floor
	b.ReportMetric(rate[0], "approvals/s-metrics-on")
	b.ReportMetric(rate[1], "approvals/s-metrics-off")
	b.ReportMetric(mc, "%-slower-with-metrics(median)")
	b.ReportMetric(mf, "%-apart-identical-bots(median)")
	b.Logf("approvals/s through the local API, 32 clients, %d rounds of %d: metrics on (scraped every 15 s) %.0f, off %.0f, off again %.0f on average; "+
		"with metrics slower by a median %.1f%% (rounds from %.1f%% to %.1f%%); two identical bots without metrics %.1f%% apart (from %.1f%% to %.1f%%)",
		rounds, per, rate[0], rate[1], rate[2], mc, r.costMin, r.costMax, mf, r.floorMin, r.floorMax)
}

// shmState puts a kit's state on memory (/dev/shm): the disk's fsync
// varies by tens of percent between rounds on a shared machine and would
// hide the CPU a feature costs.
func shmState(b *testing.B) func(name string) bottest.Option {
	shm, err := os.MkdirTemp("/dev/shm", "opsbot-bench-")
	if err != nil {
		b.Skipf("no /dev/shm: %v", err)
	}
	b.Cleanup(func() { os.RemoveAll(shm) })
	return func(name string) bottest.Option {
		return bottest.WithState(fmt.Sprintf("state: {path: %q}", filepath.Join(shm, name+".db")))
	}
}

var benchCalls atomic.Int64

// approvalRates are the figures of compareApprovals.
type approvalRates struct {
	rate               []float64 // approvals/s of each kit, on average
	cost, floor        float64   // median % kits[0] is slower than kits[1]; kits[2] than kits[1]
	costMin, costMax   float64
	floorMin, floorMax float64
	start              time.Time
}

// compareApprovals measures approvals/s through the local API (32
// clients) on three kits, in rounds of per approvals on each, back to
// back in a rotating order: kits[0] has the feature, kits[1] and kits[2]
// do not (the second measures the noise alone). The figures are medians
// of the rounds' ratios, so a burst of noise moves one round, not the
// result.
func compareApprovals(b *testing.B, kits []*bottest.Kit, rounds, per int) approvalRates {
	r := approvalRates{rate: make([]float64, len(kits)), start: time.Now()}
	call := benchCalls.Add(1) // services differ from call to call: open tickets lock theirs
	var cost, floor []float64
	for n := 0; n < rounds; n++ {
		round := make([]float64, len(kits))
		for j := range kits {
			i := (n + j) % len(kits) // each goes first, second and third in turn
			k := kits[i]
			ids := make([]string, per)
			for m := range ids {
				msgs := k.Say("alice", fmt.Sprintf("/ops new golive service=m%d-%d-%d version=v1 rollback_app=redeploy hotfix=true", call, n, m))
				ids[m] = ticketID.FindString(bottest.Title(msgs))
			}
			var next atomic.Int64
			var wg sync.WaitGroup
			start := time.Now()
			for w := 0; w < 32; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for m := int(next.Add(1)) - 1; m < per; m = int(next.Add(1)) - 1 {
						k.Say("bob", "/ops approve "+ids[m])
					}
				}()
			}
			wg.Wait()
			round[i] = float64(per) / time.Since(start).Seconds()
			r.rate[i] += round[i] / float64(rounds)
		}
		if len(kits) == 3 {
			cost = append(cost, 100*(1-round[0]/round[1]))
			floor = append(floor, 100*(1-round[2]/round[1]))
		}
	}
	if len(cost) < 2 {
		return r
	}
	median := func(v []float64) (float64, float64, float64) {
		sort.Float64s(v)
		return (v[len(v)/2-1] + v[len(v)/2]) / 2, v[0], v[len(v)-1]
	}
	r.cost, r.costMin, r.costMax = median(cost)
	r.floor, r.floorMin, r.floorMax = median(floor)
	return r
}

func scrapeTB(b *testing.B, k *bottest.Kit) {
	resp, err := http.Get("http://" + k.Bot.OpsAddr() + "/metrics")
	if err == nil {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}
