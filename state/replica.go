package state

// Replicas: several bot processes sharing one state in etcd. Each replica
// holds a lease (an etcd session) and a membership key attached to it; a
// replica that dies loses both within the lease's TTL. One replica at a
// time is the leader (etcd's election on the same lease): it fires the
// timers, delivers the outbox and settles the work of replicas that died.
// On bbolt there is one process: it is always the leader, and no other
// replica is ever alive.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// Replica is this process among the replicas sharing a state.
type Replica struct {
	// ID names this process: host, pid and a random part, so a restarted
	// process is a new replica.
	ID     string
	s      *Store
	ttl    time.Duration
	log    *slog.Logger
	leader atomic.Bool
	// changed is signalled when leadership is won or lost.
	changed chan struct{}
	mu      sync.Mutex
	session *concurrency.Session
	// down is why the replica has no session now ("" when it has one).
	down string
}

// NewReplicaID names a new process.
func NewReplicaID() string {
	host, _ := os.Hostname()
	var b [3]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%s-%d-%s", strings.ReplaceAll(host, "/", "_"), os.Getpid(), hex.EncodeToString(b[:]))
}

// Replica returns this process's membership; Run starts it.
func (s *Store) Replica(id string, ttl time.Duration, log *slog.Logger) *Replica {
	if ttl <= 0 {
		ttl = 5 * time.Second
	}
	r := &Replica{ID: id, s: s, ttl: ttl, log: log, changed: make(chan struct{}, 1)}
	if s.etcd == nil {
		r.leader.Store(true)
	}
	return r
}

// liveKey is where replicas and the leader are kept: beside the state's
// prefix, not under it, so that exports and copies leave them out.
func (s *Store) liveKey(name string) string {
	return strings.TrimSuffix(s.prefix, "/") + ".live/" + name
}

// Self is this replica's id (flows.Replicas).
func (r *Replica) Self() string { return r.ID }

// Replicated reports whether other processes may share the state.
func (r *Replica) Replicated() bool { return r.s.etcd != nil }

// TTL is how long a dead replica keeps its lease.
func (r *Replica) TTL() time.Duration { return r.ttl }

// Leader reports whether this replica leads now.
func (r *Replica) Leader() bool { return r.leader.Load() }

// Changed is signalled when this replica wins or loses the leadership.
func (r *Replica) Changed() <-chan struct{} { return r.changed }

// Down says why this replica has no lease now ("" when it has one).
func (r *Replica) Down() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.down
}

func (r *Replica) setLeader(v bool) {
	if r.leader.Swap(v) != v {
		select {
		case r.changed <- struct{}{}:
		default:
		}
	}
}

// Run keeps this replica's lease and membership and campaigns for the
// leadership until ctx ends; a lost lease (etcd unreachable longer than
// the TTL) drops the leadership and is taken again when etcd answers.
func (r *Replica) Run(ctx context.Context) {
	if r.s.etcd == nil {
		<-ctx.Done()
		return
	}
	go r.monitor(ctx)
	for ctx.Err() == nil {
		err := r.term(ctx)
		r.setLeader(false)
		if ctx.Err() != nil {
			return
		}
		r.mu.Lock()
		r.down = err.Error()
		r.mu.Unlock()
		r.log.Warn("replica lost its etcd lease; taking it again", "replica", r.ID, "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// monitor logs when etcd stops answering and when it answers again.
func (r *Replica) monitor(ctx context.Context) {
	var since time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		err := r.s.Ping(pctx)
		cancel()
		switch {
		case ctx.Err() != nil:
			return
		case err != nil && since.IsZero():
			since = time.Now()
			r.log.Error("etcd unreachable: approvals wait until it answers", "replica", r.ID, "err", err)
		case err == nil && !since.IsZero():
			r.log.Info("etcd reachable again", "replica", r.ID, "outage", time.Since(since).Round(time.Millisecond).String())
			since = time.Time{}
		}
	}
}

// Watch is signalled when a key of table changes (on etcd, from any
// replica); on bbolt it never is: this process pokes itself.
func (s *Store) Watch(ctx context.Context, table string) <-chan struct{} {
	if s.etcd == nil {
		return nil
	}
	out := make(chan struct{}, 1)
	go func() {
		for ctx.Err() == nil {
			wch := s.etcd.Watch(clientv3.WithRequireLeader(ctx), s.prefix+table+"/", clientv3.WithPrefix(), clientv3.WithFilterDelete())
			for range wch {
				select {
				case out <- struct{}{}:
				default:
				}
			}
			select {
			case <-ctx.Done():
			case <-time.After(500 * time.Millisecond):
			}
		}
	}()
	return out
}

// term is one lease: membership, then the campaign, until the lease ends.
func (r *Replica) term(ctx context.Context) error {
	sess, err := concurrency.NewSession(r.s.etcd, concurrency.WithTTL(int(max(r.ttl/time.Second, 1))), concurrency.WithContext(ctx))
	if err != nil {
		return fmt.Errorf("etcd lease: %w", err)
	}
	defer func() {
		// Give the lease back at a stop, so the others need not wait for
		// it to expire.
		cctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, _ = r.s.etcd.Revoke(cctx, sess.Lease())
		sess.Orphan()
	}()
	if _, err := r.s.etcd.Put(ctx, r.s.liveKey("replicas/"+r.ID), time.Now().UTC().Format(time.RFC3339), clientv3.WithLease(sess.Lease())); err != nil {
		return fmt.Errorf("register replica: %w", err)
	}
	r.mu.Lock()
	r.session, r.down = sess, ""
	r.mu.Unlock()
	r.log.Info("replica joined", "replica", r.ID, "lease_ttl", r.ttl)
	el := concurrency.NewElection(sess, r.s.liveKey("leader"))
	won := make(chan error, 1)
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() { won <- el.Campaign(cctx, r.ID) }()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-sess.Done():
			return fmt.Errorf("the lease expired (etcd unreachable for %s?)", r.ttl)
		case err := <-won:
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				return fmt.Errorf("campaign: %w", err)
			}
			r.log.Info("replica leads", "replica", r.ID)
			r.setLeader(true)
			won = nil
		}
	}
}

// Alive reports whether replica id holds its lease. On bbolt only this
// process is.
func (r *Replica) Alive(ctx context.Context, id string) (bool, error) {
	if id == r.ID {
		return true, nil
	}
	if r.s.etcd == nil || id == "" {
		return false, nil
	}
	resp, err := r.s.etcd.Get(ctx, r.s.liveKey("replicas/"+id), clientv3.WithCountOnly())
	if err != nil {
		return false, err
	}
	return resp.Count > 0, nil
}

// Members lists the replicas holding a lease, by id.
func (r *Replica) Members(ctx context.Context) ([]string, error) {
	if r.s.etcd == nil {
		return []string{r.ID}, nil
	}
	pre := r.s.liveKey("replicas/")
	resp, err := r.s.etcd.Get(ctx, pre, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil, err
	}
	var out []string
	for _, kv := range resp.Kvs {
		out = append(out, strings.TrimPrefix(string(kv.Key), pre))
	}
	return out, nil
}

// Ping checks that the state answers a linearizable read (on etcd, that
// a quorum of the cluster is up and has a leader).
func (s *Store) Ping(ctx context.Context) error {
	if s.etcd == nil {
		return nil
	}
	_, err := s.etcd.Get(ctx, s.liveKey("ping"), clientv3.WithCountOnly())
	return err
}

// Revision is etcd's current revision (0 on bbolt).
func (s *Store) Revision(ctx context.Context) (int64, error) {
	if s.etcd == nil {
		return 0, nil
	}
	resp, err := s.etcd.Get(ctx, s.liveKey("ping"), clientv3.WithCountOnly())
	if err != nil {
		return 0, err
	}
	return resp.Header.Revision, nil
}

// Compact drops etcd's history before rev (every installation's on the
// cluster: history is cluster-wide). The live data stays; what it frees
// is what fills the quota. Nothing on bbolt, which keeps no history.
func (s *Store) Compact(ctx context.Context, rev int64) error {
	if s.etcd == nil || rev <= 0 {
		return nil
	}
	_, err := s.etcd.Compact(ctx, rev)
	if err != nil && strings.Contains(err.Error(), "required revision has been compacted") {
		return nil // compacted already (etcd's own auto-compaction, another installation)
	}
	return err
}

// Alarms lists etcd's raised alarms ("NOSPACE": the quota is full and
// every write fails).
func (s *Store) Alarms(ctx context.Context) ([]string, error) {
	if s.etcd == nil {
		return nil, nil
	}
	resp, err := s.etcd.AlarmList(ctx)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, a := range resp.Alarms {
		out = append(out, a.Alarm.String())
	}
	return out, nil
}
