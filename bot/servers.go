package bot

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"opsbot/commands"
	"opsbot/integrations/ldap"
	"opsbot/integrations/puppetca"
	"opsbot/templates"
)

// serverShow answers /ops server show HOST: the inventory record, the
// Puppet group in LDAP, the certificate on the CA, and the ticket in
// flight on it.
func (b *Bot) serverShow(ctx context.Context, r commands.Server) ([]templates.Message, error) {
	s, ok, err := b.store.Server(ctx, r.Host)
	if err != nil {
		return nil, err
	}
	if !ok {
		return []templates.Message{info("warning", "服务器 Server "+r.Host,
			fmt.Sprintf("不在清单中 · %s is not in the inventory (opsbot inventory import servers.csv with hostname,ip,role,env,store)", r.Host))}, nil
	}
	// The directory and the CA are asked with a bound: a server that does
	// not answer makes the line say so, not the command hang.
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	lines := []string{fmt.Sprintf("IP %s · 角色 role %s · 环境 env %s · 门店 store %s", s.IP, s.Role, s.Env, s.Store)}
	if s.Ticket != "" {
		lines = append(lines, fmt.Sprintf("上次修改 last changed by %s, %s", s.Ticket, templates.Stamp(s.Updated)))
	}
	if d := b.servers.LDAP(); d != nil {
		n, err := d.Node(ctx, s.Hostname)
		switch {
		case errors.Is(err, ldap.ErrNoNode):
			lines = append(lines, "Puppet 分组 group: LDAP 中没有此主机 no LDAP entry")
		case err != nil:
			lines = append(lines, "Puppet 分组 group: LDAP 不可用 unreachable: "+b.redact.Redact(err.Error()))
		default:
			lines = append(lines, fmt.Sprintf("Puppet 分组 group: %s (角色 role %s, 状态 status %s) · %s", n.Group, n.Role, n.Status, n.DN))
		}
	}
	if ca := b.servers.CA(); ca != nil {
		st, err := ca.Status(ctx, s.Hostname)
		switch {
		case errors.Is(err, puppetca.ErrNotFound):
			lines = append(lines, "证书 certificate: 无 none on the CA")
		case err != nil:
			lines = append(lines, "证书 certificate: CA 不可用 unreachable: "+b.redact.Redact(err.Error()))
		default:
			lines = append(lines, fmt.Sprintf("证书 certificate: %s · SHA256 %s", st.State, st.SHA256()))
		}
	}
	holder, err := b.store.LockHolder(ctx, "server:"+s.Hostname)
	if err != nil {
		return nil, err
	}
	if holder != "" {
		t, err := b.store.Get(ctx, holder)
		if err == nil {
			title, stage := t.Flow, t.Stage
			if f, ok := b.engine.Flow(t.Flow); ok {
				title, stage = f.Title, f.StageTitle(t.Stage)
			}
			lines = append(lines, fmt.Sprintf("进行中 in flight: %s %s (%s) — /ops show %s", t.ID, title, stage, t.ID))
		}
	} else {
		lines = append(lines, "进行中 in flight: 无 none")
	}
	return []templates.Message{info("info", "服务器 Server "+s.Hostname, strings.Join(lines, "\n"))}, nil
}
