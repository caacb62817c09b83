package state

// Durable jobs: written with the transition that queues them, updated as
// they run, indexed while active.

import (
	"context"
	"fmt"
	"sort"

	"opsbot/state/kv"
)

func putJob(tx kv.Txn, j Job) error {
	if err := putJSON(tx, key(bJobs, []byte(j.ID)), j); err != nil {
		return err
	}
	if j.Active() {
		return tx.Put(key(bJobsActive, []byte(j.ID)), nil)
	}
	return tx.Delete(key(bJobsActive, []byte(j.ID)))
}

// Job returns a job by id.
func (s *Store) Job(ctx context.Context, id string) (Job, error) {
	var j Job
	err := s.db.View(ctx, func(tx kv.Txn) error {
		ok, err := getJSON(tx, key(bJobs, []byte(id)), &j)
		if err == nil && !ok {
			err = fmt.Errorf("job %s: %w", id, ErrNotFound)
		}
		return err
	})
	return j, err
}

// ActiveJobs returns the jobs that are queued or running, oldest due first.
func (s *Store) ActiveJobs(ctx context.Context) ([]Job, error) {
	var out []Job
	err := s.db.View(ctx, func(tx kv.Txn) error {
		out = out[:0]
		prefix := key(bJobsActive, nil)
		return each(tx, prefix, func(k string, _ []byte) (bool, error) {
			var j Job
			ok, err := getJSON(tx, key(bJobs, []byte(k[len(prefix):])), &j)
			if ok {
				out = append(out, j)
			}
			return true, err
		})
	})
	sort.Slice(out, func(a, b int) bool { return out[a].NextAt.Before(out[b].NextAt) })
	return out, err
}

// UpdateJob changes a job in its own transaction; fn sees the stored job
// (and is called again when another replica changed it meanwhile).
func (s *Store) UpdateJob(ctx context.Context, id string, fn func(j *Job) error) (Job, error) {
	var out Job
	err := s.db.Update(ctx, func(tx kv.Txn) error {
		var j Job
		ok, err := getJSON(tx, key(bJobs, []byte(id)), &j)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("job %s: %w", id, ErrNotFound)
		}
		if err := fn(&j); err != nil {
			return err
		}
		out = j
		return putJob(tx, j)
	})
	return out, err
}
