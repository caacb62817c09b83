// Package servers runs the infrastructure team's store-server flows:
// Puppet certificate clean (the Puppet Server CA), Puppet group change
// (node classification in LDAP, compare-and-swap) and server information
// change (the bot's inventory, and a hook). Validators check each ticket
// against the real systems at submission, so what cannot be done is
// refused then, not after approval.
package servers

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"opsbot/flows"
	"opsbot/integrations/inventory"
	"opsbot/integrations/ldap"
	"opsbot/integrations/puppetca"
	"opsbot/state"
)

// Config wires the executor; CA and LDAP are nil when not configured.
type Config struct {
	CA    *puppetca.Client
	LDAP  *ldap.Directory
	Store *state.Store
	Hook  inventory.Hook
}

// Executor is the "servers" executor. Params["op"]: cert_clean,
// set_group (with its undo: the old group back) or update.
type Executor struct{ cfg Config }

// New builds the executor.
func New(cfg Config) *Executor { return &Executor{cfg: cfg} }

// UseStore gives the executor the state, once it is open.
func (x *Executor) UseStore(st *state.Store) { x.cfg.Store = st }

// CA and LDAP are the clients, nil when not configured.
func (x *Executor) CA() *puppetca.Client  { return x.cfg.CA }
func (x *Executor) LDAP() *ldap.Directory { return x.cfg.LDAP }

// Run implements flows.Executor.
func (x *Executor) Run(ctx context.Context, in flows.ExecInput) flows.ExecResult {
	if in.Kind == state.JobUndo {
		return x.rollback(ctx, in)
	}
	switch in.Params["op"] {
	case "cert_clean":
		return x.certClean(ctx, in)
	case "set_group":
		return x.setGroup(ctx, in)
	case "update":
		return x.update(ctx, in)
	}
	return flows.ExecResult{ExitCode: 2, Err: fmt.Errorf("servers executor: unknown op %q (cert_clean, set_group, update)", in.Params["op"])}
}

func notConfigured(what, section string) flows.ExecResult {
	return flows.ExecResult{ExitCode: 2, Err: flows.Userf("not_configured", "config: "+section, "%s 未配置 · %s is not configured (%s)", what, what, section)}
}

// certClean revokes and deletes the node's certificate. A certificate
// already gone (a retry after a crash between the call and its record)
// is success.
func (x *Executor) certClean(ctx context.Context, in flows.ExecInput) flows.ExecResult {
	if x.cfg.CA == nil {
		return notConfigured("Puppet CA", "puppet_ca:")
	}
	host := in.Ticket.Fields["hostname"]
	before, found, err := x.cfg.CA.Clean(ctx, host)
	if err != nil {
		return flows.ExecResult{ExitCode: -1, Err: flows.Transient(err)}
	}
	if !found {
		return flows.ExecResult{OK: true, Output: fmt.Sprintf("证书 certificate %s: 已不存在（之前已清除）already gone (cleaned before); 节点可重新申请 the node can request a new one", host),
			Set: map[string]string{"cert_after": "absent"}}
	}
	after := "absent"
	if _, err := x.cfg.CA.Status(ctx, host); err == nil {
		after = "present"
	}
	return flows.ExecResult{OK: true, Output: fmt.Sprintf("证书 certificate %s: %s, SHA256 %s → 已吊销并删除 revoked and deleted (%s); 节点可重新申请 the node can request a new one",
		host, before.State, before.SHA256(), after), Set: map[string]string{"cert_after": after, "fingerprint_before": before.SHA256()}}
}

// setGroup moves the node from the group the ticket was approved with to
// the new one, as a compare-and-swap. A concurrent change in the
// directory sends the ticket back to approval with a fresh look.
func (x *Executor) setGroup(ctx context.Context, in flows.ExecInput) flows.ExecResult {
	if x.cfg.LDAP == nil {
		return notConfigured("LDAP", "ldap:")
	}
	f := in.Ticket.Fields
	dn, old, group := f["dn"], f["current_group"], f["group"]
	undo := []state.UndoStep{{What: fmt.Sprintf("put %s back in group %s", f["hostname"], old),
		Values: map[string]string{"dn": dn, "from": group, "to": old}}}
	err := x.cfg.LDAP.SetGroup(ctx, dn, old, group)
	switch {
	case errors.Is(err, ldap.ErrConflict):
		return flows.ExecResult{ExitCode: 1, Redo: true, Err: flows.Userf("ldap_conflict", "/ops show "+in.Ticket.ID,
			"LDAP 中的分组已被他人修改，未覆盖 · the group changed in LDAP since approval and was not overwritten: %s. The ticket goes back to approval with a fresh look", err)}
	case err != nil:
		return flows.ExecResult{ExitCode: -1, Err: flows.Transient(err)}
	}
	return flows.ExecResult{OK: true, Undo: undo, Output: fmt.Sprintf("LDAP %s: 分组 group %s → %s", dn, old, group)}
}

// rollback puts the old group back, newest step first, the same
// compare-and-swap way.
func (x *Executor) rollback(ctx context.Context, in flows.ExecInput) flows.ExecResult {
	if x.cfg.LDAP == nil {
		return notConfigured("LDAP", "ldap:")
	}
	var out []string
	for _, u := range in.Undo {
		dn, from, to := u.Values["dn"], u.Values["from"], u.Values["to"]
		if dn == "" {
			continue
		}
		if err := x.cfg.LDAP.SetGroup(ctx, dn, from, to); err != nil {
			if errors.Is(err, ldap.ErrConflict) {
				return flows.ExecResult{ExitCode: 1, Output: strings.Join(out, "\n"), Err: flows.Userf("ldap_conflict", "/ops show "+in.Ticket.ID,
					"回滚未执行：LDAP 中的分组已被他人修改 · not rolled back: the group changed in LDAP since: %s", err)}
			}
			return flows.ExecResult{ExitCode: -1, Output: strings.Join(out, "\n"), Err: flows.Transient(err)}
		}
		out = append(out, fmt.Sprintf("LDAP %s: 分组 group %s → %s (回滚 rolled back)", dn, from, to))
	}
	return flows.ExecResult{OK: true, Output: strings.Join(out, "\n")}
}

// Request is what the server-change hook receives.
type Request struct {
	Ticket string           `json:"ticket"`
	Old    state.ServerInfo `json:"old"`
	New    state.ServerInfo `json:"new"`
}

// update writes the new record (compare-and-swap on the old one) and
// calls the hook.
func (x *Executor) update(ctx context.Context, in flows.ExecInput) flows.ExecResult {
	old, new := changeOf(in.Ticket)
	new.Ticket, new.Updated = in.Ticket.ID, time.Now().UTC()
	err := x.cfg.Store.ReplaceServer(ctx, old, new)
	if errors.Is(err, state.ErrServerChanged) {
		return flows.ExecResult{ExitCode: 1, Redo: true, Err: flows.Userf("server_changed", "/ops server show "+old.Hostname,
			"服务器记录已被修改 · %s's record changed since the ticket read it; the ticket goes back to approval with a fresh look", old.Hostname)}
	}
	if err != nil {
		return flows.ExecResult{ExitCode: -1, Err: flows.Transient(err)}
	}
	out := fmt.Sprintf("inventory: %s", diff(old, new))
	if x.cfg.Hook.Configured() {
		r := x.cfg.Hook.Call(ctx, in, Request{Ticket: in.Ticket.ID, Old: old, New: new})
		r.Output = out + "\n" + r.Output
		return r
	}
	return flows.ExecResult{OK: true, Output: out}
}

// changeOf reads a server change's old and new records from the ticket.
func changeOf(t state.Ticket) (old, new state.ServerInfo) {
	f := t.Fields
	old = state.ServerInfo{Hostname: f["hostname"], IP: f["old_ip"], Role: f["old_role"], Env: f["old_env"], Store: f["old_store"]}
	new = old
	for k, p := range map[string]*string{"new_hostname": &new.Hostname, "ip": &new.IP, "role": &new.Role, "env": &new.Env, "store": &new.Store} {
		if v := f[k]; v != "" {
			*p = v
		}
	}
	return old, new
}

// diff says what changes, field by field.
func diff(old, new state.ServerInfo) string {
	var parts []string
	for _, c := range [][3]string{{"hostname", old.Hostname, new.Hostname}, {"ip", old.IP, new.IP}, {"role", old.Role, new.Role},
		{"env", old.Env, new.Env}, {"store", old.Store, new.Store}} {
		if c[1] != c[2] {
			parts = append(parts, fmt.Sprintf("%s %s → %s", c[0], c[1], c[2]))
		}
	}
	if len(parts) == 0 {
		return "无变化 no change"
	}
	return strings.Join(parts, "; ")
}
