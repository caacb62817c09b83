package cleanup_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"opsbot/flows"
	"opsbot/integrations/cleanup"
	"opsbot/integrations/redis/redistest"
	"opsbot/state"
)

func load(b *testing.B, c *goredis.Client, prefix string, n int) {
	ctx := context.Background()
	for i := 0; i < n; i += 10000 {
		pipe := c.Pipeline()
		for j := i; j < min(i+10000, n); j++ {
			pipe.Set(ctx, fmt.Sprintf("%s:%d", prefix, j), "v", 0)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

// pings measures another client's PING round trips until stop closes.
func pings(addr string, stop <-chan struct{}) <-chan []time.Duration {
	out := make(chan []time.Duration, 1)
	go func() {
		c := goredis.NewClient(&goredis.Options{Addr: addr, DB: 0})
		defer c.Close()
		var lat []time.Duration
		for {
			select {
			case <-stop:
				out <- lat
				return
			default:
			}
			t0 := time.Now()
			c.Ping(context.Background())
			lat = append(lat, time.Since(t0))
			time.Sleep(time.Millisecond)
		}
	}()
	return out
}

func pct(lat []time.Duration, p int) time.Duration {
	if len(lat) == 0 {
		return 0
	}
	s := slices.Clone(lat)
	slices.Sort(s)
	return s[min(len(s)-1, len(s)*p/100)]
}

// BenchmarkRedisWipe1M wipes 1,000,000 keys by pattern (100,000 other
// keys stay) with SCAN + UNLINK while another client PINGs every
// millisecond, and compares that client's latency with an idle server and
// with a blocking FLUSHDB of the same keys, in the same run.
func BenchmarkRedisWipe1M(b *testing.B) {
	srv := redistest.Start(b)
	ctx := context.Background()
	c := goredis.NewClient(&goredis.Options{Addr: srv.Addr, DB: 1})
	defer c.Close()
	x := cleanup.New(cleanup.Config{Batch: 1000, ChangeThreshold: 0.2, Envs: map[string]cleanup.Env{"tdev": {Name: "tdev",
		Redis: cleanup.RedisConn{Addr: srv.Addr}, Targets: []cleanup.Target{{Name: "sessions", Kind: cleanup.KindRedis, DB: 1, Patterns: []string{"session:*"}}}}}})
	defer x.Close()
	for range b.N {
		b.StopTimer()
		load(b, c, "session", 1_000_000)
		load(b, c, "keep", 100_000)
		stop := make(chan struct{})
		res := pings(srv.Addr, stop)
		time.Sleep(2 * time.Second)
		close(stop)
		idle := <-res

		tk := state.Ticket{ID: "T-1", Fields: map[string]string{"env": "tdev", "targets": "sessions"}, Outputs: map[string]string{}}
		r := x.Run(ctx, flows.ExecInput{Ticket: tk, Params: map[string]string{"op": "dry_run"}})
		for k, v := range r.Set {
			tk.Outputs[k] = v
		}
		stop = make(chan struct{})
		res = pings(srv.Addr, stop)
		b.StartTimer()
		t0 := time.Now()
		r = x.Run(ctx, flows.ExecInput{Ticket: tk, Params: map[string]string{"op": "wipe"}})
		wipe := time.Since(t0)
		b.StopTimer()
		close(stop)
		during := <-res
		if !r.OK {
			b.Fatal(r.Err)
		}
		if n := c.DBSize(ctx).Val(); n != 100_000 {
			b.Fatalf("%d keys left, want the 100,000 others", n)
		}

		// The blocking way, for comparison: FLUSHDB SYNC of as many keys.
		load(b, c, "session", 1_000_000)
		stop = make(chan struct{})
		res = pings(srv.Addr, stop)
		time.Sleep(100 * time.Millisecond)
		var wg sync.WaitGroup
		wg.Add(1)
		go func() { defer wg.Done(); c.Do(ctx, "FLUSHDB", "SYNC") }()
		wg.Wait()
		time.Sleep(100 * time.Millisecond)
		close(stop)
		flush := <-res

		b.ReportMetric(wipe.Seconds(), "wipe-s")
		b.ReportMetric(1e6/wipe.Seconds(), "keys/s")
		b.ReportMetric(float64(pct(idle, 99).Microseconds()), "idle-ping-p99-µs")
		b.ReportMetric(float64(pct(during, 99).Microseconds()), "wipe-ping-p99-µs")
		b.ReportMetric(float64(pct(during, 100).Microseconds()), "wipe-ping-max-µs")
		b.ReportMetric(float64(pct(flush, 100).Microseconds()), "flushdb-ping-max-µs")
		b.ReportMetric(float64(pct(during, 99))/float64(pct(idle, 99)), "p99-ratio")
	}
}
