package inventory

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"opsbot/flows"
	"opsbot/state"
)

// Hook applies a move to the real clusters: a script (through the script
// executor) or an HTTP webhook.
type Hook struct {
	// Script is a command in the scripts directory; it sees the ticket's
	// fields (OPSBOT_FIELD_STORES, OPSBOT_FIELD_TARGET, ...).
	Script  string
	Scripts flows.Executor
	// URL gets a POST of the move as JSON, with the ticket id as the
	// Idempotency-Key header.
	URL    string
	Client *http.Client
}

// Configured reports whether a hook is set.
func (h Hook) Configured() bool { return h.Script != "" || h.URL != "" }

// MoveRequest is the JSON a webhook receives.
type MoveRequest struct {
	Ticket string            `json:"ticket"`
	Env    string            `json:"env"`
	To     string            `json:"to"`
	Stores []string          `json:"stores"`
	From   map[string]string `json:"from"`
}

func (h Hook) call(ctx context.Context, in flows.ExecInput, req MoveRequest) flows.ExecResult {
	return h.Call(ctx, in, req)
}

// Call runs the hook for a ticket's change: the script (with the ticket's
// fields in its environment), or a POST of req as JSON with the ticket's
// Idempotency-Key; a 5xx or a network error is transient.
func (h Hook) Call(ctx context.Context, in flows.ExecInput, req any) flows.ExecResult {
	if h.Script != "" {
		p := map[string]string{"command": h.Script}
		return h.Scripts.Run(ctx, flows.ExecInput{Ticket: in.Ticket, Stage: in.Stage, Kind: in.Kind, Params: p, Attempt: in.Attempt})
	}
	body, _ := json.Marshal(req)
	r, err := http.NewRequestWithContext(ctx, http.MethodPost, h.URL, bytes.NewReader(body))
	if err != nil {
		return flows.ExecResult{ExitCode: -1, Err: err}
	}
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("Idempotency-Key", in.Ticket.ID+"/apply")
	client := h.Client
	if client == nil {
		client = &http.Client{Timeout: 30 * time.Second}
	}
	resp, err := client.Do(r)
	if err != nil {
		return flows.ExecResult{ExitCode: -1, Err: flows.Transient(fmt.Errorf("apply hook: %w", err))}
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(io.LimitReader(resp.Body, 4000))
	out := fmt.Sprintf("apply hook HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(answer)))
	if resp.StatusCode/100 != 2 {
		return flows.ExecResult{ExitCode: resp.StatusCode, Output: out, Err: flows.TransientIf(resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests,
			fmt.Errorf("apply hook answered HTTP %d", resp.StatusCode))}
	}
	return flows.ExecResult{OK: true, Output: out}
}

// Executor is the "inventory" executor. Params["op"]:
//   - "move" (cluster-change): call the apply hook, then move the stores
//     to Fields["target"] in the inventory; a repeat moves nothing again.
//     Crossing the warning threshold queues a warning to WarnChannel in
//     the same transaction as the move, once per crossing.
//   - "register" (cluster-create): add or update the cluster record.
type Executor struct {
	Inv         *Inventory
	Hook        Hook
	WarnChannel string
	Now         func() time.Time
}

// Run implements flows.Executor.
func (x *Executor) Run(ctx context.Context, in flows.ExecInput) flows.ExecResult {
	now := time.Now
	if x.Now != nil {
		now = x.Now
	}
	switch in.Params["op"] {
	case "move":
		return x.move(ctx, in, now())
	case "register":
		return x.register(ctx, in, now())
	}
	return flows.ExecResult{ExitCode: -1, Err: fmt.Errorf("inventory executor: unknown op %q (move or register)", in.Params["op"])}
}

func (x *Executor) move(ctx context.Context, in flows.ExecInput, now time.Time) flows.ExecResult {
	t := in.Ticket
	ids := ParseIDs(t.Fields["stores"])
	to := t.Fields["target"]
	req := MoveRequest{Ticket: t.ID, Env: t.Fields["env"], To: to, Stores: ids, From: map[string]string{}}
	for _, id := range ids {
		if s, ok := x.Inv.Store(id); ok {
			req.From[id] = s.Cluster
		}
	}
	var out []string
	if x.Hook.Configured() {
		r := x.Hook.call(ctx, in, req)
		if !r.OK {
			return r
		}
		out = append(out, strings.TrimSpace(r.Output))
	}
	// The threshold goes in as data: capacities of the target and of the
	// clusters the stores leave, read before the move's transaction.
	warn := &state.MoveWarning{At: x.Inv.rules.WarnAt, Capacity: map[string]int{}, Channel: x.WarnChannel, Title: t.Title}
	for _, name := range append([]string{to}, slices.Collect(maps.Values(req.From))...) {
		if c, _, ok := x.Inv.Cluster(name); ok {
			warn.Capacity[name] = x.Inv.Capacity(c)
		}
	}
	res, err := x.Inv.st.MoveStores(ctx, state.Move{Stores: ids, To: to, Ticket: t.ID, At: now, Warn: warn})
	if err != nil {
		return flows.ExecResult{ExitCode: -1, Err: fmt.Errorf("inventory: %w", err), Output: strings.Join(out, "\n")}
	}
	x.Inv.apply(res.Moved, to, t.ID)
	capacity := 0
	if c, _, ok := x.Inv.Cluster(to); ok {
		capacity = x.Inv.Capacity(c)
	}
	line := fmt.Sprintf("已迁移 moved %d store(s) to %s: %d → %d/%d (%d%%)", len(res.Moved), to, res.Before, res.After, capacity, Percent(res.After, capacity))
	if len(res.Kept) > 0 {
		line += fmt.Sprintf("; already there: %s", strings.Join(res.Kept, ","))
	}
	if res.Warned {
		line += " ⚠️ 已通知 warned #" + x.WarnChannel
	}
	out = append(out, line)
	return flows.ExecResult{OK: true, Output: strings.Join(out, "\n"), Set: map[string]string{"moved": strings.Join(res.Moved, ",")}}
}

func (x *Executor) register(ctx context.Context, in flows.ExecInput, now time.Time) flows.ExecResult {
	f := in.Ticket.Fields
	c := state.Cluster{Name: f["name"], Env: f["env"], Location: f["location"], Size: f["size"], Domain: f["domain"],
		IngressIP: f["ingress_ip"], RancherID: f["rancher_id"], K8sID: f["k8s_id"], LBID: f["lb_id"], OBVIP: f["ob_vip"],
		OBUser: f["ob_user"], Status: "active", Ticket: in.Ticket.ID, Updated: now}
	c.K8sIPs = splitIPs(f["k8s_ips"])
	if f["k8s_ips_lookup"] != "" {
		c.K8sIPs = splitIPs(f["k8s_ips_lookup"])
	}
	c.OBIPs = splitIPs(f["ob_ip"])
	c.Tags = ParseIDs(f["tags"])
	c.Capacity = x.Inv.rules.Sizes[c.Size]
	if err := x.Inv.PutCluster(ctx, c); err != nil {
		return flows.ExecResult{ExitCode: -1, Err: fmt.Errorf("inventory: %w", err)}
	}
	return flows.ExecResult{OK: true, Output: fmt.Sprintf("集群已登记 cluster %s registered: %s %s %s, capacity %d", c.Name, c.Env, c.Location, c.Size, c.Capacity)}
}

// PutCluster adds or updates one cluster.
func (inv *Inventory) PutCluster(ctx context.Context, c state.Cluster) error {
	if err := inv.st.PutCluster(ctx, c); err != nil {
		return err
	}
	inv.mu.Lock()
	defer inv.mu.Unlock()
	if a, ok := inv.clusters[c.Name]; ok {
		c.Warned = a.c.Warned
		a.c = c
		return nil
	}
	a := newAgg(c)
	for _, s := range inv.stores {
		if s.Cluster == c.Name {
			a.add(s, 1)
		}
	}
	inv.clusters[c.Name] = a
	return nil
}

// HTTPLookup looks K8s IPs up with GET URL?k8s_id=ID; the answer is JSON,
// either {"ips": [...]} or a plain array.
type HTTPLookup struct {
	URL    string
	Client *http.Client
}

// K8sIPs implements Lookup.
func (l HTTPLookup) K8sIPs(ctx context.Context, id string) ([]string, error) {
	u, err := url.Parse(l.URL)
	if err != nil {
		return nil, err
	}
	q := u.Query()
	q.Set("k8s_id", id)
	u.RawQuery = q.Encode()
	r, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	client := l.Client
	if client == nil {
		client = &http.Client{Timeout: 10 * time.Second}
	}
	resp, err := client.Do(r)
	if err != nil {
		return nil, fmt.Errorf("lookup unreachable: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode == http.StatusNotFound {
		return nil, fmt.Errorf("no K8s cluster %s (HTTP 404)", id)
	}
	if resp.StatusCode/100 != 2 {
		return nil, fmt.Errorf("lookup answered HTTP %d", resp.StatusCode)
	}
	return parseIPAnswer(body)
}

func parseIPAnswer(body []byte) ([]string, error) {
	var obj struct {
		IPs []string `json:"ips"`
	}
	var list []string
	if err := json.Unmarshal(body, &list); err != nil {
		if err := json.Unmarshal(body, &obj); err != nil {
			return nil, fmt.Errorf("lookup answer is not JSON with ips: %.80s", body)
		}
		list = obj.IPs
	}
	if len(list) == 0 {
		return nil, nil
	}
	ips, err := flows.ParseIPList(strings.Join(list, ","))
	if err != nil {
		return nil, fmt.Errorf("lookup answer: %v", err)
	}
	return ips, nil
}

// ScriptLookup runs a script (through the script executor) with
// OPSBOT_FIELD_K8S_ID set; it prints the IPs, comma or space separated.
type ScriptLookup struct {
	Script  string
	Scripts flows.Executor
}

// K8sIPs implements Lookup.
func (l ScriptLookup) K8sIPs(ctx context.Context, id string) ([]string, error) {
	r := l.Scripts.Run(ctx, flows.ExecInput{Ticket: state.Ticket{ID: "lookup", Flow: "cluster-create", Fields: map[string]string{"k8s_id": id}},
		Stage: "lookup", Kind: "lookup", Params: map[string]string{"command": l.Script}, Attempt: 1})
	if !r.OK {
		return nil, fmt.Errorf("lookup script: %s %s", r.Err, strings.TrimSpace(r.Output))
	}
	fields := strings.FieldsFunc(r.Output, func(c rune) bool { return c == ',' || c == ' ' || c == '\n' || c == '\t' })
	ips, err := flows.ParseIPList(strings.Join(fields, ","))
	if err != nil {
		return nil, fmt.Errorf("lookup script output: %v", err)
	}
	return ips, nil
}
