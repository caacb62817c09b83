package endpoint

import (
	"context"
	"sync"
	"time"
)

// CardRef says where a platform shows a ticket's card: a channel (or
// direct message), the message's id there (or, on WeCom, its update
// code), and the stage instance and version the card was drawn from.
type CardRef struct {
	Channel string
	TS      string
	Stage   string
	Version int64
	// Thread marks the channel card that progress replies go under.
	Thread bool
	// Task names the card on platforms that address cards by a task id.
	Task string
}

// Cards is what a transport needs to update the cards it posted: one
// platform's card references, per ticket.
type Cards interface {
	AddCard(ctx context.Context, ticket string, ref CardRef) error
	Cards(ctx context.Context, ticket string) ([]CardRef, error)
	SetCards(ctx context.Context, ticket string, refs []CardRef) error
	// SpendCode forgets the update code of the card with task id task.
	SpendCode(ctx context.Context, ticket, task string) error
}

// Recorded is input recorded before its ack and not handled yet. Err
// says why a record cannot be opened (it was sealed with another key).
type Recorded struct {
	ID      uint64
	Kind    string
	Payload []byte
	At      time.Time
	Err     error
}

// Inbox is what an endpoint needs to make one platform's input durable.
type Inbox interface {
	// Record keeps input before its ack; with a replay key, input whose
	// key was recorded before (until ttl) is not kept and dup is true.
	Record(ctx context.Context, kind string, payload []byte, replayKey string, now time.Time, ttl time.Duration) (id uint64, dup bool, err error)
	// Done forgets handled input.
	Done(ctx context.Context, id uint64) error
	// Handling marks ctx as the handling of recorded input id, so that a
	// write the handling makes may forget it in the same transaction;
	// Forgotten reports whether one did (then Done is not needed).
	Handling(ctx context.Context, id uint64) context.Context
	Forgotten(ctx context.Context) bool
	// Pending lists recorded input not handled yet, oldest first.
	Pending(ctx context.Context) ([]Recorded, error)
	// Remember records a key until ttl and says whether it was seen.
	Remember(ctx context.Context, key string, now time.Time, ttl time.Duration) (bool, error)
}

// MemStore keeps cards and input in memory: for tools and tests that run a
// transport without a state file. It loses everything when the process
// ends, so a bot never uses it.
type MemStore struct {
	mu      sync.Mutex
	cards   map[string][]CardRef
	inbound map[uint64]Recorded
	keys    map[string]time.Time
	next    uint64
}

// NewMemStore returns an empty MemStore.
func NewMemStore() *MemStore {
	return &MemStore{cards: map[string][]CardRef{}, inbound: map[uint64]Recorded{}, keys: map[string]time.Time{}}
}

// AddCard implements Cards.
func (m *MemStore) AddCard(ctx context.Context, ticket string, ref CardRef) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.cards[ticket] = append(m.cards[ticket], ref)
	return nil
}

// Cards implements Cards.
func (m *MemStore) Cards(ctx context.Context, ticket string) ([]CardRef, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]CardRef(nil), m.cards[ticket]...), nil
}

// SetCards implements Cards.
func (m *MemStore) SetCards(ctx context.Context, ticket string, refs []CardRef) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.cards[ticket] = append([]CardRef(nil), refs...)
	return nil
}

// SpendCode implements Cards.
func (m *MemStore) SpendCode(ctx context.Context, ticket, task string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for i := range m.cards[ticket] {
		if m.cards[ticket][i].Task == task {
			m.cards[ticket][i].TS = ""
		}
	}
	return nil
}

// Record implements Inbox.
func (m *MemStore) Record(ctx context.Context, kind string, payload []byte, replayKey string, now time.Time, ttl time.Duration) (uint64, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if replayKey != "" {
		if m.seen(replayKey, now, ttl) {
			return 0, true, nil
		}
	}
	m.next++
	m.inbound[m.next] = Recorded{ID: m.next, Kind: kind, Payload: append([]byte(nil), payload...), At: now}
	return m.next, false, nil
}

// seen checks and records key. Callers hold mu.
func (m *MemStore) seen(key string, now time.Time, ttl time.Duration) bool {
	if exp, ok := m.keys[key]; ok && exp.After(now) {
		return true
	}
	m.keys[key] = now.Add(ttl)
	return false
}

// Done implements Inbox.
func (m *MemStore) Done(ctx context.Context, id uint64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.inbound, id)
	return nil
}

// Pending implements Inbox.
func (m *MemStore) Pending(ctx context.Context) ([]Recorded, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Recorded
	for id := uint64(1); id <= m.next; id++ {
		if r, ok := m.inbound[id]; ok {
			out = append(out, r)
		}
	}
	return out, nil
}

// Remember implements Inbox.
func (m *MemStore) Remember(ctx context.Context, key string, now time.Time, ttl time.Duration) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.seen(key, now, ttl), nil
}

// Handling implements Inbox: a MemStore has no ticket writes to fold into.
func (m *MemStore) Handling(ctx context.Context, id uint64) context.Context { return ctx }

// Forgotten implements Inbox.
func (m *MemStore) Forgotten(ctx context.Context) bool { return false }
