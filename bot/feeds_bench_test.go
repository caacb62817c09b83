package bot_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"opsbot/bot/bottest"
)

// BenchmarkWebhookCost is what event webhooks cost the approvals and how
// fast they deliver: approvals/s through the local API on a bot with a
// webhook to a local receiver and on two without (the second measures the
// noise alone), in rotating rounds (compareApprovals); and the events/s
// the receiver got over the same run, until it caught up. Run with
// -benchtime 1x.
func BenchmarkWebhookCost(b *testing.B) {
	const rounds, per = 18, 400
	b.Setenv("OPSBOT_HOOK_SECRET", hookSecret)
	var got atomic.Int64
	var last atomic.Int64 // unix nanos of the last event received
	var paused atomic.Bool
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if paused.Load() {
			w.WriteHeader(503)
			return
		}
		got.Add(1)
		last.Store(time.Now().UnixNano())
	}))
	b.Cleanup(recv.Close)
	state := shmState(b)
	kits := []*bottest.Kit{
		bottest.New(b, state("on"), bottest.WithYAML(fmt.Sprintf("webhooks: [{name: bench, url: %q, secret_env: OPSBOT_HOOK_SECRET, retry_min: 10ms, retry_max: 20ms}]", recv.URL))),
		bottest.New(b, state("off")),
		bottest.New(b, state("off2")),
	}
	r := compareApprovals(b, kits, rounds, per)
	ended := time.Now()
	transitions := func() int64 {
		entries, err := kits[0].Bot.Store().AuditAfter(b.Context(), 0, 1<<20)
		if err != nil {
			b.Fatal(err)
		}
		n := int64(0)
		for _, a := range entries {
			if strings.HasPrefix(a.Action, "transition ") {
				n++
			}
		}
		return n
	}
	// Every transition of the bot with the webhook is an event: wait until
	// the receiver has them all.
	waitGot := func(want int64) {
		deadline := time.Now().Add(5 * time.Minute)
		for got.Load() < want && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		if got.Load() != want {
			b.Fatalf("the receiver got %d of %d events", got.Load(), want)
		}
	}
	want := transitions()
	behind := want - got.Load()
	waitGot(want)
	caughtUp := max(0, time.Unix(0, last.Load()).Sub(ended))
	// What delivery can do: a backlog (the receiver down for a round of
	// the bot), then the time to drain it.
	paused.Store(true)
	compareApprovals(b, kits[:1], 1, per)
	backlog := transitions() - got.Load()
	paused.Store(false)
	start := time.Now()
	waitGot(want + backlog)
	drain := float64(backlog) / time.Since(start).Seconds()
	b.ReportMetric(r.rate[0], "approvals/s-webhook-on")
	b.ReportMetric(r.rate[1], "approvals/s-webhook-off")
	b.ReportMetric(r.cost, "%-slower-with-webhook(median)")
	b.ReportMetric(r.floor, "%-apart-identical-bots(median)")
	b.ReportMetric(drain, "events/s-drained")
	b.Logf("approvals/s, 32 clients, %d rounds of %d: with a webhook %.0f, without %.0f, without again %.0f on average; with the webhook slower by a median %.1f%% "+
		"(rounds %.1f%%..%.1f%%); identical bots %.1f%% apart (%.1f%%..%.1f%%). During the rounds the receiver kept up: %d events, %d still to deliver when the approvals ended, "+
		"all delivered %s after. A backlog of %d events (the receiver down for a round) drained at %.0f events/s",
		rounds, per, r.rate[0], r.rate[1], r.rate[2], r.cost, r.costMin, r.costMax, r.floor, r.floorMin, r.floorMax,
		want, behind, caughtUp.Round(time.Millisecond), backlog, drain)
}
