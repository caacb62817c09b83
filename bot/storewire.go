package bot

import (
	"context"
	"time"

	"opsbot/bot/endpoint"
	"opsbot/state"
)

// platformStore gives a transport the slice of the state it needs: its
// own platform's card references and recorded input. Transports never see
// *state.Store.
type platformStore struct {
	st       *state.Store
	platform string
	// replica owns the input this process acknowledges.
	replica *state.Replica
}

func (p platformStore) AddCard(ctx context.Context, ticket string, r endpoint.CardRef) error {
	return p.st.AddCardRef(ctx, ticket, state.CardRef{Platform: p.platform, Channel: r.Channel, TS: r.TS, Stage: r.Stage,
		Version: r.Version, Thread: r.Thread, Task: r.Task})
}

func (p platformStore) Cards(ctx context.Context, ticket string) ([]endpoint.CardRef, error) {
	refs, err := p.st.CardRefs(ctx, ticket, p.platform)
	out := make([]endpoint.CardRef, len(refs))
	for i, r := range refs {
		out[i] = endpoint.CardRef{Channel: r.Channel, TS: r.TS, Stage: r.Stage, Version: r.Version, Thread: r.Thread, Task: r.Task}
	}
	return out, err
}

func (p platformStore) SetCards(ctx context.Context, ticket string, refs []endpoint.CardRef) error {
	out := make([]state.CardRef, len(refs))
	for i, r := range refs {
		out[i] = state.CardRef{Platform: p.platform, Channel: r.Channel, TS: r.TS, Stage: r.Stage, Version: r.Version, Thread: r.Thread, Task: r.Task}
	}
	return p.st.SetCardRefs(ctx, ticket, p.platform, out)
}

func (p platformStore) SpendCode(ctx context.Context, ticket, task string) error {
	return p.st.SpendCardCode(ctx, ticket, p.platform, task)
}

func (p platformStore) Record(ctx context.Context, kind string, payload []byte, replayKey string, now time.Time, ttl time.Duration) (uint64, bool, error) {
	return p.st.AddInbound(ctx, state.Inbound{Platform: p.platform, Kind: kind, Payload: payload, At: now, Owner: p.replica.ID}, replayKey, now, ttl)
}

func (p platformStore) Done(ctx context.Context, id uint64) error { return p.st.DoneInbound(ctx, id) }

func (p platformStore) Handling(ctx context.Context, id uint64) context.Context {
	return state.WithInbound(ctx, id)
}

func (p platformStore) Forgotten(ctx context.Context) bool { return state.InboundForgotten(ctx) }

// Pending is the input acknowledged by a process that stopped before
// handling it (this one before a restart, or a replica that lost its
// lease), each claimed for this replica first: input a live replica is
// handling is left to it, and of two replicas replaying the same input
// one handles it.
func (p platformStore) Pending(ctx context.Context) ([]endpoint.Recorded, error) {
	in, err := p.st.PendingInbound(ctx, p.platform)
	if err != nil {
		return nil, err
	}
	var out []endpoint.Recorded
	for _, r := range in {
		if r.Owner != "" {
			alive, err := p.replica.Alive(ctx, r.Owner)
			if err != nil {
				return out, err
			}
			if alive {
				continue
			}
		}
		claimed, err := p.st.ClaimInbound(ctx, r.ID, r.Owner, p.replica.ID)
		if err != nil {
			return out, err
		}
		if claimed {
			out = append(out, endpoint.Recorded{ID: r.ID, Kind: r.Kind, Payload: r.Payload, At: r.At, Err: r.Err})
		}
	}
	return out, nil
}

func (p platformStore) Remember(ctx context.Context, key string, now time.Time, ttl time.Duration) (bool, error) {
	return p.st.Remember(ctx, key, now, ttl)
}
