package bot

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"opsbot/commands"
	"opsbot/flows"
	"opsbot/integrations/inventory"
	"opsbot/templates"
)

// reservations are the moves of the cluster-change tickets in flight.
func (b *Bot) reservations(ctx context.Context) ([]inventory.Reservation, error) {
	open, err := b.engine.OpenTickets(ctx, "cluster-change")
	if err != nil {
		return nil, err
	}
	return inventory.Reservations(open), nil
}

// cluster answers /ops cluster show NAME and /ops cluster list.
func (b *Bot) cluster(ctx context.Context, r commands.Cluster) ([]templates.Message, error) {
	res, err := b.reservations(ctx)
	if err != nil {
		return nil, err
	}
	if r.Op == "list" {
		var lines []string
		for _, c := range b.inv.Clusters() {
			if r.Env != "" && c.Env != r.Env {
				continue
			}
			u, _ := b.inv.Usage(c.Name, res)
			lines = append(lines, fmt.Sprintf("%s %s %s %s %s: %d/%d (%d%%)%s", c.Name, c.Env, c.Location, c.Size, c.Status,
				u.Count, u.Capacity, inventory.Percent(u.Count, u.Capacity), reservedNote(u)))
		}
		if len(lines) == 0 {
			return []templates.Message{info("info", "没有集群 no clusters"+envNote(r.Env), "opsbot inventory import clusters.csv")}, nil
		}
		return []templates.Message{info("info", fmt.Sprintf("集群 Clusters%s: %d", envNote(r.Env), len(lines)), strings.Join(lines, "\n"))}, nil
	}
	c, n, ok := b.inv.Cluster(r.Name)
	if !ok {
		var names []string
		for _, c := range b.inv.Clusters() {
			names = append(names, c.Name)
		}
		hint := "/ops cluster list"
		if x := flows.Closest(r.Name, names); x != "" {
			hint = fmt.Sprintf("是不是 did you mean /ops cluster show %s", x)
		}
		return nil, flows.Userf("no_cluster", hint, "没有集群 %s · there is no cluster %s", r.Name, r.Name)
	}
	u, err := b.inv.Usage(c.Name, res)
	if err != nil {
		return nil, err
	}
	level := "info"
	if float64(u.Projected()) >= b.inv.Rules().WarnAt*float64(u.Capacity) {
		level = "warning"
	}
	title := fmt.Sprintf("集群 Cluster %s: %d/%d = %d%%", c.Name, n, u.Capacity, inventory.Percent(n, u.Capacity))
	lines := []string{
		fmt.Sprintf("env %s · location %s · size %s · status %s", c.Env, c.Location, c.Size, c.Status),
		fmt.Sprintf("使用率 utilization: %d/%d = %d%%%s", n, u.Capacity, inventory.Percent(n, u.Capacity), reservedNote(u)),
	}
	if c.Domain != "" || c.IngressIP != "" {
		lines = append(lines, fmt.Sprintf("domain %s · ingress %s", c.Domain, c.IngressIP))
	}
	if c.K8sID != "" || c.LBID != "" || c.RancherID != "" {
		lines = append(lines, fmt.Sprintf("k8s_id %s · lb_id %s · rancher %s", c.K8sID, c.LBID, c.RancherID))
	}
	if len(c.K8sIPs) > 0 {
		lines = append(lines, "K8s IP: "+strings.Join(c.K8sIPs, ","))
	}
	if len(c.OBIPs) > 0 || c.OBVIP != "" {
		lines = append(lines, fmt.Sprintf("OB IP: %s · VIP %s · user %s", strings.Join(c.OBIPs, ","), c.OBVIP, c.OBUser))
	}
	if len(c.Tags) > 0 {
		lines = append(lines, "tags: "+strings.Join(c.Tags, ","))
	}
	if markets, dos, own := b.inv.Mix(c.Name); n > 0 {
		lines = append(lines, fmt.Sprintf("%d markets · %d DOs · direct %d / DL %d / CL %d", markets, dos, own[0], own[1], own[2]))
	}
	if c.Ticket != "" {
		lines = append(lines, "最近变更 last changed by "+c.Ticket)
	}
	return []templates.Message{info(level, title, strings.Join(lines, "\n"))}, nil
}

func reservedNote(u inventory.Usage) string {
	if u.Reserved == 0 && u.Leaving == 0 {
		return ""
	}
	by := append([]string(nil), u.By...)
	sort.Strings(by)
	return fmt.Sprintf("; 在途 in flight +%d/-%d (%s) → %d/%d = %d%%", u.Reserved, u.Leaving, strings.Join(by, ","),
		u.Projected(), u.Capacity, inventory.Percent(u.Projected(), u.Capacity))
}

func envNote(env string) string {
	if env == "" {
		return ""
	}
	return " (" + env + ")"
}

// storeInfo answers /ops store show ID.
func (b *Bot) storeInfo(r commands.Store) ([]templates.Message, error) {
	s, ok := b.inv.Store(r.ID)
	if !ok {
		return nil, flows.Userf("no_store", "例 e.g. /ops store show S-1001", "没有门店 %s · there is no store %s", r.ID, r.ID)
	}
	open := "关闭 closed"
	if s.Open {
		open = "营业 open"
	}
	cluster := s.Cluster
	if cluster == "" {
		cluster = "未分配 none"
	} else if c, n, ok := b.inv.Cluster(cluster); ok {
		capacity := b.inv.Capacity(c)
		cluster = fmt.Sprintf("%s (%d/%d = %d%%)", cluster, n, capacity, inventory.Percent(n, capacity))
	}
	lines := []string{
		fmt.Sprintf("集群 cluster: %s", cluster),
		fmt.Sprintf("env %s · market %s · province %s · DO %s", s.Env, s.Market, s.Province, s.DO),
		fmt.Sprintf("ownership %s · %d node(s) · %s", s.Ownership, s.Nodes, open),
	}
	if s.Ticket != "" {
		lines = append(lines, "最近迁移 last moved by "+s.Ticket)
	}
	return []templates.Message{info("info", fmt.Sprintf("门店 Store %s %s", s.ID, s.Name), strings.Join(lines, "\n"))}, nil
}
