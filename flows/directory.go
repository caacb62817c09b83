package flows

import (
	"context"
	"errors"
	"slices"
	"sort"
	"strings"
	"sync"

	"opsbot/state"
)

// AdminRole may grant and revoke roles, cancel any ticket, and retry or
// roll back any flow.
const AdminRole = "admin"

// Directory is an in-memory view of users and role holders, read from the
// store at start-up and after every change, so guards never wait on disk.
type Directory struct {
	store   *state.Store
	mu      sync.RWMutex
	users   map[string]state.User
	members map[string][]string
	// byID maps "platform:id" to a user name, so every command resolves
	// its sender without a scan.
	byID map[string]string
}

// NewDirectory loads users and roles from the store.
func NewDirectory(ctx context.Context, store *state.Store) (*Directory, error) {
	d := &Directory{store: store}
	return d, d.Reload(ctx)
}

// Reload reads users and roles again.
func (d *Directory) Reload(ctx context.Context) error {
	users, err := d.store.Users(ctx)
	if err != nil {
		return err
	}
	byName := make(map[string]state.User, len(users))
	members := map[string][]string{}
	byID := map[string]string{}
	for _, u := range users {
		byName[u.Name] = u
		for p, id := range u.IDs {
			byID[p+":"+id] = u.Name
		}
		for _, r := range u.Roles {
			members[r] = append(members[r], u.Name)
		}
	}
	d.mu.Lock()
	d.users, d.members, d.byID = byName, members, byID
	d.mu.Unlock()
	return nil
}

// User returns a user by name, case-insensitively.
func (d *Directory) User(name string) (state.User, bool) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	u, ok := d.users[state.NormName(name)]
	return u, ok
}

// Users returns every user sorted by name.
func (d *Directory) Users() []state.User {
	d.mu.RLock()
	defer d.mu.RUnlock()
	out := make([]state.User, 0, len(d.users))
	for _, u := range d.users {
		out = append(out, u)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// HasRole reports whether user holds any of roles.
func (d *Directory) HasRole(user string, roles ...string) bool {
	u, ok := d.User(user)
	if !ok {
		return false
	}
	for _, r := range roles {
		if slices.Contains(u.Roles, state.NormName(r)) {
			return true
		}
	}
	return false
}

// Members returns the holders of any of roles, sorted, without duplicates.
func (d *Directory) Members(roles ...string) []string {
	d.mu.RLock()
	defer d.mu.RUnlock()
	var out []string
	for _, r := range roles {
		out = append(out, d.members[state.NormName(r)]...)
	}
	sort.Strings(out)
	return slices.Compact(out)
}

// Roles lists every role that has holders.
func (d *Directory) Roles() []string {
	d.mu.RLock()
	defer d.mu.RUnlock()
	out := make([]string, 0, len(d.members))
	for r := range d.members {
		out = append(out, r)
	}
	sort.Strings(out)
	return out
}

// Resolve finds the user known on platform as id.
func (d *Directory) Resolve(platform, id string) (state.User, bool) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	u, ok := d.users[d.byID[platform+":"+id]]
	return u, ok
}

// ByEmail finds the user with an e-mail address, case-insensitively.
func (d *Directory) ByEmail(email string) (state.User, bool) {
	email = strings.ToLower(strings.TrimSpace(email))
	if email == "" {
		return state.User{}, false
	}
	d.mu.RLock()
	defer d.mu.RUnlock()
	for _, u := range d.users {
		if u.Email == email {
			return u, true
		}
	}
	return state.User{}, false
}

// Ensure returns the user known on platform as id, creating a user named
// name (without roles) when there is none.
func (d *Directory) Ensure(ctx context.Context, platform, id, name string) (state.User, error) {
	if u, ok := d.Resolve(platform, id); ok {
		return u, nil
	}
	u, err := d.store.PutUser(ctx, state.User{Name: name, IDs: map[string]string{platform: id}})
	if err != nil {
		return u, err
	}
	return u, d.Reload(ctx)
}

// Put creates or updates a user and reloads.
func (d *Directory) Put(ctx context.Context, u state.User) error {
	if _, err := d.store.PutUser(ctx, u); err != nil {
		return err
	}
	return d.Reload(ctx)
}

// SetRole grants or revokes a role and reloads; it reports whether
// anything changed. The audit entry is written in the same transaction.
func (d *Directory) SetRole(ctx context.Context, role, user string, grant bool, audit state.AuditEntry) (bool, error) {
	var changed bool
	var err error
	if grant {
		changed, err = d.store.Grant(ctx, role, user, audit)
	} else {
		changed, err = d.store.Revoke(ctx, role, user, audit)
	}
	if errors.Is(err, state.ErrNotFound) {
		return false, Userf("unknown_user", "/ops role list", "没有用户 %s · no user called %s", state.NormName(user), state.NormName(user))
	}
	if err != nil {
		return false, err
	}
	return changed, d.Reload(ctx)
}
