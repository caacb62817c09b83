package inventory_test

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// BenchmarkPropose places 1-5 random prod stores on a fleet of 200
// clusters and 50,000 stores, with 20 reservations in flight, and reports
// proposals per second and the p99 latency of one proposal.
func BenchmarkPropose(b *testing.B) {
	_, inv := fleet(b, 11, 200, 50000)
	stores := inv.Stores()
	r := rand.New(rand.NewPCG(3, 4))
	pick := func() []string {
		k := 1 + r.IntN(5)
		ids := make([]string, 0, k)
		for len(ids) < k {
			ids = append(ids, stores[r.IntN(len(stores))].ID)
		}
		return ids
	}
	res := reservations(inv, pick)
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		ids := pick()
		t0 := time.Now()
		_, _ = inv.Propose(ids, res)
		lat = append(lat, time.Since(t0))
	}
	elapsed := time.Since(start)
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "proposals/s")
}
