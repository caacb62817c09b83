package state

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"opsbot/state/kv"
)

var (
	bClusters     = []byte("inv_clusters")
	bStores       = []byte("inv_stores")
	bClusterIndex = []byte("inv_cluster_stores") // cluster \x00 store id
	// bClusterCount holds how many stores each cluster has, kept with the
	// index: one key to read (and check at commit) instead of a range
	// over every store of the cluster.
	bClusterCount = []byte("inv_cluster_count")
)

// Cluster is a store cluster in the inventory the bot keeps.
type Cluster struct {
	Name      string   `json:"name"`
	Env       string   `json:"env"`
	Location  string   `json:"location"`
	Size      string   `json:"size"`
	Capacity  int      `json:"capacity"`
	Domain    string   `json:"domain,omitempty"`
	IngressIP string   `json:"ingress_ip,omitempty"`
	RancherID string   `json:"rancher_id,omitempty"`
	K8sID     string   `json:"k8s_id,omitempty"`
	LBID      string   `json:"lb_id,omitempty"`
	K8sIPs    []string `json:"k8s_ips,omitempty"`
	OBIPs     []string `json:"ob_ips,omitempty"`
	OBVIP     string   `json:"ob_vip,omitempty"`
	OBUser    string   `json:"ob_user,omitempty"`
	Tags      []string `json:"tags,omitempty"`
	// Status is "active" (stores may move in) or "retired".
	Status string `json:"status"`
	// Warned is set when utilization crossed the warning threshold and
	// cleared when it falls back under it, so the warning fires once.
	Warned  bool      `json:"warned,omitempty"`
	Ticket  string    `json:"ticket,omitempty"` // the ticket that last changed it
	Updated time.Time `json:"updated"`
}

// StoreInfo is one store (a shop) in the inventory.
type StoreInfo struct {
	ID        string `json:"id"`
	Name      string `json:"name"`
	Market    string `json:"market"` // city
	Province  string `json:"province"`
	DO        string `json:"do"`        // district owner
	Ownership string `json:"ownership"` // direct, DL or CL
	Nodes     int    `json:"nodes"`
	Open      bool   `json:"open"`
	Env       string `json:"env"`
	Cluster   string `json:"cluster,omitempty"`
	Ticket    string `json:"ticket,omitempty"`
	// Updated is when the record last changed.
	Updated time.Time `json:"updated"`
}

func clusterKey(cluster, id string) string { return key(bClusterIndex, []byte(cluster+"\x00"+id)) }

func storeKey(id string) string     { return key(bStores, []byte(id)) }
func clusterRec(name string) string { return key(bClusters, []byte(name)) }

// Inventory reads every cluster and store.
func (s *Store) Inventory(ctx context.Context) ([]Cluster, []StoreInfo, error) {
	var cs []Cluster
	var ss []StoreInfo
	err := s.db.View(ctx, func(tx kv.Txn) error {
		cs, ss = cs[:0], ss[:0]
		if err := each(tx, key(bClusters, nil), func(_ string, v []byte) (bool, error) {
			var c Cluster
			err := json.Unmarshal(v, &c)
			cs = append(cs, c)
			return err == nil, err
		}); err != nil {
			return err
		}
		return each(tx, key(bStores, nil), func(_ string, v []byte) (bool, error) {
			var st StoreInfo
			err := json.Unmarshal(v, &st)
			ss = append(ss, st)
			return err == nil, err
		})
	})
	return cs, ss, err
}

// PutInventory writes clusters and stores (insert or replace), keeping
// the cluster index right. It writes a bounded number of records per
// transaction (an import of thousands of stores does not fit one); each
// record is whole, and an import stopped half way is finished by running
// it again.
func (s *Store) PutInventory(ctx context.Context, clusters []Cluster, stores []StoreInfo) error {
	for len(clusters) > 0 {
		chunk := clusters[:min(len(clusters), kv.MaxOps/2)]
		clusters = clusters[len(chunk):]
		if err := s.db.Update(ctx, func(tx kv.Txn) error {
			for _, c := range chunk {
				if err := putJSON(tx, clusterRec(c.Name), c); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			return err
		}
	}
	// A store takes at most seven operations (its record and two counts
	// read and written, two index keys).
	for len(stores) > 0 {
		chunk := stores[:min(len(stores), kv.MaxOps/8)]
		stores = stores[len(chunk):]
		if err := s.db.Update(ctx, func(tx kv.Txn) error {
			for _, st := range chunk {
				if err := putStore(tx, st); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			return err
		}
	}
	return nil
}

func putStore(tx kv.Txn, st StoreInfo) error {
	var old StoreInfo
	had, err := getJSON(tx, storeKey(st.ID), &old)
	if err != nil {
		return err
	}
	if had && old.Cluster != st.Cluster && old.Cluster != "" {
		if err := tx.Delete(clusterKey(old.Cluster, old.ID)); err != nil {
			return err
		}
		if err := addCount(tx, old.Cluster, -1); err != nil {
			return err
		}
	}
	if st.Cluster != "" && (!had || old.Cluster != st.Cluster) {
		if err := tx.Put(clusterKey(st.Cluster, st.ID), nil); err != nil {
			return err
		}
		if err := addCount(tx, st.Cluster, 1); err != nil {
			return err
		}
	}
	return putJSON(tx, storeKey(st.ID), st)
}

func countKey(cluster string) string { return key(bClusterCount, []byte(cluster)) }

// countIn is how many stores a cluster has.
func countIn(tx kv.Txn, cluster string) (int, error) {
	raw, ok, err := tx.Get(countKey(cluster))
	if err != nil || !ok {
		return 0, err
	}
	n, err := strconv.Atoi(string(raw))
	if err != nil {
		return 0, fmt.Errorf("store count of cluster %s is %q, not a number", cluster, raw)
	}
	return n, nil
}

func addCount(tx kv.Txn, cluster string, d int) error {
	n, err := countIn(tx, cluster)
	if err != nil {
		return err
	}
	if n+d <= 0 {
		return tx.Delete(countKey(cluster))
	}
	return tx.Put(countKey(cluster), []byte(strconv.Itoa(n+d)))
}

// Move is a change of stores to a cluster.
type Move struct {
	Stores []string
	To     string
	Ticket string
	At     time.Time
	// Warn, when set, is the utilization threshold: a cluster at or over
	// it after the move gets one warning, queued in the same transaction
	// (its Warned flag set); one under it again is re-armed.
	Warn *MoveWarning
}

// MoveWarning is the threshold a move checks, as data: the transaction
// calls nothing outside the store.
type MoveWarning struct {
	// At is the fraction of capacity that warns (0.75).
	At float64
	// Capacity of the target and of the clusters the stores leave.
	Capacity map[string]int
	// Channel gets the warning; with none, the flags are kept but nothing
	// is queued.
	Channel string
	// Title is the ticket's title, for the message.
	Title string
}

// ClusterWarning is the intent of a utilization warning, queued as a
// NotifyClusterWarning notification and worded when it is delivered.
type ClusterWarning struct {
	Cluster  string  `json:"cluster"`
	Before   int     `json:"before"`
	After    int     `json:"after"`
	Capacity int     `json:"capacity"`
	At       float64 `json:"at"`
	Ticket   string  `json:"ticket"`
	Title    string  `json:"title,omitempty"`
}

// MoveResult reports a move.
type MoveResult struct {
	Moved  []string          // stores that changed cluster
	Kept   []string          // stores already in the target (a repeat)
	From   map[string]string // store -> previous cluster
	Before int
	After  int
	Warned bool
}

// MoveStores moves stores to a cluster in one transaction. It is
// idempotent: stores already there are left alone, so a repeated move
// changes nothing and warns nobody. Every cluster a store left is checked
// too, so its warning is re-armed when it falls under the threshold.
func (s *Store) MoveStores(ctx context.Context, m Move) (MoveResult, error) {
	res := MoveResult{From: map[string]string{}}
	err := s.db.Update(ctx, func(tx kv.Txn) error {
		res = MoveResult{From: map[string]string{}}
		var to Cluster
		ok, err := getJSON(tx, clusterRec(m.To), &to)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("cluster %s is not in the inventory: %w", m.To, ErrNotFound)
		}
		if res.Before, err = countIn(tx, m.To); err != nil {
			return err
		}
		left := map[string]bool{}
		for _, id := range m.Stores {
			var st StoreInfo
			ok, err := getJSON(tx, storeKey(id), &st)
			if err != nil {
				return err
			}
			if !ok {
				return fmt.Errorf("store %s is not in the inventory: %w", id, ErrNotFound)
			}
			if st.Cluster == m.To {
				res.Kept = append(res.Kept, id)
				continue
			}
			res.From[id] = st.Cluster
			if st.Cluster != "" {
				left[st.Cluster] = true
			}
			st.Cluster, st.Ticket, st.Updated = m.To, m.Ticket, m.At
			if err := putStore(tx, st); err != nil {
				return err
			}
			res.Moved = append(res.Moved, id)
		}
		if res.After, err = countIn(tx, m.To); err != nil {
			return err
		}
		if m.Warn == nil {
			return nil
		}
		w := m.Warn
		check := func(c Cluster, before, after int) error {
			capacity, ok := w.Capacity[c.Name]
			if !ok {
				capacity = c.Capacity
			}
			over := float64(after) >= w.At*float64(capacity)
			switch {
			case over && w.Channel != "" && !c.Warned:
				raw, err := json.Marshal(ClusterWarning{Cluster: c.Name, Before: before, After: after, Capacity: capacity,
					At: w.At, Ticket: m.Ticket, Title: w.Title})
				if err != nil {
					return err
				}
				if _, err := s.enqueue(ctx, tx, Notification{User: w.Channel, Ticket: m.Ticket, Kind: NotifyClusterWarning,
					Message: raw, NextAt: m.At, Created: m.At}); err != nil {
					return err
				}
				c.Warned = true
				if c.Name == m.To {
					res.Warned = true
				}
			case !over && c.Warned:
				c.Warned = false
			default:
				return nil
			}
			return putJSON(tx, clusterRec(c.Name), c)
		}
		if len(res.Moved) > 0 {
			to.Ticket, to.Updated = m.Ticket, m.At
		}
		if err := check(to, res.Before, res.After); err != nil {
			return err
		}
		for name := range left {
			var c Cluster
			if ok, err := getJSON(tx, clusterRec(name), &c); err != nil || !ok {
				continue
			}
			n, err := countIn(tx, name)
			if err != nil {
				return err
			}
			if err := check(c, n, n); err != nil {
				return err
			}
		}
		return nil
	})
	return res, err
}

// PutCluster inserts or replaces one cluster, keeping its Warned flag.
func (s *Store) PutCluster(ctx context.Context, c Cluster) error {
	return s.db.Update(ctx, func(tx kv.Txn) error {
		var old Cluster
		if ok, err := getJSON(tx, clusterRec(c.Name), &old); err != nil {
			return err
		} else if ok {
			c.Warned = old.Warned
		}
		return putJSON(tx, clusterRec(c.Name), c)
	})
}
