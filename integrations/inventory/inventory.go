// Package inventory keeps the store clusters and their stores: an
// in-memory model with per-cluster aggregates over the bbolt records, the
// utilization of a cluster counting the reservations of tickets in
// flight, automatic placement for prod, the validators of the
// cluster-create and cluster-change flows, the "inventory" executor that
// applies moves and registers clusters, and CSV/JSON import and export.
package inventory

import (
	"context"
	"fmt"
	"math"
	"sort"
	"strings"
	"sync"

	"opsbot/state"
)

// Ownership classes of a store.
var Ownerships = []string{"direct", "DL", "CL"}

func ownIndex(o string) int {
	for i, x := range Ownerships {
		if strings.EqualFold(x, o) {
			return i
		}
	}
	return -1
}

// Rules are the capacity and placement rules.
type Rules struct {
	// Sizes maps a size (SKU) to the number of stores it holds.
	Sizes map[string]int
	// WarnAt is the utilization that posts a warning when crossed (0.8).
	WarnAt float64
	// MaxDOShare is the largest share of one DO's stores that placement
	// puts in one cluster (0.5): a DO's stores are spread.
	MaxDOShare float64
	// MixTolerance is how far (as a share) a cluster's direct/DL/CL mix
	// may drift from the fleet's; MixMinStores is the size from which the
	// mix is checked (a small cluster cannot have a mix).
	MixTolerance float64
	MixMinStores int
}

// DefaultRules are the rules when the config says nothing.
func DefaultRules() Rules {
	return Rules{Sizes: map[string]int{"3+3": 256, "5+3": 512, "9+6": 1024}, WarnAt: 0.8, MaxDOShare: 0.5,
		MixTolerance: 0.15, MixMinStores: 20}
}

// agg is a cluster with its aggregates.
type agg struct {
	c      state.Cluster
	n      int
	do     map[string]int
	market map[string]int
	own    [3]int
}

func newAgg(c state.Cluster) *agg {
	return &agg{c: c, do: map[string]int{}, market: map[string]int{}}
}

func (a *agg) add(s state.StoreInfo, d int) {
	a.n += d
	a.do[s.DO] += d
	if a.do[s.DO] == 0 {
		delete(a.do, s.DO)
	}
	a.market[s.Market] += d
	if a.market[s.Market] == 0 {
		delete(a.market, s.Market)
	}
	if i := ownIndex(s.Ownership); i >= 0 {
		a.own[i] += d
	}
}

// Inventory is the in-memory model over the state store. Writes go to
// bbolt first, then to memory.
type Inventory struct {
	st    *state.Store
	rules Rules

	mu       sync.RWMutex
	clusters map[string]*agg
	stores   map[string]state.StoreInfo
	fleet    [3]int
	doTotal  map[string]int
}

// New builds an inventory from the state store.
func New(ctx context.Context, st *state.Store, rules Rules) (*Inventory, error) {
	inv := &Inventory{st: st, rules: rules}
	if err := inv.Reload(ctx); err != nil {
		return nil, err
	}
	return inv, nil
}

// Rules returns the rules in force.
func (inv *Inventory) Rules() Rules { return inv.rules }

// Reload reads everything from the state store again.
func (inv *Inventory) Reload(ctx context.Context) error {
	cs, ss, err := inv.st.Inventory(ctx)
	if err != nil {
		return err
	}
	inv.mu.Lock()
	defer inv.mu.Unlock()
	inv.load(cs, ss)
	return nil
}

func (inv *Inventory) load(cs []state.Cluster, ss []state.StoreInfo) {
	inv.clusters = map[string]*agg{}
	inv.stores = map[string]state.StoreInfo{}
	inv.fleet = [3]int{}
	inv.doTotal = map[string]int{}
	for _, c := range cs {
		inv.clusters[c.Name] = newAgg(c)
	}
	for _, s := range ss {
		inv.putStoreLocked(s)
	}
}

func (inv *Inventory) putStoreLocked(s state.StoreInfo) {
	if old, ok := inv.stores[s.ID]; ok {
		if a := inv.clusters[old.Cluster]; a != nil {
			a.add(old, -1)
		}
		inv.doTotal[old.DO]--
		if i := ownIndex(old.Ownership); i >= 0 {
			inv.fleet[i]--
		}
	}
	inv.stores[s.ID] = s
	if a := inv.clusters[s.Cluster]; a != nil {
		a.add(s, 1)
	}
	inv.doTotal[s.DO]++
	if i := ownIndex(s.Ownership); i >= 0 {
		inv.fleet[i]++
	}
}

// Cluster returns a cluster and its store count.
func (inv *Inventory) Cluster(name string) (state.Cluster, int, bool) {
	inv.mu.RLock()
	defer inv.mu.RUnlock()
	a, ok := inv.clusters[name]
	if !ok {
		return state.Cluster{}, 0, false
	}
	return a.c, a.n, true
}

// Mix is what a cluster holds, for the placement rules: distinct markets
// and DOs, and stores by ownership (direct, DL, CL).
func (inv *Inventory) Mix(name string) (markets, dos int, own [3]int) {
	inv.mu.RLock()
	defer inv.mu.RUnlock()
	a, ok := inv.clusters[name]
	if !ok {
		return 0, 0, own
	}
	return len(a.market), len(a.do), a.own
}

// Clusters returns every cluster, by name.
func (inv *Inventory) Clusters() []state.Cluster {
	inv.mu.RLock()
	defer inv.mu.RUnlock()
	out := make([]state.Cluster, 0, len(inv.clusters))
	for _, a := range inv.clusters {
		out = append(out, a.c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Store returns a store.
func (inv *Inventory) Store(id string) (state.StoreInfo, bool) {
	inv.mu.RLock()
	defer inv.mu.RUnlock()
	s, ok := inv.stores[id]
	return s, ok
}

// Stores returns every store, by id.
func (inv *Inventory) Stores() []state.StoreInfo {
	inv.mu.RLock()
	defer inv.mu.RUnlock()
	out := make([]state.StoreInfo, 0, len(inv.stores))
	for _, s := range inv.stores {
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Capacity is how many stores a cluster of this size holds.
func (inv *Inventory) Capacity(c state.Cluster) int {
	if c.Capacity > 0 {
		return c.Capacity
	}
	return inv.rules.Sizes[c.Size]
}

// Put writes clusters and stores, then updates memory.
func (inv *Inventory) Put(ctx context.Context, cs []state.Cluster, ss []state.StoreInfo) error {
	if err := inv.st.PutInventory(ctx, cs, ss); err != nil {
		return err
	}
	inv.mu.Lock()
	defer inv.mu.Unlock()
	for _, c := range cs {
		if a, ok := inv.clusters[c.Name]; ok {
			a.c = c
		} else {
			a := newAgg(c)
			inv.clusters[c.Name] = a
			for _, s := range inv.stores {
				if s.Cluster == c.Name {
					a.add(s, 1)
				}
			}
		}
	}
	for _, s := range ss {
		inv.putStoreLocked(s)
	}
	return nil
}

// Reservation is a move that a ticket in flight will make.
type Reservation struct {
	Ticket string
	Stores []string
	To     string
}

// Usage is a cluster's utilization with the reservations counted.
type Usage struct {
	Cluster  string
	Count    int // stores in the inventory
	Reserved int // stores that tickets in flight will move in
	Leaving  int // stores that tickets in flight will move out
	Capacity int
	// By lists the tickets holding the reservations.
	By []string
}

// Projected is the count once every ticket in flight is done.
func (u Usage) Projected() int { return u.Count + u.Reserved - u.Leaving }

// Percent is a utilization as a whole percentage.
func Percent(n, capacity int) int {
	if capacity <= 0 {
		return 0
	}
	return int(math.Round(float64(n) * 100 / float64(capacity)))
}

// Usage returns the utilization of a cluster, counting reservations.
func (inv *Inventory) Usage(name string, res []Reservation) (Usage, error) {
	inv.mu.RLock()
	defer inv.mu.RUnlock()
	a, ok := inv.clusters[name]
	if !ok {
		return Usage{}, fmt.Errorf("no cluster %s", name)
	}
	u := Usage{Cluster: name, Count: a.n, Capacity: inv.Capacity(a.c)}
	for _, r := range res {
		counted := false
		for _, id := range r.Stores {
			s, ok := inv.stores[id]
			if !ok || s.Cluster == r.To {
				continue
			}
			switch name {
			case r.To:
				u.Reserved++
				counted = true
			case s.Cluster:
				u.Leaving++
			}
		}
		if counted {
			u.By = append(u.By, r.Ticket)
		}
	}
	return u, nil
}

// apply records a move in memory after it was written to bbolt.
func (inv *Inventory) apply(moved []string, to, ticket string) {
	inv.mu.Lock()
	defer inv.mu.Unlock()
	for _, id := range moved {
		s := inv.stores[id]
		s.Cluster, s.Ticket = to, ticket
		inv.putStoreLocked(s)
	}
	if a, ok := inv.clusters[to]; ok && len(moved) > 0 {
		a.c.Ticket = ticket
	}
}
