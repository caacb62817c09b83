package bot_test

import (
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"opsbot/bot/bottest"
)

// BenchmarkMetricsCost is the price of metrics on the hot path: approvals
// per second through the local API with 32 clients, on a bot with metrics
// (ops.listen set, scraped every second meanwhile: 15 times as often as
// Prometheus by default) and on one without,
// in alternating rounds of one run. Run with -benchtime 1x.
func BenchmarkMetricsCost(b *testing.B) {
	const rounds, per = 6, 600
	on := bottest.New(b, bottest.WithYAML(`ops: {listen: "127.0.0.1:0"}`))
	off := bottest.New(b)
	stop := make(chan struct{})
	go func() { // a Prometheus-like scraper
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Second):
				scrapeTB(b, on)
			}
		}
	}()
	defer close(stop)
	var rate [2]float64
	for r := 0; r < rounds; r++ {
		order := []int{0, 1}
		if r%2 == 1 {
			order = []int{1, 0} // neither always goes first
		}
		for _, i := range order {
			k := []*bottest.Kit{on, off}[i]
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
			rate[i] += float64(per) / time.Since(start).Seconds() / rounds
		}
	}
	b.ReportMetric(rate[0], "approvals/s-metrics-on")
	b.ReportMetric(rate[1], "approvals/s-metrics-off")
	b.ReportMetric(100*(rate[1]-rate[0])/rate[1], "%-slower-with-metrics")
	b.Logf("approvals/s through the local API, 32 clients, %d alternating rounds of %d: metrics on (scraped every second) %.0f, off %.0f: %.1f%% apart",
		rounds, per, rate[0], rate[1], 100*(rate[1]-rate[0])/rate[1])
}

func scrapeTB(b *testing.B, k *bottest.Kit) {
	resp, err := http.Get("http://" + k.Bot.OpsAddr() + "/metrics")
	if err == nil {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}
