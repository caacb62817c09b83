package inventory

import (
	"fmt"
	"math"
	"sort"
	"strings"

	"opsbot/state"
)

// Compatible reports whether stores of env may live in a cluster of
// cluster env: the same env, and hd and prod may be swapped for each
// other.
func Compatible(storeEnv, clusterEnv string) bool {
	if storeEnv == clusterEnv {
		return true
	}
	pair := func(e string) bool { return e == "prod" || e == "hd" }
	return pair(storeEnv) && pair(clusterEnv)
}

// Proposes reports whether the bot proposes the cluster for stores of env
// (prod and hd), rather than the requester choosing (dev, uat, sit, pt).
func Proposes(env string) bool { return env == "prod" || env == "hd" }

// Candidate is one cluster evaluated for a move.
type Candidate struct {
	Cluster  string
	Before   int // projected count before the move (reservations counted)
	After    int
	Capacity int
	Markets  int
	// MixDev is the largest distance of an ownership class's share from
	// the fleet's, after the move.
	MixDev float64
	// DO is the most loaded DO of the moved stores: its count after the
	// move and its limit.
	DO      string
	DOAfter int
	DOLimit int
	// Why names the broken rule; empty when the cluster fits.
	Why string
}

// Util is the utilization after the move.
func (c Candidate) Util() float64 { return float64(c.After) / float64(max(c.Capacity, 1)) }

// Proposal is the placement of a set of stores.
type Proposal struct {
	Best     Candidate
	RunnerUp *Candidate
	// Refused counts the clusters left out, by reason.
	Refused map[string]int
}

// Reasons a cluster is left out of a placement.
const (
	WhyFull    = "full"
	WhyDO      = "do_spread"
	WhyMarkets = "markets"
	WhyMix     = "mix"
)

// Line explains the proposal in one line.
func (p Proposal) Line() string {
	b := p.Best
	s := fmt.Sprintf("%s: 放得下的集群中最满 fullest cluster that fits, 门店 stores %d→%d/%d (%d%%); 所属 DO %s 在此集群 in this cluster %d/%d (上限 limit); 市场 markets %d; 规模偏差 size mix ±%d%%",
		b.Cluster, b.Before, b.After, b.Capacity, Percent(b.After, b.Capacity), b.DO, b.DOAfter, b.DOLimit, b.Markets,
		int(math.Round(b.MixDev*100)))
	return s
}

// RunnerUpLine names the second choice, or says there is none.
func (p Proposal) RunnerUpLine() string {
	if p.RunnerUp == nil {
		return "无 none"
	}
	r := p.RunnerUp
	return fmt.Sprintf("%s %d→%d/%d (%d%%)", r.Cluster, r.Before, r.After, r.Capacity, Percent(r.After, r.Capacity))
}

// overlay is what reservations change in clusters' aggregates.
type overlay map[string]*agg

func (o overlay) get(name string) *agg {
	a := o[name]
	if a == nil {
		a = &agg{do: map[string]int{}, market: map[string]int{}}
		o[name] = a
	}
	return a
}

// signedAdd adds without deleting zero entries (an overlay holds deltas).
func (a *agg) delta(s state.StoreInfo, d int) {
	a.n += d
	a.do[s.DO] += d
	a.market[s.Market] += d
	if i := ownIndex(s.Ownership); i >= 0 {
		a.own[i] += d
	}
}

func (inv *Inventory) overlayOf(res []Reservation) overlay {
	o := overlay{}
	for _, r := range res {
		for _, id := range r.Stores {
			s, ok := inv.stores[id]
			if !ok || s.Cluster == r.To {
				continue
			}
			o.get(r.To).delta(s, 1)
			if s.Cluster != "" {
				o.get(s.Cluster).delta(s, -1)
			}
		}
	}
	return o
}

// Propose places stores (all of one env family) in the best cluster: among
// active, compatible clusters where they fit, with a DO's stores spread,
// at least two markets and the direct/DL/CL mix near the fleet's, the
// fullest after the move; ties go to the better mix, then the name. It is
// deterministic: the same inventory and reservations give the same answer.
func (inv *Inventory) Propose(ids []string, res []Reservation) (Proposal, error) {
	inv.mu.RLock()
	defer inv.mu.RUnlock()
	var moving []state.StoreInfo
	for _, id := range ids {
		s, ok := inv.stores[id]
		if !ok {
			return Proposal{}, fmt.Errorf("no store %s", id)
		}
		moving = append(moving, s)
	}
	if len(moving) == 0 {
		return Proposal{}, fmt.Errorf("no stores to place")
	}
	env := moving[0].Env
	o := inv.overlayOf(res)
	p := Proposal{Refused: map[string]int{}}
	var fit []Candidate
	for name, a := range inv.clusters {
		if a.c.Status != "active" || !Compatible(env, a.c.Env) {
			continue
		}
		c := inv.evaluate(a, o[name], moving)
		if c.Before == c.After {
			continue // every store is there already
		}
		if c.Why != "" {
			p.Refused[c.Why]++
			continue
		}
		fit = append(fit, c)
	}
	if len(fit) == 0 {
		return p, fmt.Errorf("%s", noFit(env, p.Refused))
	}
	sort.Slice(fit, func(i, j int) bool { return better(fit[i], fit[j]) })
	p.Best = fit[0]
	if len(fit) > 1 {
		r := fit[1]
		p.RunnerUp = &r
	}
	return p, nil
}

// better orders candidates: fuller after the move, then closer to the
// fleet's mix, then by name.
func better(x, y Candidate) bool {
	ux, uy := x.Util(), y.Util()
	if ux != uy {
		return ux > uy
	}
	if x.MixDev != y.MixDev {
		return x.MixDev < y.MixDev
	}
	return x.Cluster < y.Cluster
}

// whyText says a refusal reason in words.
var whyText = map[string]string{
	WhyFull:    "full",
	WhyDO:      "would hold too many of one DO's stores",
	WhyMarkets: "would be left with one market",
	WhyMix:     "would drift from the fleet's direct/DL/CL mix",
}

func noFit(env string, refused map[string]int) string {
	var parts []string
	for _, k := range []string{WhyFull, WhyDO, WhyMarkets, WhyMix} {
		if refused[k] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", refused[k], whyText[k]))
		}
	}
	if len(parts) == 0 {
		parts = append(parts, "no active cluster")
	}
	return fmt.Sprintf("没有能放下这些门店的 %s 集群 · no %s cluster fits these stores (%s); add capacity or move fewer stores",
		env, env, strings.Join(parts, "; "))
}

// DOLimit is the most stores of one DO that placement puts in a cluster.
func (inv *Inventory) doLimit(do string) int {
	return max(1, int(math.Ceil(float64(inv.doTotal[do])*inv.rules.MaxDOShare)))
}

// mixDev is the largest distance of a class's share from the fleet's.
func (inv *Inventory) mixDev(own [3]int, n int) float64 {
	total := inv.fleet[0] + inv.fleet[1] + inv.fleet[2]
	if n <= 0 || total == 0 {
		return 0
	}
	d := 0.0
	for i := range own {
		d = math.Max(d, math.Abs(float64(own[i])/float64(n)-float64(inv.fleet[i])/float64(total)))
	}
	return d
}

// evaluate checks one cluster for a move; the caller holds the read lock.
func (inv *Inventory) evaluate(a *agg, d *agg, moving []state.StoreInfo) Candidate {
	c := Candidate{Cluster: a.c.Name, Capacity: inv.Capacity(a.c)}
	count := func(m map[string]int, dm map[string]int, k string) int {
		n := m[k]
		if d != nil {
			n += dm[k]
		}
		return n
	}
	c.Before = a.n
	own := a.own
	if d != nil {
		c.Before += d.n
		for i := range own {
			own[i] += d.own[i]
		}
	}
	before := own
	addDO := map[string]int{}
	addMarket := map[string]int{}
	k := 0
	for _, s := range moving {
		if s.Cluster == a.c.Name {
			continue
		}
		k++
		addDO[s.DO]++
		addMarket[s.Market]++
		if i := ownIndex(s.Ownership); i >= 0 {
			own[i]++
		}
	}
	c.After = c.Before + k
	// The DO nearest its limit.
	dos := make([]string, 0, len(addDO))
	for do := range addDO {
		dos = append(dos, do)
	}
	sort.Strings(dos)
	worst := -1.0
	for _, do := range dos {
		after, limit := count(a.do, dTo(d, "do"), do)+addDO[do], inv.doLimit(do)
		if r := float64(after) / float64(limit); r > worst {
			worst, c.DO, c.DOAfter, c.DOLimit = r, do, after, limit
		}
	}
	markets := 0
	for m, n := range a.market {
		if n+addMarket[m]+deltaOf(d, m) > 0 {
			markets++
		}
	}
	if d != nil {
		for m, n := range d.market {
			if _, ok := a.market[m]; !ok && n+addMarket[m] > 0 {
				markets++
			}
		}
	}
	for m := range addMarket {
		_, inA := a.market[m]
		_, inD := dTo(d, "market")[m]
		if !inA && !inD {
			markets++
		}
	}
	c.Markets = markets
	c.MixDev = inv.mixDev(own, c.After)
	switch {
	case c.After > c.Capacity:
		c.Why = WhyFull
	case c.DOAfter > c.DOLimit:
		c.Why = WhyDO
	case c.After >= 2 && c.Markets < 2:
		c.Why = WhyMarkets
	case c.After >= inv.rules.MixMinStores && c.MixDev > math.Max(inv.rules.MixTolerance, inv.mixDev(before, c.Before)):
		c.Why = WhyMix
	}
	return c
}

func dTo(d *agg, which string) map[string]int {
	if d == nil {
		return nil
	}
	if which == "do" {
		return d.do
	}
	return d.market
}

func deltaOf(d *agg, market string) int {
	if d == nil {
		return 0
	}
	return d.market[market]
}
