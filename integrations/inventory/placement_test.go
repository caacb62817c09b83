package inventory_test

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"testing"
	"time"

	"opsbot/integrations/inventory"
	"opsbot/state"
)

func openStore(t testing.TB) *state.Store {
	t.Helper()
	st, err := state.Open(state.Options{Path: filepath.Join(t.TempDir(), "state.db")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func fleet(t testing.TB, seed uint64, nc, ns int) (*state.Store, *inventory.Inventory) {
	t.Helper()
	st := openStore(t)
	cs, ss := inventory.GenerateFleet(seed, nc, ns)
	if err := st.PutInventory(context.Background(), cs, ss); err != nil {
		t.Fatal(err)
	}
	inv, err := inventory.New(context.Background(), st, inventory.DefaultRules())
	if err != nil {
		t.Fatal(err)
	}
	return st, inv
}

// check is an independent reading of the placement rules, from the raw
// store list rather than the inventory's aggregates.
type check struct {
	rules    inventory.Rules
	clusters map[string]state.Cluster
	in       map[string][]state.StoreInfo
	doTotal  map[string]int
	fleet    [3]float64
}

func newCheck(inv *inventory.Inventory) *check {
	c := &check{rules: inv.Rules(), clusters: map[string]state.Cluster{}, in: map[string][]state.StoreInfo{}, doTotal: map[string]int{}}
	for _, cl := range inv.Clusters() {
		c.clusters[cl.Name] = cl
	}
	n := 0.0
	for _, s := range inv.Stores() {
		c.in[s.Cluster] = append(c.in[s.Cluster], s)
		c.doTotal[s.DO]++
		for i, o := range inventory.Ownerships {
			if o == s.Ownership {
				c.fleet[i]++
			}
		}
		n++
	}
	for i := range c.fleet {
		c.fleet[i] /= n
	}
	return c
}

func (c *check) dev(list []state.StoreInfo) float64 {
	if len(list) == 0 {
		return 0
	}
	var own [3]float64
	for _, s := range list {
		for i, o := range inventory.Ownerships {
			if o == s.Ownership {
				own[i]++
			}
		}
	}
	d := 0.0
	for i := range own {
		d = math.Max(d, math.Abs(own[i]/float64(len(list))-c.fleet[i]))
	}
	return d
}

// feasible reports whether moving stores into cluster keeps every rule,
// and the utilization after.
func (c *check) feasible(name string, moving []state.StoreInfo) (bool, float64) {
	why, u := c.why(name, moving)
	return why == "", u
}

// why names the rule a move breaks, or "" with the utilization after.
func (c *check) why(name string, moving []state.StoreInfo) (string, float64) {
	cl := c.clusters[name]
	before := c.in[name]
	after := append([]state.StoreInfo{}, before...)
	for _, s := range moving {
		if s.Cluster != name {
			after = append(after, s)
		}
	}
	if len(after) == len(before) || cl.Status != "active" || !inventory.Compatible(moving[0].Env, cl.Env) {
		return "not a candidate", 0
	}
	if len(after) > cl.Capacity {
		return inventory.WhyFull, 0
	}
	dos, markets := map[string]int{}, map[string]bool{}
	for _, s := range after {
		dos[s.DO]++
		markets[s.Market] = true
	}
	for _, s := range moving {
		if s.Cluster != name && dos[s.DO] > max(1, int(math.Ceil(float64(c.doTotal[s.DO])*c.rules.MaxDOShare))) {
			return inventory.WhyDO, 0
		}
	}
	if len(after) >= 2 && len(markets) < 2 {
		return inventory.WhyMarkets, 0
	}
	if len(after) >= c.rules.MixMinStores && c.dev(after) > math.Max(c.rules.MixTolerance, c.dev(before)) {
		return inventory.WhyMix, 0
	}
	return "", float64(len(after)) / float64(cl.Capacity)
}

func TestPlacementOnAGeneratedFleet(t *testing.T) {
	ctx := context.Background()
	st, inv := fleet(t, 7, 50, 5000)
	r := rand.New(rand.NewPCG(1, 2))
	stores := inv.Stores()
	proposals := 0
	seen := map[string]int{}
	for round := range 60 {
		k := 1 + r.IntN(5)
		var ids []string
		for len(ids) < k {
			s := stores[r.IntN(len(stores))]
			if s.Env == "prod" || s.Env == "hd" {
				ids = append(ids, s.ID)
			}
		}
		p, err := inv.Propose(ids, nil)
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		// Deterministic: again, and from a freshly loaded inventory.
		again, third := p, p
		if round%10 == 0 {
			again, _ = inv.Propose(ids, nil)
			fresh, err := inventory.New(ctx, st, inventory.DefaultRules())
			if err != nil {
				t.Fatal(err)
			}
			third, _ = fresh.Propose(ids, nil)
		}
		if again.Best != p.Best || third.Best != p.Best || third.RunnerUpLine() != p.RunnerUpLine() {
			t.Fatalf("round %d: not deterministic: %s / %s / %s", round, p.Line(), again.Line(), third.Line())
		}
		c := newCheck(inv)
		var moving []state.StoreInfo
		for _, id := range ids {
			s, _ := inv.Store(id)
			moving = append(moving, s)
		}
		why, util := c.why(p.Best.Cluster, moving)
		if why != "" {
			t.Fatalf("round %d: proposal %s breaks the rule %s", round, p.Line(), why)
		}
		// Nothing that fits is fuller.
		for name := range c.clusters {
			if fits, u := c.feasible(name, moving); fits && u > util+1e-12 {
				t.Fatalf("round %d: %s (%.3f) is fuller than the proposal %s (%.3f)", round, name, u, p.Best.Cluster, util)
			}
		}
		if p.RunnerUp != nil {
			if fits, u := c.feasible(p.RunnerUp.Cluster, moving); !fits || u > util+1e-12 {
				t.Fatalf("round %d: runner-up %s fits=%v util %.3f", round, p.RunnerUpLine(), fits, u)
			}
		}
		for k, v := range p.Refused {
			seen[k] += v
		}
		if p.Line() == "" || p.RunnerUpLine() == "" {
			t.Fatal("no explanation")
		}
		// Apply the move so that the fleet fills up as rounds go on.
		if _, err := st.MoveStores(ctx, state.Move{Stores: ids, To: p.Best.Cluster, Ticket: "T-test", At: time.Now()}); err != nil {
			t.Fatal(err)
		}
		if err := inv.Reload(ctx); err != nil {
			t.Fatal(err)
		}
		proposals++
	}
	if proposals != 60 {
		t.Fatal(proposals)
	}
	// The fleet makes every rule decide somewhere, so the checks above
	// are not vacuous.
	for _, why := range []string{inventory.WhyFull, inventory.WhyDO, inventory.WhyMarkets, inventory.WhyMix} {
		if seen[why] == 0 {
			t.Errorf("no cluster was refused for %s: %v", why, seen)
		}
	}
}

func TestPlacementRefusesWhatBreaksARule(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	cs := []state.Cluster{
		{Name: "prod-a-01", Env: "prod", Location: "Putuo", Size: "5+3", Capacity: 10, Status: "active"},
		{Name: "prod-a-02", Env: "prod", Location: "Putuo", Size: "5+3", Capacity: 10, Status: "active"},
		{Name: "hd-a-03", Env: "hd", Location: "Hedan", Size: "5+3", Capacity: 10, Status: "active"},
		{Name: "uat-a-01", Env: "uat", Location: "Putuo", Size: "3+3", Capacity: 100, Status: "active"},
		{Name: "prod-a-04", Env: "prod", Location: "Putuo", Size: "5+3", Capacity: 100, Status: "retired"},
	}
	st1 := func(id, cluster, market, do string) state.StoreInfo {
		return state.StoreInfo{ID: id, Market: market, DO: do, Ownership: "direct", Env: "prod", Cluster: cluster}
	}
	var ss []state.StoreInfo
	// prod-a-01: 9/10, fullest. prod-a-02: 5/10. hd-a-03: 1/10.
	for i := range 9 {
		ss = append(ss, st1("A"+string(rune('0'+i)), "prod-a-01", []string{"sh", "bj"}[i%2], "do-x"+string(rune('0'+i))))
	}
	for i := range 5 {
		ss = append(ss, st1("B"+string(rune('0'+i)), "prod-a-02", "sh", "do-y"+string(rune('0'+i))))
	}
	ss = append(ss, st1("C0", "hd-a-03", "gz", "do-z"))
	ss = append(ss, st1("N1", "", "sh", "do-new"), st1("N2", "", "sh", "do-new"), st1("N3", "", "sh", "do-new2"))
	if err := st.PutInventory(ctx, cs, ss); err != nil {
		t.Fatal(err)
	}
	inv, err := inventory.New(ctx, st, inventory.DefaultRules())
	if err != nil {
		t.Fatal(err)
	}
	// One store: the fullest that fits is prod-a-01 (9→10). prod-a-02
	// would be left with the single market sh, so the runner-up is the hd
	// cluster: hd and prod swap.
	p, err := inv.Propose([]string{"N3"}, nil)
	if err != nil || p.Best.Cluster != "prod-a-01" || p.RunnerUp == nil || p.RunnerUp.Cluster != "hd-a-03" || p.Refused[inventory.WhyMarkets] != 1 {
		t.Fatalf("one store: %+v %v", p, err)
	}
	if got := p.Line(); got != "prod-a-01: 放得下的集群中最满 fullest cluster that fits, 门店 stores 9→10/10 (100%); 所属 DO do-new2 在此集群 in this cluster 1/1 (上限 limit); 市场 markets 2; 规模偏差 size mix ±0%" {
		t.Fatalf("line: %s", got)
	}
	if got := p.RunnerUpLine(); got != "hd-a-03 1→2/10 (20%)" {
		t.Fatalf("runner-up: %s", got)
	}
	// Two stores do not fit in prod-a-01 (11 > 10); N1 and N2 share a DO
	// of two stores, whose limit per cluster is one: nowhere takes both.
	_, err = inv.Propose([]string{"N1", "N2"}, nil)
	if err == nil || err.Error() != "没有能放下这些门店的 prod 集群 · no prod cluster fits these stores (1 full; 2 would hold too many of one DO's stores); add capacity or move fewer stores" {
		t.Fatalf("N1+N2: %v", err)
	}
	// A reservation of prod-a-01's last slot sends the store elsewhere;
	// unknown reserved stores reserve nothing.
	p, err = inv.Propose([]string{"N3"}, []inventory.Reservation{{Ticket: "T-9", Stores: []string{"N1"}, To: "prod-a-01"},
		{Ticket: "T-8", Stores: []string{"X1"}, To: "hd-a-03"}})
	if err != nil || p.Best.Cluster != "hd-a-03" || p.Refused[inventory.WhyFull] != 1 {
		t.Fatalf("with a reservation: %+v %v", p, err)
	}
	// A store from another market may go to prod-a-02 (it gains a second
	// market): the fullest that fits after the reservation.
	if err := inv.Put(ctx, nil, []state.StoreInfo{st1("N4", "", "bj", "do-new3")}); err != nil {
		t.Fatal(err)
	}
	p, err = inv.Propose([]string{"N4"}, []inventory.Reservation{{Ticket: "T-9", Stores: []string{"N1"}, To: "prod-a-01"}})
	if err != nil || p.Best.Cluster != "prod-a-02" {
		t.Fatalf("second market: %+v %v", p, err)
	}
	// uat stores are never proposed prod, hd, retired or uat clusters: the
	// requester picks for uat.
	if inventory.Proposes("uat") || !inventory.Proposes("prod") || !inventory.Proposes("hd") {
		t.Fatal("Proposes")
	}
	if inventory.Compatible("uat", "prod") || !inventory.Compatible("prod", "hd") || !inventory.Compatible("hd", "prod") {
		t.Fatal("Compatible")
	}
}

// reservations makes 20 reservations of proposed moves, as tickets in
// flight would hold.
func reservations(inv *inventory.Inventory, pick func() []string) []inventory.Reservation {
	var res []inventory.Reservation
	for i := range 20 {
		ids := pick()
		if p, err := inv.Propose(ids, res); err == nil {
			res = append(res, inventory.Reservation{Ticket: fmt.Sprintf("T-%d", 900+i), Stores: ids, To: p.Best.Cluster})
		}
	}
	return res
}
