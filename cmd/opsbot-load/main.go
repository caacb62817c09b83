// Command opsbot-load drives an in-process opsbot on 127.0.0.1 through its
// local JSON API (and Slack's HTTP endpoint) and prints throughput and
// latency next to a raw bbolt baseline measured in the same run. It is the
// second half of `make bench`, kept out of the production binary.
package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"opsbot/flows"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	slackapi "github.com/slack-go/slack"
	bolt "go.etcd.io/bbolt"

	"opsbot/bot"
	"opsbot/bot/local"
	opsslack "opsbot/bot/slack"
)

// loadConfig is the bot the load tool drives: one approval stage, so each
// approval is one durable transition that closes the ticket.
const loadConfig = `
listen: 127.0.0.1:0
rate_limit: {per_minute: 100000000, burst: 1000000}
users:
  - {name: alice, roles: [developer]}
  - {name: bob, roles: [techlead]}
flows:
  - name: bench
    title: Bench
    title_template: "item {item}"
    fields: [{name: item, required: true}]
    stages: [{name: review, kind: approval, roles: [techlead]}]
`

// run drives the local JSON API of an in-process bot on 127.0.0.1
// and prints throughput and latency next to a raw bbolt batched-write
// baseline measured in the same run. It stops by itself.
func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("opsbot-load", flag.ContinueOnError)
	fs.SetOutput(stderr)
	n := fs.Int("n", 2000, "tickets in the throughput phase (each: create, approve, show)")
	conc := fs.Int("c", 32, "concurrent clients in the throughput phase")
	rate := fs.Int("rate", 500, "requests per second in the latency phase")
	dur := fs.Duration("d", 10*time.Second, "length of the latency phase")
	seed := fs.Int("seed", 100000, "tickets in the store for the large-store phase (0 skips it)")
	withSlack := fs.Bool("slack", true, "also drive the Slack HTTP endpoint with signed interactions")
	dir := fs.String("dir", "", "work directory (default: a temp dir, removed afterwards)")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile of the run to this file")
	blockprofile := fs.String("blockprofile", "", "write a profile of where goroutines waited (blocking and mutex contention) to this file")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		defer f.Close()
		pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	if *blockprofile != "" {
		runtime.SetBlockProfileRate(int(100 * time.Microsecond))
		defer func() {
			f, err := os.Create(*blockprofile)
			if err != nil {
				fmt.Fprintln(stderr, err)
				return
			}
			defer f.Close()
			_ = pprof.Lookup("block").WriteTo(f, 0)
		}()
	}
	work := *dir
	if work == "" {
		d, err := os.MkdirTemp("", "opsbot-load-")
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		defer os.RemoveAll(d)
		work = d
	}
	l := &loader{out: stdout, dir: work}
	if err := l.run(*n, *conc, *rate, *dur, *seed, *withSlack); err != nil {
		fmt.Fprintln(stderr, "load:", err)
		return 1
	}
	return 0
}

type loader struct {
	out io.Writer
	dir string
	url string
	b   *bot.Bot
	hc  *http.Client
}

func (l *loader) printf(format string, a ...any) { fmt.Fprintf(l.out, format, a...) }

func (l *loader) run(n, conc, rate int, dur time.Duration, seed int, withSlack bool) error {
	ctx := context.Background()
	l.printf("opsbot load: %d tickets x (create, approve, show) with %d clients; %d req/s for %s; %d tickets seeded\n", n, conc, rate, dur, seed)
	base, err := rawBoltRate(filepath.Join(l.dir, "raw.db"), 5000, conc)
	if err != nil {
		return err
	}
	l.printf("raw bbolt batched writes:        %8.0f writes/s (%d goroutines)\n", base, conc)

	if err := l.start(ctx, "bot.db"); err != nil {
		return err
	}
	// Throughput: closed loop, in three phases so each rate is its own:
	// create n tickets, approve each (one durable transition that closes
	// it), show each.
	ids := make([]string, n)
	var lat latencies
	phase := func(name string, do func(i int) error) (float64, error) {
		start := time.Now()
		err := parallel(conc, n, do)
		if err != nil {
			err = fmt.Errorf("%s: %w", name, err)
		}
		return float64(n) / time.Since(start).Seconds(), err
	}
	creates, err := phase("create", func(i int) error {
		id, err := l.timed(&lat, "alice", fmt.Sprintf("/ops new bench item=%d", i), "submitted")
		ids[i] = id
		return err
	})
	if err != nil {
		return err
	}
	approvals, err := phase("approve", func(i int) error {
		_, err := l.timed(&lat, "bob", "/ops approve "+ids[i], "approve")
		return err
	})
	if err != nil {
		return err
	}
	shows, err := phase("show", func(i int) error {
		_, err := l.timed(&lat, "alice", "/ops show "+ids[i], ids[i])
		return err
	})
	if err != nil {
		return err
	}
	l.printf("end-to-end over HTTP, durable:   %6.0f creates/s, %6.0f approvals/s, %6.0f shows/s; p50 %s p99 %s\n",
		creates, approvals, shows, lat.pct(50), lat.pct(99))
	l.printf("  ratio approvals/s : raw batched writes/s = %.2f\n", approvals/base)
	// The same approvals without HTTP, the chat grammar or replies: the
	// engine and the store alone, to show where the rest of the time goes.
	engineIDs := make([]string, n)
	e := l.b.Engine()
	for i := range engineIDs {
		t, err := e.Create(ctx, "alice", "bench", map[string]string{"item": fmt.Sprint(i)})
		if err != nil {
			return err
		}
		engineIDs[i] = t.ID
	}
	direct, err := phase("engine approve", func(i int) error {
		_, err := e.Act(ctx, flows.Action{Actor: "bob", Ticket: engineIDs[i], Event: flows.EvApprove})
		return err
	})
	if err != nil {
		return err
	}
	l.printf("engine alone (no HTTP, no chat):  %6.0f approvals/s\n", direct)
	l.printf("  ratio engine approvals/s : raw batched writes/s = %.2f; HTTP approvals/s : engine approvals/s = %.2f\n",
		direct/base, approvals/direct)

	// Latency at a fixed request rate (open loop: latency counts from the
	// scheduled send time, so a stall is not hidden).
	lat = latencies{}
	total := int(float64(rate) * dur.Seconds())
	interval := time.Second / time.Duration(rate)
	var fresh sync.Map
	var wg2 sync.WaitGroup
	var failed atomic.Int64
	start := time.Now()
	for i := 0; i < total; i++ {
		at := start.Add(time.Duration(i) * interval)
		time.Sleep(time.Until(at))
		wg2.Add(1)
		go func() {
			defer wg2.Done()
			var err error
			switch i % 3 {
			case 0:
				var id string
				id, err = l.timedFrom(at, &lat, "alice", fmt.Sprintf("/ops new bench item=r%d", i), "submitted")
				fresh.Store(i, id)
			case 1:
				if id, ok := fresh.Load(i - 1); ok && id != "" {
					_, err = l.timedFrom(at, &lat, "bob", "/ops approve "+id.(string), "")
				}
			default:
				_, err = l.timedFrom(at, &lat, "alice", "/ops list mine", "")
			}
			if err != nil {
				failed.Add(1)
			}
		}()
	}
	wg2.Wait()
	l.printf("fixed rate %d req/s for %s:     %8.0f requests/s achieved; p50 %s p99 %s; %d errors\n",
		rate, dur, float64(total)/time.Since(start).Seconds(), lat.pct(50), lat.pct(99), failed.Load())
	l.b.Stop()

	if withSlack {
		if err := l.slack(ctx, n, conc, rate, dur, approvals); err != nil {
			return err
		}
	}
	if seed > 0 {
		return l.large(ctx, seed)
	}
	return nil
}

// boot starts a quiet bot on config with its state in db.
func (l *loader) boot(ctx context.Context, config, db string) (*bot.Bot, error) {
	cfg, err := bot.ParseConfig([]byte(config), l.dir)
	if err != nil {
		return nil, err
	}
	cfg.State.Path = filepath.Join(l.dir, db)
	cfg.Scripts.Dir = l.dir
	b, err := bot.New(ctx, bot.Options{Config: cfg, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		return nil, err
	}
	if err := b.Start(ctx); err != nil {
		b.Stop()
		return nil, err
	}
	return b, nil
}

func (l *loader) start(ctx context.Context, db string) error {
	b, err := l.boot(ctx, loadConfig, db)
	if err != nil {
		return err
	}
	l.b, l.url = b, "http://"+b.Addr()
	l.hc = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256}, Timeout: 30 * time.Second}
	return nil
}

// large seeds the store with many tickets waiting for bob, restarts the
// bot on it, and measures start-up, "list waiting" and "show".
func (l *loader) large(ctx context.Context, seed int) error {
	if err := l.start(ctx, "large.db"); err != nil {
		return err
	}
	e := l.b.Engine()
	t0 := time.Now()
	if err := parallel(64, seed, func(i int) error {
		_, err := e.Create(ctx, "alice", "bench", map[string]string{"item": fmt.Sprint(i + 1)})
		return err
	}); err != nil {
		return err
	}
	l.printf("seeded %d tickets in %s\n", seed, time.Since(t0).Round(time.Millisecond))
	// Let the outbox drain so the restart measures a settled store.
	for {
		if n, _ := l.b.Store().OutboxLen(ctx); n == 0 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	l.b.Stop()

	t0 = time.Now()
	if err := l.start(ctx, "large.db"); err != nil {
		return err
	}
	if _, err := l.hc.Get(l.url + "/healthz"); err != nil {
		return err
	}
	startup := time.Since(t0)
	defer l.b.Stop()
	var wait, show latencies
	for i := 0; i < 1000; i++ {
		if _, err := l.timed(&wait, "bob", "/ops list waiting", "waiting"); err != nil {
			return err
		}
		if _, err := l.timed(&show, "alice", fmt.Sprintf("/ops show T-%d", 1+(i*7919)%seed), ""); err != nil {
			return err
		}
	}
	l.printf("with %d tickets: start-up %s; list waiting p50 %s p99 %s; show p50 %s p99 %s\n",
		seed, startup.Round(time.Millisecond), wait.pct(50), wait.pct(99), show.pct(50), show.pct(99))
	return nil
}

func (l *loader) timed(lat *latencies, user, text, want string) (string, error) {
	return l.timedFrom(time.Now(), lat, user, text, want)
}

// timedFrom sends a command and records its latency from at. It returns
// the ticket id the reply names and fails when the reply lacks want.
func (l *loader) timedFrom(at time.Time, lat *latencies, user, text, want string) (string, error) {
	body, _ := json.Marshal(local.CommandRequest{User: user, Text: text})
	resp, err := l.hc.Post(l.url+"/api/command", "application/json", bytes.NewReader(body))
	if err != nil {
		return "", err
	}
	var out local.CommandResponse
	err = json.NewDecoder(resp.Body).Decode(&out)
	resp.Body.Close()
	lat.add(time.Since(at))
	if err != nil {
		return "", err
	}
	if len(out.Replies) == 0 {
		return "", fmt.Errorf("%s: no reply", text)
	}
	if !strings.Contains(out.Replies[0].Title, want) {
		return "", fmt.Errorf("%s: reply %q lacks %q", text, out.Replies[0].Title, want)
	}
	for _, m := range out.Replies {
		if m.Ticket != "" {
			return m.Ticket, nil
		}
	}
	return "", nil
}

// parallel runs do(0..n-1) from conc workers and returns the first error;
// a worker stops at its first error, the others finish.
func parallel(conc, n int, do func(i int) error) error {
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, conc)
	for w := 0; w < conc; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1)) - 1; i < n; i = int(next.Add(1)) - 1 {
				if err := do(i); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

type latencies struct {
	mu sync.Mutex
	d  []time.Duration
}

func (l *latencies) add(d time.Duration) {
	l.mu.Lock()
	l.d = append(l.d, d)
	l.mu.Unlock()
}

func (l *latencies) pct(p float64) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.d) == 0 {
		return 0
	}
	s := slices.Clone(l.d)
	slices.Sort(s)
	i := int(float64(len(s)-1) * p / 100)
	return s[i].Round(10 * time.Microsecond)
}

// rawBoltRate measures bbolt's own batched write rate: conc goroutines
// each putting 1 KiB values through db.Batch with the same 2ms batch delay
// the bot uses.
func rawBoltRate(path string, writes, conc int) (float64, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		return 0, err
	}
	defer db.Close()
	db.MaxBatchDelay = 2 * time.Millisecond
	if err := db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucketIfNotExists([]byte("b")); return err }); err != nil {
		return 0, err
	}
	val := bytes.Repeat([]byte("x"), 1024)
	start := time.Now()
	err = parallel(conc, writes, func(i int) error {
		return db.Batch(func(tx *bolt.Tx) error {
			k := make([]byte, 8)
			binary.BigEndian.PutUint64(k, uint64(i+1))
			return tx.Bucket([]byte("b")).Put(k, val)
		})
	})
	return float64(writes) / time.Since(start).Seconds(), err
}

const loadSigningSecret = "load-test-signing-secret"

// slack measures the Slack HTTP endpoint: signed block_actions clicks
// (approve) at a fixed rate (ack latency), and closed-loop throughput of
// clicks until each approval is applied, next to the local API's
// approvals per second measured in this run. Slack's Web API is a stub on
// 127.0.0.1 that answers ok.
func (l *loader) slack(ctx context.Context, n, conc, rate int, dur time.Duration, localApprovals float64) error {
	stub := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"ok":true,"channel":"C0LOAD","ts":"1700000000.000001","user":{"id":"U0BOB","profile":{"email":""}}}`))
	}))
	defer stub.Close()
	os.Setenv("OPSBOT_SLACK_BOT_TOKEN", "xoxb-load")
	os.Setenv("OPSBOT_SLACK_SIGNING_SECRET", loadSigningSecret)
	extra := fmt.Sprintf("slack: {mode: http, listen: \"127.0.0.1:0\", api_url: %q, per_channel_per_minute: 100000000}", stub.URL+"/")
	cfgUsers := strings.Replace(loadConfig, "{name: bob, roles: [techlead]}", "{name: bob, roles: [techlead], ids: {slack: U0BOB}}", 1)
	b, err := l.boot(ctx, cfgUsers+extra, "slack.db")
	if err != nil {
		return err
	}
	defer b.Stop()
	endpoint := "http://" + b.Slack().Addr() + "/slack/interactions"
	total := int(float64(rate)*dur.Seconds()) + n
	ids := make([]string, total)
	for i := range ids {
		t, err := b.Engine().Create(ctx, "alice", "bench", map[string]string{"item": fmt.Sprint(i)})
		if err != nil {
			return err
		}
		ids[i] = t.ID
	}
	// Let the DMs announcing these tickets go out first, so the measured
	// phases carry only their own work.
	for {
		if n, _ := b.Store().OutboxLen(ctx); n == 0 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256}, Timeout: 10 * time.Second}
	click := func(lat *latencies, at time.Time, id string) error {
		cb := slackapi.InteractionCallback{Type: slackapi.InteractionTypeBlockActions, TriggerID: "trig-" + id, ResponseURL: stub.URL + "/respond",
			User: slackapi.User{ID: "U0BOB"}, ActionCallback: slackapi.ActionCallbacks{BlockActions: []*slackapi.BlockAction{
				{ActionID: "opsbot_0", Value: "/ops approve " + id + "#1", ActionTs: id}}}}
		payload, _ := json.Marshal(cb)
		body := []byte(url.Values{"payload": {string(payload)}}.Encode())
		req, _ := http.NewRequest(http.MethodPost, endpoint, bytes.NewReader(body))
		ts := time.Now().Unix()
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("X-Slack-Request-Timestamp", fmt.Sprint(ts))
		req.Header.Set("X-Slack-Signature", opsslack.Sign(loadSigningSecret, ts, body))
		resp, err := hc.Do(req)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		lat.add(time.Since(at))
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("interaction answered %d", resp.StatusCode)
		}
		return nil
	}
	waitDone := func(from, to int) error {
		deadline := time.Now().Add(2 * time.Minute)
		for i := from; i < to; i++ {
			for {
				t, err := b.Store().Get(ctx, ids[i])
				if err != nil {
					return err
				}
				if t.Stage == "done" {
					break
				}
				if time.Now().After(deadline) {
					return fmt.Errorf("%s still %s", ids[i], t.Stage)
				}
				time.Sleep(time.Millisecond)
			}
		}
		return nil
	}
	// Closed loop: n clicks from conc clients, timed until every approval
	// is applied (the work after the ack included).
	var lat latencies
	var failed atomic.Int64
	start := time.Now()
	_ = parallel(conc, n, func(i int) error {
		if err := click(&lat, time.Now(), ids[i]); err != nil {
			failed.Add(1)
		}
		return nil
	})
	if err := waitDone(0, n); err != nil {
		return err
	}
	slackRate := float64(n) / time.Since(start).Seconds()
	l.printf("slack signed clicks (closed loop): %6.0f approvals/s applied; ack p50 %s p99 %s; %d errors\n",
		slackRate, lat.pct(50), lat.pct(99), failed.Load())
	l.printf("  ratio slack approvals/s : local API approvals/s = %.2f\n", slackRate/localApprovals)
	// Fixed rate: ack latency of signed clicks.
	lat = latencies{}
	count := total - n
	interval := time.Second / time.Duration(rate)
	start = time.Now()
	var wg2 sync.WaitGroup
	for i := 0; i < count; i++ {
		at := start.Add(time.Duration(i) * interval)
		time.Sleep(time.Until(at))
		wg2.Add(1)
		go func() {
			defer wg2.Done()
			if err := click(&lat, at, ids[n+i]); err != nil {
				failed.Add(1)
			}
		}()
	}
	wg2.Wait()
	sent := time.Since(start)
	if err := waitDone(n, total); err != nil {
		return err
	}
	l.printf("slack signed clicks at %d/s for %s: %6.0f acks/s; ack p50 %s p99 %s; %d errors\n",
		rate, dur, float64(count)/sent.Seconds(), lat.pct(50), lat.pct(99), failed.Load())
	return nil
}
