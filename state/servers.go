package state

// Store servers: the hosts of the stores, in the inventory beside
// clusters and stores (hostname -> record).

import (
	"context"
	"encoding/json"
	"errors"
	"sort"
	"time"

	"opsbot/state/kv"
)

var bServers = []byte("servers")

// ServerInfo is one store server.
type ServerInfo struct {
	Hostname string `json:"hostname"`
	IP       string `json:"ip"`
	Role     string `json:"role"`
	Env      string `json:"env"`
	Store    string `json:"store"`
	// Ticket last changed it, at Updated.
	Ticket  string    `json:"ticket,omitempty"`
	Updated time.Time `json:"updated"`
}

func serverKey(host string) string { return key(bServers, []byte(host)) }

// Servers lists the servers by hostname.
func (s *Store) Servers(ctx context.Context) ([]ServerInfo, error) {
	var out []ServerInfo
	err := s.db.View(ctx, func(tx kv.Txn) error {
		out = nil
		after := ""
		prefix := key(bServers, nil)
		for {
			xs, err := tx.Range(prefix, after, 512)
			if err != nil {
				return err
			}
			for _, x := range xs {
				var v ServerInfo
				if err := json.Unmarshal(x.Value, &v); err != nil {
					return err
				}
				out = append(out, v)
				after = x.Key
			}
			if len(xs) < 512 {
				return nil
			}
		}
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Hostname < out[j].Hostname })
	return out, err
}

// Server reads one server.
func (s *Store) Server(ctx context.Context, host string) (ServerInfo, bool, error) {
	var v ServerInfo
	var ok bool
	err := s.db.View(ctx, func(tx kv.Txn) error {
		var err error
		ok, err = getJSON(tx, serverKey(host), &v)
		return err
	})
	return v, ok, err
}

// PutServers writes servers (an import), a bounded number a transaction.
func (s *Store) PutServers(ctx context.Context, servers []ServerInfo) error {
	for len(servers) > 0 {
		chunk := servers[:min(len(servers), kv.MaxOps)]
		servers = servers[len(chunk):]
		if err := s.db.Update(ctx, func(tx kv.Txn) error {
			for _, v := range chunk {
				if err := putJSON(tx, serverKey(v.Hostname), v); err != nil {
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

// ErrServerChanged means a server's record is not what a change expected.
var ErrServerChanged = errors.New("the server's record changed since the ticket read it")

// ReplaceServer changes a server's record from old to new in one
// transaction, renaming it when the hostname changes. It is idempotent:
// when the record already is new, it succeeds; when it is neither old nor
// new, it fails with ErrServerChanged.
func (s *Store) ReplaceServer(ctx context.Context, old, new ServerInfo) error {
	same := func(a, b ServerInfo) bool {
		return a.Hostname == b.Hostname && a.IP == b.IP && a.Role == b.Role && a.Env == b.Env && a.Store == b.Store
	}
	return s.db.Update(ctx, func(tx kv.Txn) error {
		var cur ServerInfo
		ok, err := getJSON(tx, serverKey(new.Hostname), &cur)
		if err != nil {
			return err
		}
		if ok && same(cur, new) {
			return nil // applied already
		}
		ok, err = getJSON(tx, serverKey(old.Hostname), &cur)
		if err != nil {
			return err
		}
		if !ok || !same(cur, old) {
			return ErrServerChanged
		}
		if old.Hostname != new.Hostname {
			if err := tx.Delete(serverKey(old.Hostname)); err != nil {
				return err
			}
		}
		return putJSON(tx, serverKey(new.Hostname), new)
	})
}
