package servers

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"opsbot/flows"
	"opsbot/integrations/inventory"
	"opsbot/integrations/ldap"
	"opsbot/integrations/puppetca"
	"opsbot/state"
)

// server reads the ticket's server from the inventory and checks the
// store and env the requester gave agree with it.
func (x *Executor) server(ctx context.Context, f map[string]string) (state.ServerInfo, error) {
	host := strings.ToLower(strings.TrimSpace(f["hostname"]))
	s, ok, err := x.cfg.Store.Server(ctx, host)
	if err != nil {
		return s, err
	}
	if !ok {
		return s, flows.Userf("unknown_server", "opsbot inventory import servers.csv (hostname,ip,role,env,store); /ops server show HOST",
			"服务器 %s 不在清单中 · server %s is not in the inventory", host, host)
	}
	if st := f["store"]; st != "" && !strings.EqualFold(st, s.Store) {
		return s, flows.Userf("wrong_store", "store="+s.Store, "%s 属于门店 %s，不是 %s · %s belongs to store %s, not %s", host, s.Store, st, host, s.Store, st)
	}
	if env := f["env"]; env != "" && env != s.Env {
		return s, flows.Userf("wrong_env", "env="+s.Env, "%s 在环境 %s，不是 %s · %s is in env %s, not %s", host, s.Env, env, host, s.Env, env)
	}
	return s, nil
}

// ValidateCertClean checks the certname with the CA at submission: an
// unknown one is refused now, and the card shows the certificate's state
// and fingerprint.
func (x *Executor) ValidateCertClean() flows.Validator {
	return flows.ValidatorFunc(func(ctx context.Context, in flows.Validation) (map[string]string, error) {
		if x.cfg.CA == nil {
			return nil, flows.Userf("not_configured", "config: puppet_ca:", "Puppet CA 未配置 · the Puppet CA is not configured (puppet_ca:)")
		}
		out := clone(in.Fields)
		s, err := x.server(ctx, out)
		if err != nil {
			return nil, err
		}
		out["hostname"], out["store"], out["env"] = s.Hostname, s.Store, s.Env
		st, err := x.cfg.CA.Status(ctx, s.Hostname)
		if errors.Is(err, puppetca.ErrNotFound) {
			return nil, flows.Userf("unknown_certname", "/ops server show "+s.Hostname,
				"Puppet CA 中没有证书 %s · the Puppet CA has no certificate named %s: nothing to clean", s.Hostname, s.Hostname)
		}
		if err != nil {
			return nil, err
		}
		out["cert_state"], out["fingerprint"] = st.State, st.SHA256()
		return out, nil
	})
}

// ValidateGroupChange reads the node's LDAP entry (its DN and current
// group, shown on the card) and refuses a group the directory does not
// have, with the closest one.
func (x *Executor) ValidateGroupChange() flows.Validator {
	return flows.ValidatorFunc(func(ctx context.Context, in flows.Validation) (map[string]string, error) {
		if x.cfg.LDAP == nil {
			return nil, flows.Userf("not_configured", "config: ldap:", "LDAP 未配置 · LDAP is not configured (ldap:)")
		}
		out := clone(in.Fields)
		s, err := x.server(ctx, out)
		if err != nil {
			return nil, err
		}
		out["hostname"], out["store"], out["env"] = s.Hostname, s.Store, s.Env
		n, err := x.cfg.LDAP.Node(ctx, s.Hostname)
		if errors.Is(err, ldap.ErrNoNode) {
			return nil, flows.Userf("unknown_ldap_host", "/ops server show "+s.Hostname,
				"LDAP 中没有主机 %s · LDAP has no entry for host %s", s.Hostname, s.Hostname)
		}
		if err != nil {
			return nil, err
		}
		groups, err := x.cfg.LDAP.Groups(ctx)
		if err != nil {
			return nil, err
		}
		g := out["group"]
		if !contains(groups, g) {
			hint := "groups: " + strings.Join(groups, ", ")
			if c := flows.Closest(g, groups); c != "" {
				hint = "group=" + c + " (" + hint + ")"
				return nil, &flows.UserError{Code: "unknown_group", Hint: hint, Fields: map[string]string{"group": "did you mean " + c + "?"},
					Message: fmt.Sprintf("LDAP 中没有分组 %s，是否为 %s？ · LDAP has no group %q: did you mean %s?", g, c, g, c)}
			}
			return nil, &flows.UserError{Code: "unknown_group", Hint: hint, Fields: map[string]string{"group": "not a group in LDAP"},
				Message: fmt.Sprintf("LDAP 中没有分组 %s · LDAP has no group %q", g, g)}
		}
		if strings.EqualFold(g, n.Group) {
			return nil, flows.Userf("no_change", "", "%s 已在分组 %s · %s is in group %s already", s.Hostname, g, s.Hostname, g)
		}
		out["dn"], out["current_group"], out["role"], out["puppet_status"] = n.DN, n.Group, n.Role, n.Status
		return out, nil
	})
}

// ValidateServerChange reads the server's record and shows the change
// field by field; a change of nothing is refused.
func (x *Executor) ValidateServerChange() flows.Validator {
	return flows.ValidatorFunc(func(ctx context.Context, in flows.Validation) (map[string]string, error) {
		out := clone(in.Fields)
		host := strings.ToLower(strings.TrimSpace(out["hostname"]))
		s, ok, err := x.cfg.Store.Server(ctx, host)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, flows.Userf("unknown_server", "opsbot inventory import servers.csv (hostname,ip,role,env,store); /ops server show HOST",
				"服务器 %s 不在清单中 · server %s is not in the inventory", host, host)
		}
		out["hostname"] = s.Hostname
		out["old_ip"], out["old_role"], out["old_env"], out["old_store"] = s.IP, s.Role, s.Env, s.Store
		t := state.Ticket{Fields: out}
		old, new := changeOf(t)
		if why := inventory.CheckServer(&new); why != "" {
			return nil, flows.Userf("bad_fields", "e.g. ip=10.20.3.4 role=pos env=prod store=S-1001", "新的服务器信息无效 · the new server record is not valid: %s", why)
		}
		if new.Hostname != old.Hostname {
			if _, taken, err := x.cfg.Store.Server(ctx, new.Hostname); err != nil {
				return nil, err
			} else if taken {
				return nil, flows.Userf("bad_fields", "/ops server show "+new.Hostname, "主机名 %s 已被使用 · hostname %s is another server's", new.Hostname, new.Hostname)
			}
		}
		d := diff(old, new)
		if d == "无变化 no change" {
			return nil, flows.Userf("no_change", "e.g. ip=10.20.3.9", "没有要修改的内容 · nothing to change: give new values (new_hostname, ip, role, env, store)")
		}
		out["diff"] = d
		return out, nil
	})
}

func clone(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func contains(xs []string, x string) bool {
	for _, v := range xs {
		if strings.EqualFold(v, x) {
			return true
		}
	}
	return false
}
