package kv

import (
	"context"
	"fmt"
	"strconv"
	"sync"
)

// Sequence hands out unique numbers (ticket numbers, outbox and audit
// sequences) from a counter key. It reserves a block of numbers in one
// transaction and hands them out from memory, so the counter is written
// once a block, not once a number: under contention from several replicas
// it is not one hot key that every write conflicts on. Numbers from one
// Sequence increase; across replicas they are unique, not ordered; the
// rest of a block is never handed out when its Sequence stops (gaps, never
// reuse).
type Sequence struct {
	db    DB
	key   string
	block uint64
	mu    sync.Mutex
	next  uint64 // the next number to hand out
	end   uint64 // the last number of the reserved block
}

// NewSequence counts under key, reserving block numbers at a time (1:
// every number is its own transaction, as with a single writer).
func NewSequence(db DB, key string, block uint64) *Sequence {
	return &Sequence{db: db, key: key, block: max(block, 1)}
}

// Next returns the next number, reserving a new block when the current
// one is used up.
func (s *Sequence) Next(ctx context.Context) (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.next == 0 || s.next > s.end {
		var from uint64
		err := s.db.Update(ctx, func(tx Txn) error {
			v, ok, err := tx.Get(s.key)
			if err != nil {
				return err
			}
			last := uint64(0)
			if ok {
				if last, err = strconv.ParseUint(string(v), 10, 64); err != nil {
					return fmt.Errorf("kv: sequence %s holds %q, not a number", s.key, v)
				}
			}
			from = last + 1
			return tx.Put(s.key, []byte(strconv.FormatUint(last+s.block, 10)))
		})
		if err != nil {
			return 0, err
		}
		s.next, s.end = from, from+s.block-1
	}
	n := s.next
	s.next++
	return n, nil
}
