package state

// Durable jobs: written with the transition that queues them, updated as
// they run, indexed while active.

import (
	"context"
	"fmt"
	"sort"

	bolt "go.etcd.io/bbolt"
)

func putJob(tx *bolt.Tx, j Job) error {
	if err := putJSON(tx.Bucket(bJobs), []byte(j.ID), j); err != nil {
		return err
	}
	if j.Active() {
		return tx.Bucket(bJobsActive).Put([]byte(j.ID), nil)
	}
	return tx.Bucket(bJobsActive).Delete([]byte(j.ID))
}

// Job returns a job by id.
func (s *Store) Job(ctx context.Context, id string) (Job, error) {
	var j Job
	err := s.db.View(func(tx *bolt.Tx) error {
		ok, err := getJSON(tx.Bucket(bJobs), []byte(id), &j)
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
	err := s.db.View(func(tx *bolt.Tx) error {
		jobs := tx.Bucket(bJobs)
		return tx.Bucket(bJobsActive).ForEach(func(k, _ []byte) error {
			var j Job
			if _, err := getJSON(jobs, k, &j); err != nil {
				return err
			}
			out = append(out, j)
			return nil
		})
	})
	sort.Slice(out, func(a, b int) bool { return out[a].NextAt.Before(out[b].NextAt) })
	return out, err
}

// UpdateJob changes a job in its own transaction; fn sees the stored job.
func (s *Store) UpdateJob(ctx context.Context, id string, fn func(j *Job) error) (Job, error) {
	var out Job
	err := s.db.Batch(func(tx *bolt.Tx) error {
		var j Job
		ok, err := getJSON(tx.Bucket(bJobs), []byte(id), &j)
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
