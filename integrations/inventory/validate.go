package inventory

import (
	"context"
	"fmt"
	"math"
	"regexp"
	"slices"
	"sort"
	"strings"

	"opsbot/flows"
	"opsbot/state"
)

// Lookup finds the node IPs of a cloud K8s cluster by its id.
type Lookup interface {
	K8sIPs(ctx context.Context, k8sID string) ([]string, error)
}

// CreateRules configure the cluster-create checks.
type CreateRules struct {
	// ProdName is the naming rule for prod clusters, ProdNameExample an
	// example of it.
	ProdName        *regexp.Regexp
	ProdNameExample string
	// Zone is the DNS zone cluster domains must be in ("" = any).
	Zone string
	// Lookup finds K8s IPs on Ali/AWS; nil when not configured.
	Lookup Lookup
}

// Own data centres and cloud locations.
var (
	OwnDC = []string{"Putuo", "Hedan"}
	Cloud = []string{"Ali", "AWS"}
)

var clusterName = regexp.MustCompile(`^[a-z][a-z0-9-]{0,39}$`)

var domainRe = regexp.MustCompile(`^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}\.?$`)

// sizeCounts splits a size "5+3" into K8s nodes and OB nodes.
func sizeCounts(size string) (k8s, ob int) {
	fmt.Sscanf(size, "%d+%d", &k8s, &ob)
	return k8s, ob
}

type problems struct {
	lines  []string
	fields map[string]string
}

func (p *problems) add(field, format string, a ...any) {
	msg := fmt.Sprintf(format, a...)
	p.lines = append(p.lines, msg)
	if p.fields == nil {
		p.fields = map[string]string{}
	}
	if _, ok := p.fields[field]; !ok {
		p.fields[field] = msg
	}
}

func (p *problems) err(hint string) error {
	if len(p.lines) == 0 {
		return nil
	}
	return &flows.UserError{Code: "bad_fields", Message: strings.Join(p.lines, "\n"), Hint: hint, Fields: p.fields}
}

// ValidateCreate is the cluster-create validator: sizes per env, the
// Putuo/Hedan versus Ali/AWS field rules with the K8s IP look-up (made
// again on every edit), naming and number checks for prod, and the
// domain's zone.
func (inv *Inventory) ValidateCreate(rules CreateRules) flows.Validator {
	return flows.ValidatorFunc(func(ctx context.Context, in flows.Validation) (map[string]string, error) {
		f := in.Fields
		var p problems
		name, env, loc, size := f["name"], f["env"], f["location"], f["size"]
		existing, _, exists := inv.Cluster(name)
		if size == "9+6" && env != "prod" && !(exists && existing.Size == "9+6") {
			p.add("size", "size=9+6 只能用于 prod 集群 · size 9+6 is for prod clusters only: env %s may use 3+3 or 5+3 (a cluster that already is 9+6 may keep it)", env)
		}
		cloud := slices.Contains(Cloud, loc)
		if !cloud {
			if f["k8s_ips"] == "" {
				p.add("k8s_ips", "location=%s 需要 k8s_ips · location %s needs k8s_ips, e.g. k8s_ips=10.0.0.1,10.0.0.2", loc, loc)
			}
		} else {
			if f["k8s_ips"] != "" {
				p.add("k8s_ips", "location=%s 没有 k8s_ips 字段 · location %s has no k8s_ips field: the K8s IPs are looked up from k8s_id; leave k8s_ips out", loc, loc)
			}
			if f["lb_id"] == "" {
				p.add("lb_id", "location=%s 需要 lb_id · location %s needs lb_id (the load balancer ID), e.g. lb_id=lb-2ze8xk", loc, loc)
			}
			if f["k8s_id"] == "" {
				p.add("k8s_id", "location=%s 需要 k8s_id · location %s needs k8s_id (the K8s cluster ID), e.g. k8s_id=c-7f3a9", loc, loc)
			}
		}
		if d := f["domain"]; d != "" {
			d = strings.ToLower(strings.TrimSuffix(d, "."))
			f["domain"] = d
			switch {
			case !domainRe.MatchString(d):
				p.add("domain", "domain=%q 不是合法域名 · %q is not a valid domain name, e.g. %s", d, d, exampleDomain(name, rules.Zone))
			case rules.Zone != "" && !strings.HasSuffix(d, "."+strings.TrimSuffix(rules.Zone, ".")):
				p.add("domain", "domain=%s 不在 DNS 区 %s 内 · domain %s is not in the zone opsbot updates: use a name ending in .%s, e.g. %s",
					d, rules.Zone, d, strings.TrimSuffix(rules.Zone, "."), exampleDomain(name, rules.Zone))
			}
		}
		delete(f, "k8s_ips_lookup")
		if cloud && f["k8s_id"] != "" && f["k8s_ips"] == "" {
			switch {
			case rules.Lookup == nil:
				p.add("k8s_id", "未配置 K8s 查询 · cloud clusters need clusters.k8s_lookup in the config to look up the K8s IPs of k8s_id %s", f["k8s_id"])
			default:
				ips, err := rules.Lookup.K8sIPs(ctx, f["k8s_id"])
				switch {
				case err != nil:
					p.add("k8s_id", "k8s_id=%s 查询 K8s IP 失败 · looking up the K8s IPs of k8s_id %s failed: %v", f["k8s_id"], f["k8s_id"], err)
				case len(ips) == 0:
					p.add("k8s_id", "k8s_id=%s 查不到节点 · k8s_id %s has no nodes: the lookup returned no IPs", f["k8s_id"], f["k8s_id"])
				default:
					f["k8s_ips_lookup"] = strings.Join(ips, ",")
				}
			}
		}
		if env == "prod" {
			if rules.ProdName != nil && !rules.ProdName.MatchString(name) {
				p.add("name", "name=%s 不符合生产集群命名 · prod cluster names must match %s, e.g. %s", name, rules.ProdName.String(), rules.ProdNameExample)
			}
			// Number checks: cloud only (own data centres have none).
			if cloud {
				wantK8s, wantOB := sizeCounts(size)
				if ob := splitIPs(f["ob_ip"]); len(ob) != wantOB {
					p.add("ob_ip", "ob_ip 有 %d 个，size %s 需要 %d 个 · size %s needs %d OB IPs, got %d", len(ob), size, wantOB, size, wantOB, len(ob))
				}
				if got := splitIPs(f["k8s_ips_lookup"]); f["k8s_ips_lookup"] != "" && len(got) != wantK8s {
					p.add("k8s_id", "k8s_id=%s 有 %d 个节点，size %s 需要 %d 个 · size %s needs %d K8s nodes; k8s_id %s has %d",
						f["k8s_id"], len(got), size, wantK8s, size, wantK8s, f["k8s_id"], len(got))
				}
			}
		}
		delete(f, "existing")
		if exists {
			f["existing"] = fmt.Sprintf("修改已有集群 updates the existing cluster %s (%s, %s)", name, existing.Env, existing.Size)
		}
		if err := p.err("例 e.g. " + in.Flow.Example()); err != nil {
			return nil, err
		}
		return f, nil
	})
}

func exampleDomain(name, zone string) string {
	if zone == "" {
		zone = "ops.example.com"
	}
	if name == "" {
		name = "prod-sh-01"
	}
	return name + "." + strings.TrimSuffix(zone, ".")
}

func splitIPs(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

// ParseIDs splits a comma-separated id list, tolerating spaces, a trailing
// comma and repeats.
func ParseIDs(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		p = strings.TrimSpace(p)
		if p != "" && !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out
}

// Reservations are the moves of the open cluster-change tickets.
func Reservations(open []state.Ticket) []Reservation {
	var out []Reservation
	for _, t := range open {
		if t.Fields["target"] == "" {
			continue
		}
		out = append(out, Reservation{Ticket: t.ID, Stores: ParseIDs(t.Fields["stores"]), To: t.Fields["target"]})
	}
	return out
}

// UsageLine describes a cluster's utilization after a move of n stores.
func (inv *Inventory) UsageLine(u Usage, n int) string {
	after := u.Projected() + n
	s := fmt.Sprintf("%s: %d", u.Cluster, u.Count)
	if u.Reserved > 0 {
		s += fmt.Sprintf(" +%d 已预留 reserved by %s", u.Reserved, strings.Join(u.By, ","))
	}
	if u.Leaving > 0 {
		s += fmt.Sprintf(" -%d 迁出中 leaving", u.Leaving)
	}
	s += fmt.Sprintf(" +%d → %d/%d = %d%%", n, after, u.Capacity, Percent(after, u.Capacity))
	if float64(after) >= inv.rules.WarnAt*float64(u.Capacity) {
		s += fmt.Sprintf(" ⚠️ 超过 over %d%%", int(math.Round(inv.rules.WarnAt*100)))
	}
	return s
}

// ValidateChange is the cluster-change validator: the stores exist, share
// an env and are not being moved by another ticket; dev/uat name the
// cluster, prod gets a proposal; the utilization counts the reservations
// of tickets in flight.
func (inv *Inventory) ValidateChange() flows.Validator {
	return flows.ValidatorFunc(func(ctx context.Context, in flows.Validation) (map[string]string, error) {
		f := in.Fields
		for _, k := range []string{"env", "target", "from", "utilization", "placement", "runner_up"} {
			delete(f, k)
		}
		var p problems
		hint := "例 e.g. " + in.Flow.Example()
		ids := ParseIDs(f["stores"])
		if len(ids) == 0 {
			p.add("stores", "需要门店 · stores needs at least one store id, e.g. stores=S-1001,S-1002")
			return nil, p.err(hint)
		}
		f["stores"] = strings.Join(ids, ",")
		var unknown []string
		var stores []state.StoreInfo
		envs := map[string][]string{}
		for _, id := range ids {
			s, ok := inv.Store(id)
			if !ok {
				unknown = append(unknown, id)
				continue
			}
			stores = append(stores, s)
			envs[s.Env] = append(envs[s.Env], id)
		}
		if len(unknown) > 0 {
			p.add("stores", "没有门店 %s · there is no store %s (see /ops store show <id>)", strings.Join(unknown, ", "), strings.Join(unknown, ", "))
			return nil, p.err(hint)
		}
		if len(envs) > 1 {
			var parts []string
			for e, list := range envs {
				parts = append(parts, e+": "+strings.Join(list, ","))
			}
			sort.Strings(parts)
			p.add("stores", "门店属于不同环境 · the stores belong to different envs (%s): move one env per ticket", strings.Join(parts, "; "))
			return nil, p.err(hint)
		}
		env := stores[0].Env
		res := Reservations(in.Open)
		for _, r := range res {
			for _, id := range r.Stores {
				if slices.Contains(ids, id) {
					p.add("stores", "门店 %s 正在由 %s 迁移 · store %s is already being moved by %s; wait for it or cancel it", id, r.Ticket, id, r.Ticket)
				}
			}
		}
		if err := p.err("/ops show " + firstTicket(res, ids)); err != nil {
			return nil, err
		}
		f["env"] = env
		var from []string
		for _, s := range stores {
			if s.Cluster == "" {
				from = append(from, s.ID+" (尚无集群 in no cluster yet)")
			} else {
				from = append(from, s.ID+" (在 in "+s.Cluster+")")
			}
		}
		f["from"] = strings.Join(from, ", ")
		target := f["cluster"]
		if Proposes(env) {
			if target != "" {
				p.add("cluster", "%s 门店由 opsbot 推荐集群，请不要填 cluster · for %s stores opsbot proposes the cluster; leave cluster out (dev/uat/sit/pt: name one)", env, env)
				return nil, p.err(hint)
			}
			prop, err := inv.Propose(ids, res)
			if err != nil {
				p.add("stores", "%v", err)
				return nil, p.err("")
			}
			target = prop.Best.Cluster
			f["placement"] = prop.Line()
			f["runner_up"] = prop.RunnerUpLine()
		} else {
			if target == "" {
				p.add("cluster", "%s 门店需要指定 cluster · %s stores need cluster=<name>, e.g. cluster=%s-sh-01", env, env, env)
				return nil, p.err(hint)
			}
			c, _, ok := inv.Cluster(target)
			switch {
			case !ok:
				p.add("cluster", "没有集群 %s · there is no cluster %s%s", target, target, inv.didYouMean(target))
			case !Compatible(env, c.Env):
				p.add("cluster", "集群 %s 属于 %s，门店属于 %s · cluster %s is a %s cluster; %s stores need a %s cluster (only hd and prod may swap)", target, c.Env, env, target, c.Env, env, env)
			case c.Status != "active":
				p.add("cluster", "集群 %s 状态为 %s · cluster %s is %s: stores cannot move in", target, c.Status, target, c.Status)
			}
			if err := p.err(hint); err != nil {
				return nil, err
			}
		}
		moving := 0
		for _, s := range stores {
			if s.Cluster != target {
				moving++
			}
		}
		if moving == 0 {
			p.add("stores", "门店已在 %s · the stores are already in %s", target, target)
			return nil, p.err("")
		}
		u, err := inv.Usage(target, res)
		if err != nil {
			return nil, err
		}
		f["target"] = target
		f["utilization"] = inv.UsageLine(u, moving)
		return f, nil
	})
}

func firstTicket(res []Reservation, ids []string) string {
	for _, r := range res {
		for _, id := range r.Stores {
			if slices.Contains(ids, id) {
				return r.Ticket
			}
		}
	}
	return ""
}

func (inv *Inventory) didYouMean(name string) string {
	var names []string
	for _, c := range inv.Clusters() {
		names = append(names, c.Name)
	}
	if c := flows.Closest(name, names); c != "" {
		return fmt.Sprintf(" (是不是 did you mean %q?)", c)
	}
	return ""
}

func sortedKeys(m map[string]int) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
