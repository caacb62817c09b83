package inventory

import (
	"fmt"
	"math/rand/v2"

	"opsbot/state"
)

// GenerateFleet makes a fleet for tests, benchmarks and the load tool:
// nclusters prod and hd clusters of size 5+3 (capacity scaled to the
// fleet: 1.3 times the stores per cluster) and nstores
// stores over 30 markets with a 60/25/15 direct/DL/CL mix. Most clusters
// are 40-85% full; one in ten of each of three kinds is 90-99% full and
// close to a placement rule, so that the rules decide among the fullest:
// a cluster of a single market, a cluster whose mix leans to direct, and
// a cluster holding half of each of its few DOs (the other half are
// stores elsewhere). The same seed gives the same fleet.
func GenerateFleet(seed uint64, nclusters, nstores int) ([]state.Cluster, []state.StoreInfo) {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	cs := make([]state.Cluster, nclusters)
	fill := make([]int, nclusters)
	capacity := max(16, nstores*13/10/max(nclusters, 1))
	for i := range nclusters {
		env := "prod"
		if i%5 == 4 {
			env = "hd"
		}
		cs[i] = state.Cluster{Name: fmt.Sprintf("%s-r%d-%02d", env, i%7, i), Env: env, Location: []string{"Putuo", "Hedan", "Ali", "AWS"}[i%4],
			Size: "5+3", Capacity: capacity, Status: "active"}
		fill[i] = capacity*40/100 + r.IntN(capacity*45/100+1) // 40%..85%
		if i%10 < 3 {
			fill[i] = capacity*90/100 + r.IntN(capacity*9/100+1) // 90%..99%
		}
	}
	ownership := func(directShare int) string {
		x := r.IntN(100)
		switch {
		case x < directShare:
			return "direct"
		case x < directShare+(100-directShare)*5/8:
			return "DL"
		}
		return "CL"
	}
	ndo := max(1, nstores/20)
	ss := make([]state.StoreInfo, 0, nstores)
	add := func(cluster int, market, do, own string) {
		id := len(ss) + 1
		s := state.StoreInfo{ID: fmt.Sprintf("S-%05d", id), Name: fmt.Sprintf("store %d", id), Market: market,
			Province: fmt.Sprintf("prov-%d", r.IntN(10)), DO: do, Ownership: own, Nodes: 1 + r.IntN(4), Open: r.IntN(10) > 0, Env: "prod"}
		if cluster >= 0 {
			s.Cluster, s.Env = cs[cluster].Name, cs[cluster].Env
		}
		ss = append(ss, s)
	}
	var halves []string // DOs of the third kind, whose other half goes elsewhere
	for i := 0; i < nclusters && len(ss) < nstores; i++ {
		for j := 0; j < fill[i] && len(ss) < nstores; j++ {
			market, do, own := fmt.Sprintf("city-%02d", r.IntN(30)), fmt.Sprintf("do-%03d", r.IntN(ndo)), ownership(60)
			switch i % 10 {
			case 0:
				market = fmt.Sprintf("city-%02d", i%30)
			case 1:
				own = ownership(72)
			case 2:
				do = fmt.Sprintf("do-c%02d-%02d", i, j%8)
				if j < 8 {
					halves = append(halves, do)
				}
			}
			add(i, market, do, own)
		}
	}
	// The other halves, in ordinary clusters or not yet placed.
	for k := 0; len(ss) < nstores; k++ {
		do := fmt.Sprintf("do-%03d", r.IntN(ndo))
		target := -1
		if len(halves) > 0 && k < len(halves)*(capacity/8+1) {
			do = halves[k%len(halves)]
		}
		if c := r.IntN(nclusters); c%10 >= 3 {
			target = c
		}
		add(target, fmt.Sprintf("city-%02d", r.IntN(30)), do, ownership(60))
	}
	return cs, ss
}
