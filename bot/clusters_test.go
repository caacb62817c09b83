package bot_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"opsbot/bot"
	"opsbot/bot/bottest"
	"opsbot/flows"
	"opsbot/integrations/dns"
	"opsbot/integrations/dns/dnstest"
	"opsbot/state"
)

// clusterKit is a bot with a real BIND, a K8s look-up service and an
// apply webhook on loopback, and small sizes (3+3 holds 10 stores, 5+3
// holds 20) so utilization is easy to reason about.
type clusterKit struct {
	t       *testing.T
	k       *bottest.Kit
	named   *dnstest.Named
	lookups *counter
	applied *applyHook
}

type counter struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *counter) inc(k string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n[k]++
}

func (c *counter) get(k string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[k]
}

type applyHook struct {
	mu     sync.Mutex
	calls  []applyCall
	failOn string
}

type applyCall struct {
	Key  string
	Body map[string]any
}

func (h *applyHook) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var body map[string]any
	_ = json.NewDecoder(r.Body).Decode(&body)
	h.mu.Lock()
	defer h.mu.Unlock()
	h.calls = append(h.calls, applyCall{Key: r.Header.Get("Idempotency-Key"), Body: body})
	if h.failOn != "" && strings.Contains(fmt.Sprint(body["stores"]), h.failOn) {
		http.Error(w, `{"error": "rancher unavailable"}`, http.StatusInternalServerError)
		return
	}
	fmt.Fprintf(w, `{"applied": true, "job": "J-%d"}`, len(h.calls))
}

func (h *applyHook) list() []applyCall {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]applyCall(nil), h.calls...)
}

var k8sNodes = map[string][]string{
	"c-7f3a9": {"10.20.0.11", "10.20.0.12", "10.20.0.13", "10.20.0.14", "10.20.0.15"},
	"c-other": {"10.20.9.11", "10.20.9.12", "10.20.9.13", "10.20.9.14", "10.20.9.15"},
	"c-four":  {"10.20.4.1", "10.20.4.2", "10.20.4.3", "10.20.4.4"},
	"c-none":  {},
}

func newClusterKit(t *testing.T, extra string) *clusterKit {
	ck := &clusterKit{t: t, lookups: &counter{n: map[string]int{}}, applied: &applyHook{}}
	ck.named = dnstest.Start(t, "ops.example.test")
	t.Setenv("OPSBOT_DNS_TSIG_SECRET", ck.named.Secret)
	lookup := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.URL.Query().Get("k8s_id")
		ck.lookups.inc(id)
		ips, ok := k8sNodes[id]
		if !ok {
			http.NotFound(w, r)
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"ips": ips})
	}))
	t.Cleanup(lookup.Close)
	apply := httptest.NewServer(ck.applied)
	t.Cleanup(apply.Close)
	ck.k = bottest.New(t, bottest.WithYAML(fmt.Sprintf(`channels: {infra: {}}
clusters:
  sizes: {"3+3": 10, "5+3": 20, "9+6": 40}
  k8s_lookup: {url: %q}
  apply: {url: %q}
dns: {server: %q, zone: ops.example.test, key_name: %s}
%s`, lookup.URL, apply.URL, ck.named.Addr, ck.named.KeyName, extra)))
	return ck
}

func (ck *clusterKit) say(user, text string) string { return bottest.Title(ck.k.Say(user, text)) }

// put loads clusters and stores into the inventory.
func (ck *clusterKit) put(cs []state.Cluster, ss []state.StoreInfo) {
	ck.t.Helper()
	if err := ck.k.Bot.Inventory().Put(context.Background(), cs, ss); err != nil {
		ck.t.Fatal(err)
	}
}

const (
	cloudProd = "name=prod-sh-01 env=prod location=Ali size=5+3 ingress_ip=10.20.0.10 domain=prod-sh-01.ops.example.test lb_id=lb-1 k8s_id=c-7f3a9 ob_ip=10.1.1.1,10.1.1.2,10.1.1.3"
	ownUAT    = "name=uat-x env=uat location=Putuo size=3+3 ingress_ip=10.30.0.10 domain=uat-x.ops.example.test k8s_ips=10.30.0.11"
)

// with replaces or adds key=value pairs in an argument line.
func with(base string, kv ...string) string {
	parts := strings.Fields(base)
	for _, x := range kv {
		k, _, _ := strings.Cut(x, "=")
		found := false
		for i, p := range parts {
			if strings.HasPrefix(p, k+"=") {
				parts[i], found = x, true
			}
		}
		if !found {
			parts = append(parts, x)
		}
	}
	var out []string
	for _, p := range parts {
		if !strings.HasSuffix(p, "=") { // "key=" drops the field
			out = append(out, p)
		}
	}
	return strings.Join(out, " ")
}

// TestClusterCreateRules shows every cluster-create rule of DOMAIN.md
// with the exact message the requester reads.
func TestClusterCreateRules(t *testing.T) {
	ck := newClusterKit(t, "")
	ck.put([]state.Cluster{{Name: "uat-big", Env: "uat", Location: "Putuo", Size: "9+6", Status: "active"}}, nil)
	refused := []struct{ why, args, msg string }{
		{"env enum", with(ownUAT, "env=qa"), `env="qa" 不是可选值 is not allowed: choose one of sit, uat, pt, prod, dev, hd`},
		{"location enum", with(ownUAT, "location=Mars"), `location="Mars" 不是可选值 is not allowed: choose one of Putuo, Hedan, Ali, AWS`},
		{"size enum", with(ownUAT, "size=4+4"), `size="4+4" 不是可选值 is not allowed: choose one of 3+3, 5+3, 9+6`},
		{"9+6 is prod only", with(ownUAT, "size=9+6"),
			"size=9+6 只能用于 prod 集群 · size 9+6 is for prod clusters only: env uat may use 3+3 or 5+3 (a cluster that already is 9+6 may keep it)"},
		{"own DC needs K8s IPs", with(ownUAT, "k8s_ips="), "location=Putuo 需要 k8s_ips · location Putuo needs k8s_ips, e.g. k8s_ips=10.0.0.1,10.0.0.2"},
		{"cloud has no K8s IP field", with(cloudProd, "k8s_ips=10.0.0.1"),
			"location=Ali 没有 k8s_ips 字段 · location Ali has no k8s_ips field: the K8s IPs are looked up from k8s_id; leave k8s_ips out"},
		{"cloud needs LB ID", with(cloudProd, "lb_id="), "location=Ali 需要 lb_id · location Ali needs lb_id (the load balancer ID), e.g. lb_id=lb-2ze8xk"},
		{"cloud needs K8s ID", with(cloudProd, "location=AWS", "k8s_id="), "location=AWS 需要 k8s_id · location AWS needs k8s_id (the K8s cluster ID), e.g. k8s_id=c-7f3a9"},
		{"look-up fails", with(cloudProd, "k8s_id=c-404"),
			"k8s_id=c-404 查询 K8s IP 失败 · looking up the K8s IPs of k8s_id c-404 failed: no K8s cluster c-404 (HTTP 404)"},
		{"look-up finds nothing", with(cloudProd, "k8s_id=c-none"), "k8s_id=c-none 查不到节点 · k8s_id c-none has no nodes: the lookup returned no IPs"},
		{"IP list names the bad entry", with(ownUAT, "k8s_ips=10.0.0.1,10.0.0.300,"), `k8s_ips: 第 2 项 "10.0.0.300" 不是有效的 IP 地址 · entry 2 "10.0.0.300" is not a valid IP address`},
		{"OB IP list names the bad entry", with(ownUAT, "ob_ip=10.0.0.1,x"), `ob_ip: 第 2 项 "x" 不是有效的 IP 地址 · entry 2 "x" is not a valid IP address`},
		{"an empty entry in a list", with(ownUAT, "k8s_ips=10.0.0.1,,10.0.0.2"), `k8s_ips: 第 2 项为空 · entry 2 is empty: write IPs separated by commas`},
		{"prod naming", with(cloudProd, "name=shanghai-1", "domain=shanghai-1.ops.example.test"),
			"name=shanghai-1 不符合生产集群命名 · prod cluster names must match ^(?:prod-[a-z]+-[0-9]{2})$, e.g. prod-sh-01"},
		{"prod number check: OB IPs per size", with(cloudProd, "ob_ip=10.1.1.1,10.1.1.2"), "ob_ip 有 2 个，size 5+3 需要 3 个 · size 5+3 needs 3 OB IPs, got 2"},
		{"prod number check: K8s nodes per size", with(cloudProd, "k8s_id=c-four"),
			"k8s_id=c-four 有 4 个节点，size 5+3 需要 5 个 · size 5+3 needs 5 K8s nodes; k8s_id c-four has 4"},
		{"domain in the zone", with(ownUAT, "domain=uat-x.example.com"),
			"domain=uat-x.example.com 不在 DNS 区 ops.example.test 内 · domain uat-x.example.com is not in the zone opsbot updates: use a name ending in .ops.example.test, e.g. uat-x.ops.example.test"},
		{"a computed field is not typed", with(ownUAT, "k8s_ips_lookup=10.0.0.1"), "字段 k8s_ips_lookup 由 opsbot 计算，请不要填写 · k8s_ips_lookup is computed by opsbot; leave it out"},
	}
	for _, c := range refused {
		got := ck.say("alice", "/ops new cluster-create "+c.args)
		if !strings.Contains(got, c.msg) {
			t.Errorf("%s:\n got %q\nwant %q", c.why, got, c.msg)
		}
	}
	if n := len(ck.k.Bot.Engine().FlowNames()); n == 0 {
		t.Fatal("no flows")
	}
	// Accepted, each showing a rule that does not apply.
	accepted := []struct{ why, args string }{
		{"an existing 9+6 cluster may keep 9+6", with(ownUAT, "name=uat-big", "size=9+6", "domain=uat-big.ops.example.test")},
		{"spaces and a trailing comma in IP lists", with(ownUAT, "name=uat-y", "domain=uat-y.ops.example.test", `k8s_ips=" 10.0.0.1 , 10.0.0.2 ,"`)},
		{"no naming or number checks outside prod", with(cloudProd, "name=Shanghai_1x", "env=pt", "name=pt1", "domain=pt1.ops.example.test", "ob_ip=10.1.1.1", "k8s_id=c-four")},
		{"no count checks at own data centres", with(ownUAT, "name=prod-sh-07", "env=prod", "size=9+6", "domain=prod-sh-07.ops.example.test", "ob_ip=10.1.1.1")},
	}
	for i, c := range accepted {
		id := fmt.Sprintf("T-%d", i+1)
		if got := ck.say("alice", "/ops new cluster-create "+c.args); !strings.Contains(got, id+" submitted") {
			t.Fatalf("%s: %q", c.why, got)
		}
	}
	if got := ck.k.Ticket("T-1").Fields["existing"]; got != "修改已有集群 updates the existing cluster uat-big (uat, 9+6)" {
		t.Errorf("existing: %q", got)
	}
	if got := ck.k.Ticket("T-2").Fields["k8s_ips"]; got != "10.0.0.1,10.0.0.2" {
		t.Errorf("normalized IP list %q", got)
	}
	if got := ck.k.Ticket("T-3").Fields["k8s_ips_lookup"]; got != "10.20.4.1,10.20.4.2,10.20.4.3,10.20.4.4" {
		t.Errorf("looked-up IPs %q", got)
	}
	// The same cluster twice in flight: the lock names the holder.
	mustContain(t, ck.say("alice", "/ops new cluster-create "+with(ownUAT, "name=uat-y", "domain=uat-y.ops.example.test")), "cluster:uat-y is locked by ticket T-2")
}

// TestClusterCreateDNSEditAndRetry takes a cloud prod cluster through
// edit -> approval -> DNS record in the real BIND -> resolved -> done,
// then a second one whose update BIND refuses (wrong TSIG key), and
// retries it after the key is fixed.
func TestClusterCreateDNSEditAndRetry(t *testing.T) {
	ck := newClusterKit(t, "")
	k := ck.k
	mustContain(t, ck.say("alice", "/ops new cluster-create "+cloudProd), "T-1 submitted")
	if ck.lookups.get("c-7f3a9") != 1 || k.Ticket("T-1").Fields["k8s_ips_lookup"] != strings.Join(k8sNodes["c-7f3a9"], ",") {
		t.Fatalf("look-up: %d %v", ck.lookups.get("c-7f3a9"), k.Ticket("T-1").Fields)
	}
	// Edits while waiting: only the requester; checked like a new ticket;
	// the K8s IPs are looked up again.
	mustContain(t, ck.say("bob", "/ops edit T-1 k8s_id=c-other"), "only the requester alice can edit T-1")
	mustContain(t, ck.say("alice", "/ops edit T-1 env=uat size=9+6"), "size 9+6 is for prod clusters only")
	if tk := k.Ticket("T-1"); tk.Fields["env"] != "prod" || tk.Version != 1 {
		t.Fatalf("a refused edit changed the ticket: %v v%d", tk.Fields, tk.Version)
	}
	mustContain(t, ck.say("alice", "/ops edit T-1 k8s_id=c-other"), "T-1 edited; approvals start over")
	if ck.lookups.get("c-other") != 1 || k.Ticket("T-1").Fields["k8s_ips_lookup"] != strings.Join(k8sNodes["c-other"], ",") {
		t.Fatalf("edit did not look up again: %v", k.Ticket("T-1").Fields)
	}
	k.Deliver()
	mustContain(t, strings.Join(k.Notices("ivan"), "\n"), "T-1 alice 修改了工单，请重新审批 edited the ticket")

	approve(t, k, "ivan", "T-1", "dns")
	tk := k.WaitStage("T-1", "done")
	if tk.Outputs["dns_request"] != "DNS-prod-sh-01" {
		t.Fatalf("outputs %v", tk.Outputs)
	}
	mustContain(t, tk.Results["dns"].Output, "DNS-prod-sh-01: prod-sh-01.ops.example.test A 10.20.0.10")
	mustContain(t, tk.Results["dns_pending"].Output, "resolves to 10.20.0.10")
	if got, err := ck.named.Lookup("prod-sh-01.ops.example.test"); err != nil || len(got) != 1 || got[0] != "10.20.0.10" {
		t.Fatalf("BIND has %v %v", got, err)
	}
	c, _, ok := k.Bot.Inventory().Cluster("prod-sh-01")
	if !ok || c.Size != "5+3" || c.Capacity != 20 || strings.Join(c.K8sIPs, ",") != strings.Join(k8sNodes["c-other"], ",") || c.Ticket != "T-1" {
		t.Fatalf("registered %+v", c)
	}
	mustContain(t, ck.say("bob", "/ops cluster show prod-sh-01"), "Cluster prod-sh-01: 0/20 = 0%")
	mustContain(t, ck.say("alice", "/ops edit T-1 size=3+3"), "T-1 can only be edited while it waits for approval")

	// Wrong key: BIND refuses; the ticket fails clearly, nothing is written.
	t.Setenv("OPSBOT_DNS_TSIG_SECRET", dnstest.NewSecret())
	mustContain(t, ck.say("alice", "/ops new cluster-create "+with(cloudProd, "name=prod-sh-02", "domain=prod-sh-02.ops.example.test", "ingress_ip=10.20.0.20")), "T-2 submitted")
	approve(t, k, "ivan", "T-2", "dns")
	tk = k.WaitStage("T-2", "failed")
	mustContain(t, tk.Results["dns"].Error, "DNS 更新被拒绝 DNS-prod-sh-02: "+ck.named.Addr+" refused the update of prod-sh-02.ops.example.test: NOTAUTH")
	mustContain(t, tk.Results["dns"].Error, "check the TSIG key (dns.key_name opsbot-key, secret in OPSBOT_DNS_TSIG_SECRET)")
	if got, _ := ck.named.Lookup("prod-sh-02.ops.example.test"); len(got) != 0 {
		t.Fatalf("refused update left %v", got)
	}
	if _, ok := bottest.Button(k.Bot.Card(tk), "Retry"); !ok {
		t.Fatal("no retry button")
	}
	if _, _, ok := k.Bot.Inventory().Cluster("prod-sh-02"); ok {
		t.Fatal("a failed ticket registered its cluster")
	}
	// The key is fixed (the secret is read at each update): retry works.
	t.Setenv("OPSBOT_DNS_TSIG_SECRET", ck.named.Secret)
	mustContain(t, ck.say("alice", "/ops retry T-2"), "T-2 retry")
	k.WaitStage("T-2", "done")
	if got, _ := ck.named.Lookup("prod-sh-02.ops.example.test"); len(got) != 1 || got[0] != "10.20.0.20" {
		t.Fatalf("after retry BIND has %v", got)
	}
}

// TestClusterCreateDNSTimeout files the record through a script (a
// request to the DNS team) and waits: nothing resolves, the wait times out
// with a clear message and a retry; once the record exists, retry ends it.
func TestClusterCreateDNSTimeout(t *testing.T) {
	named := dnstest.Start(t, "ops.example.test")
	k := bottest.New(t, bottest.WithYAML(fmt.Sprintf(`dns: {script: file-dns.sh, zone: ops.example.test, resolver: %q}`, named.Addr)))
	script := "#!/bin/sh\necho \"filed $OPSBOT_FIELD_DOMAIN -> $OPSBOT_FIELD_INGRESS_IP\" >> \"$(dirname \"$0\")/../dns-requests.log\"\necho ticket DNS-42 opened\n"
	if err := os.WriteFile(filepath.Join(k.Dir, "scripts", "file-dns.sh"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	mustContain(t, bottest.Title(k.Say("alice", "/ops new cluster-create "+ownUAT)), "T-1 submitted")
	approve(t, k, "ivan", "T-1", "dns")
	k.WaitStage("T-1", "dns_pending")
	waitFor(t, "the first resolution check", func() bool {
		j, err := k.Bot.Store().Job(ctx, "T-1/3")
		return err == nil && j.Status == "queued" && j.Attempt == 1
	})
	log, _ := os.ReadFile(filepath.Join(k.Dir, "dns-requests.log"))
	mustContain(t, string(log), "filed uat-x.ops.example.test -> 10.30.0.10")
	mustContain(t, k.Ticket("T-1").Results["dns"].Output, "DNS-uat-x: ticket DNS-42 opened")
	k.Clock.Advance(31 * time.Minute)
	k.Bot.Runner().RunDue(ctx)
	tk := k.WaitStage("T-1", "failed")
	mustContain(t, tk.Results["dns_pending"].Error, "等待超时 timed out after 30m0s waiting for dns. DNS-uat-x: uat-x.ops.example.test 尚未解析到 10.30.0.10 · does not resolve to 10.30.0.10 yet")
	if _, ok := bottest.Button(k.Bot.Card(tk), "Retry"); !ok {
		t.Fatal("no retry button")
	}
	// The DNS team adds the record; a retry checks again and finishes.
	t.Setenv("TEST_TSIG", named.Secret)
	x := dns.New(dns.Config{Server: named.Addr, Zone: named.Zone, KeyName: named.KeyName, KeySecretEnv: "TEST_TSIG"})
	if r := x.Run(ctx, flows.ExecInput{Ticket: tk, Params: map[string]string{"op": "update"}}); !r.OK {
		t.Fatal(r.Err)
	}
	mustContain(t, bottest.Title(k.Say("alice", "/ops retry T-1")), "T-1 retry")
	k.WaitStage("T-1", "done")
	if _, _, ok := k.Bot.Inventory().Cluster("uat-x"); !ok {
		t.Fatal("cluster not registered")
	}
}

func uatStore(id, cluster string) state.StoreInfo {
	return state.StoreInfo{ID: id, Name: "store " + id, Market: "sh", Province: "SH", DO: "do-" + id, Ownership: "direct", Nodes: 1, Open: true, Env: "uat", Cluster: cluster}
}

// TestClusterChangeReservations: two tickets target the same nearly full
// cluster at the same instant; the second sees the first's reservation;
// rejecting the first frees it.
func TestClusterChangeReservations(t *testing.T) {
	ck := newClusterKit(t, "")
	cs := []state.Cluster{
		{Name: "uat-a", Env: "uat", Location: "Putuo", Size: "3+3", Status: "active"},
		{Name: "uat-b", Env: "uat", Location: "Putuo", Size: "3+3", Status: "active"},
	}
	var ss []state.StoreInfo
	for i := 1; i <= 7; i++ {
		ss = append(ss, uatStore(fmt.Sprintf("A%d", i), "uat-a"))
	}
	for i := 1; i <= 5; i++ {
		ss = append(ss, uatStore(fmt.Sprintf("B%d", i), "uat-b"))
	}
	ck.put(cs, ss)
	var wg sync.WaitGroup
	for _, stores := range []string{"B1,B2", "B3"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ck.k.Say("alice", "/ops new cluster-change stores="+stores+" cluster=uat-a reason=rebalance")
		}()
	}
	wg.Wait()
	first, second := ck.k.Ticket("T-1"), ck.k.Ticket("T-2")
	n1 := len(strings.Split(first.Fields["stores"], ","))
	if got, want := first.Fields["utilization"], fmt.Sprintf("uat-a: 7 +%d → %d/10 = %d%%", n1, 7+n1, (7+n1)*10); !strings.HasPrefix(got, want) {
		t.Fatalf("first: %q, want %q", got, want)
	}
	if got, want := second.Fields["utilization"], fmt.Sprintf("uat-a: 7 +%d 已预留 reserved by T-1 +%d → 10/10 = 100%% ⚠️ 超过 over 80%%", n1, 3-n1); got != want {
		t.Fatalf("second: %q, want %q", got, want)
	}
	mustContain(t, ck.say("ivan", "/ops cluster show uat-a"), "Cluster uat-a: 7/10 = 70%")
	mustContain(t, ck.k.Say("ivan", "/ops cluster show uat-a")[0].Body, "1 markets · 7 DOs · direct 7 / DL 0 / CL 0")
	mustContain(t, ck.k.Say("ivan", "/ops cluster list env=uat")[0].Body, "uat-b uat Putuo 3+3 active: 5/10 (50%); 在途 in flight +0/-3")
	mustContain(t, bottest.Card(ck.k.Say("ivan", "/ops cluster show uat-a")).Body+ck.k.Say("ivan", "/ops cluster show uat-a")[0].Body, "in flight +3/-0 (T-1,T-2) → 10/10 = 100%")
	// The same store in two tickets is refused, naming the holder.
	holder := "T-2"
	if strings.Contains(first.Fields["stores"], "B3") {
		holder = "T-1"
	}
	mustContain(t, ck.say("alice", "/ops new cluster-change stores=B3,B4 cluster=uat-a reason=x"),
		fmt.Sprintf("门店 B3 正在由 %s 迁移 · store B3 is already being moved by %s; wait for it or cancel it", holder, holder))

	mustContain(t, ck.say("ivan", "/ops reject T-1 no room"), "T-1 reject")
	body := ck.k.Say("ivan", "/ops cluster show uat-a")[0].Body
	mustContain(t, body, fmt.Sprintf("in flight +%d/-0 (T-2)", 3-n1))
	mustContain(t, ck.say("alice", "/ops new cluster-change stores=B4 cluster=uat-a reason=x"), "T-3 submitted")
	if got, want := ck.k.Ticket("T-3").Fields["utilization"], fmt.Sprintf("uat-a: 7 +%d 已预留 reserved by T-2 +1 → %d/10", 3-n1, 7+3-n1+1); !strings.HasPrefix(got, want) {
		t.Fatalf("after the reject: %q, want %q", got, want)
	}
	// Cancel frees too.
	mustContain(t, ck.say("alice", "/ops cancel T-2"), "T-2 cancel")
	if body := ck.k.Say("ivan", "/ops cluster show uat-a")[0].Body; !strings.Contains(body, "in flight +1/-0 (T-3)") {
		t.Fatalf("after cancel: %s", body)
	}
	// Executing updates the inventory and calls the apply hook once.
	approve(t, ck.k, "ivan", "T-3", "executing")
	tk := ck.k.WaitStage("T-3", "done")
	mustContain(t, tk.Results["executing"].Output, `apply hook HTTP 200: {"applied": true, "job": "J-1"}`)
	mustContain(t, tk.Results["executing"].Output, "已迁移 moved 1 store(s) to uat-a: 7 → 8/10 (80%)")
	if s, _ := ck.k.Bot.Inventory().Store("B4"); s.Cluster != "uat-a" || s.Ticket != "T-3" {
		t.Fatalf("B4 %+v", s)
	}
	calls := ck.applied.list()
	if len(calls) != 1 || calls[0].Key != "T-3/apply" || calls[0].Body["to"] != "uat-a" || fmt.Sprint(calls[0].Body["from"]) != "map[B4:uat-b]" {
		t.Fatalf("apply calls %+v", calls)
	}
	mustContain(t, ck.say("bob", "/ops store show B4"), "Store B4 store B4")
	mustContain(t, ck.k.Say("bob", "/ops store show B4")[0].Body, "集群 cluster: uat-a (8/10 = 80%)")
}

// TestClusterChangeRules shows each cluster-change rule's message.
func TestClusterChangeRules(t *testing.T) {
	ck := newClusterKit(t, "")
	ck.put([]state.Cluster{
		{Name: "uat-a", Env: "uat", Location: "Putuo", Size: "3+3", Status: "active"},
		{Name: "uat-old", Env: "uat", Location: "Putuo", Size: "3+3", Status: "retired"},
		{Name: "prod-a", Env: "prod", Location: "Putuo", Size: "5+3", Status: "active"},
	}, []state.StoreInfo{uatStore("U1", "uat-a"), uatStore("U2", ""), {ID: "P1", Market: "sh", DO: "d1", Ownership: "DL", Env: "prod"}})
	for _, c := range []struct{ args, msg string }{
		{"stores=Z9,Z8 cluster=uat-a", "没有门店 Z9, Z8 · there is no store Z9, Z8 (see /ops store show <id>)"},
		{"stores=,", "需要门店 · stores needs at least one store id, e.g. stores=S-1001,S-1002"},
		{"stores=U2,P1", "门店属于不同环境 · the stores belong to different envs (prod: P1; uat: U2): move one env per ticket"},
		{"stores=P1 cluster=prod-a", "prod 门店由 opsbot 推荐集群，请不要填 cluster · for prod stores opsbot proposes the cluster; leave cluster out (dev/uat/sit/pt: name one)"},
		{"stores=U2", "uat 门店需要指定 cluster · uat stores need cluster=<name>, e.g. cluster=uat-sh-01"},
		{"stores=U2 cluster=uat-c", `没有集群 uat-c · there is no cluster uat-c (是不是 did you mean "uat-a"?)`},
		{"stores=U2 cluster=prod-a", "集群 prod-a 属于 prod，门店属于 uat · cluster prod-a is a prod cluster; uat stores need a uat cluster (only hd and prod may swap)"},
		{"stores=U2 cluster=uat-old", "集群 uat-old 状态为 retired · cluster uat-old is retired: stores cannot move in"},
		{"stores=U1 cluster=uat-a", "门店已在 uat-a · the stores are already in uat-a"},
		{"stores=U2 cluster=uat-a target=uat-a", "字段 target 由 opsbot 计算，请不要填写 · target is computed by opsbot; leave it out"},
	} {
		got := ck.say("alice", "/ops new cluster-change reason=x "+c.args)
		if !strings.Contains(got, c.msg) {
			t.Errorf("%s:\n got %q\nwant %q", c.args, got, c.msg)
		}
	}
	mustContain(t, ck.say("bob", "/ops cluster show uat-z"), "没有集群 uat-z · there is no cluster uat-z")
	mustContain(t, ck.say("bob", "/ops store show Q1"), "没有门店 Q1 · there is no store Q1")
}

func prodStore(id, cluster, market string) state.StoreInfo {
	return state.StoreInfo{ID: id, Name: "store " + id, Market: market, Province: "SH", DO: "do-" + id, Ownership: "direct", Nodes: 2, Open: true, Env: "prod", Cluster: cluster}
}

// TestClusterChangeProposesAndWarnsOnce: prod stores get a proposed
// cluster with the reason and the runner-up; the 80% warning goes to the
// infra channel once when crossed, and again only after falling back.
func TestClusterChangeProposesAndWarnsOnce(t *testing.T) {
	ck := newClusterKit(t, "")
	k := ck.k
	cs := []state.Cluster{
		{Name: "prod-a", Env: "prod", Location: "Putuo", Size: "5+3", Status: "active"},
		{Name: "prod-b", Env: "prod", Location: "Ali", Size: "5+3", Status: "active"},
		{Name: "hd-a", Env: "hd", Location: "Hedan", Size: "5+3", Status: "active"},
	}
	var ss []state.StoreInfo
	markets := []string{"sh", "hz", "nj"}
	for i := 1; i <= 15; i++ {
		ss = append(ss, prodStore(fmt.Sprintf("PA%d", i), "prod-a", markets[i%3]))
	}
	for i := 1; i <= 10; i++ {
		ss = append(ss, prodStore(fmt.Sprintf("PB%d", i), "prod-b", markets[i%3]))
	}
	ss = append(ss, prodStore("HA1", "hd-a", "sh"), prodStore("HA2", "hd-a", "hz"))
	for i := 1; i <= 6; i++ {
		ss = append(ss, prodStore(fmt.Sprintf("N%d", i), "", markets[i%3]))
	}
	ck.put(cs, ss)
	infra := func() []string {
		k.Deliver()
		var out []string
		for _, e := range k.Inbox("#infra") {
			out = append(out, e.Msg.Title)
		}
		return out
	}
	move := func(id, stores, wantTarget string) state.Ticket {
		t.Helper()
		mustContain(t, bottest.Title(k.Say("alice", "/ops new cluster-change reason=grow stores="+stores)), id+" submitted")
		if got := k.Ticket(id).Fields["target"]; got != wantTarget {
			t.Fatalf("%s: proposed %s, want %s (%s)", id, got, wantTarget, k.Ticket(id).Fields["placement"])
		}
		approve(t, k, "ivan", id, "executing")
		return k.WaitStage(id, "done")
	}
	mustContain(t, bottest.Title(k.Say("alice", "/ops new cluster-change reason=grow stores=N1")), "T-1 submitted")
	tk := k.Ticket("T-1")
	if tk.Fields["placement"] != "prod-a: 放得下的集群中最满 fullest cluster that fits, 门店 stores 15→16/20 (80%); 所属 DO do-N1 在此集群 in this cluster 1/1 (上限 limit); 市场 markets 3; 规模偏差 size mix ±0%" ||
		tk.Fields["runner_up"] != "prod-b 10→11/20 (55%)" || tk.Fields["target"] != "prod-a" ||
		!strings.HasPrefix(tk.Fields["from"], "N1 (") || strings.Contains(tk.Fields["from"], "@") {
		t.Fatalf("proposal %v", tk.Fields)
	}
	card := k.Bot.Card(tk)
	var labels []string
	for _, f := range card.Fields {
		labels = append(labels, f.Label)
	}
	mustContain(t, strings.Join(labels, "|"), "推荐 Proposal|次选 Runner-up")
	if len(infra()) != 0 {
		t.Fatal("a proposal warned before anything moved")
	}
	approve(t, k, "ivan", "T-1", "executing")
	k.WaitStage("T-1", "done")
	if got := infra(); len(got) != 1 || got[0] != "⚠️ 集群 prod-a 使用率 80% 超过 80% · cluster prod-a utilization crossed 80%: 16/20 stores" {
		t.Fatalf("#infra after crossing: %q", got)
	}
	move("T-2", "N2", "prod-a") // 17/20: still over, no second warning
	if got := infra(); len(got) != 1 {
		t.Fatalf("warned again without falling back: %q", got)
	}
	// Three stores leave prod-a (to the next fullest): 14/20, re-armed.
	move("T-3", "PA1,PA2,PA3", "prod-b")
	if got := infra(); len(got) != 1 {
		t.Fatalf("moving out warned: %q", got)
	}
	move("T-4", "N3,N4", "prod-a") // 14 → 16: crosses again
	if got := infra(); len(got) != 2 {
		t.Fatalf("after crossing again: %q", got)
	}
	// A failed apply hook leaves the inventory as it was; retry works.
	ck.applied.mu.Lock()
	ck.applied.failOn = "N5"
	ck.applied.mu.Unlock()
	mustContain(t, bottest.Title(k.Say("alice", "/ops new cluster-change reason=grow stores=N5")), "T-5 submitted")
	approve(t, k, "ivan", "T-5", "executing")
	tk = k.WaitStage("T-5", "failed")
	mustContain(t, tk.Results["executing"].Error, "apply hook answered HTTP 500")
	if s, _ := k.Bot.Inventory().Store("N5"); s.Cluster != "" {
		t.Fatalf("a failed hook moved N5 to %s", s.Cluster)
	}
	ck.applied.mu.Lock()
	ck.applied.failOn = ""
	ck.applied.mu.Unlock()
	mustContain(t, bottest.Title(k.Say("alice", "/ops retry T-5")), "T-5 retry")
	k.WaitStage("T-5", "done")
	if s, _ := k.Bot.Inventory().Store("N5"); s.Cluster == "" {
		t.Fatal("retry did not move N5")
	}
}

// TestInventoryImportExport drives `opsbot inventory` against the running
// bot: rejected rows are reported with why, a second import changes
// nothing, and the export reads back what was imported.
func TestInventoryImportExport(t *testing.T) {
	ck := newClusterKit(t, "")
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "opsbot.yaml")
	yaml := strings.Replace(bottest.ConfigYAML(ck.k.Dir, ""), "listen: 127.0.0.1:0", "listen: "+ck.k.Bot.Addr(), 1)
	if err := os.WriteFile(cfgPath, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	clusters := filepath.Join(dir, "clusters.csv")
	stores := filepath.Join(dir, "stores.csv")
	os.WriteFile(clusters, []byte(`name,env,location,size,capacity,domain,ingress_ip,rancher_id,k8s_id,lb_id,k8s_ips,ob_ips,ob_vip,ob_user,tags,status
uat-a,uat,Putuo,3+3,,uat-a.ops.example.test,10.30.0.10,,,,10.30.0.11,,,,"east,retail",active
prod-a,prod,Ali,5+3,,prod-a.ops.example.test,10.20.0.10,,c-7f3a9,lb-1,,,,,,
bad-env,qa,Putuo,3+3,,,,,,,,,,,,
bad-size,uat,Putuo,7+7,,,,,,,,,,,,
`), 0o644)
	os.WriteFile(stores, []byte(`id,name,market,province,do,ownership,nodes,open,env,cluster
S-1,store 1,sh,SH,do-1,direct,2,true,uat,uat-a
S-2,store 2,hz,ZJ,do-2,DL,1,false,prod,prod-a
S-3,store 3,hz,ZJ,do-2,franchise,1,true,prod,prod-a
S-4,store 4,hz,ZJ,do-2,CL,x,true,prod,prod-a
S-5,store 5,hz,ZJ,do-2,CL,1,true,prod,nowhere
`), 0o644)
	run := func(args ...string) (int, string) {
		var out, errb strings.Builder
		code := bot.Main(args, nil, &out, &errb)
		return code, out.String() + errb.String()
	}
	code, out := run("inventory", "import", "-config", cfgPath, clusters, stores)
	if code != 1 {
		t.Fatalf("exit %d: %s", code, out)
	}
	for _, want := range []string{
		"imported 2 cluster(s) and 2 store(s); 0 unchanged; 5 rejected",
		`rejected stores.csv:5: nodes "x" is not a whole number`,
		`rejected clusters[2] bad-env: env "qa": one of sit, uat, pt, prod, dev, hd`,
		`rejected clusters[3] bad-size: size "7+7": one of 3+3, 5+3, 9+6, or give a capacity`,
		`rejected stores[2] S-3: ownership "franchise": one of direct, DL, CL`,
		"rejected stores[3] S-5: cluster nowhere is neither in the inventory nor in the import",
	} {
		mustContain(t, out, want)
	}
	mustContain(t, ck.say("bob", "/ops cluster show uat-a"), "Cluster uat-a: 1/10 = 10%")
	if _, out = run("inventory", "import", "-config", cfgPath, clusters, stores); !strings.Contains(out, "imported 0 cluster(s) and 0 store(s); 4 unchanged; 5 rejected") {
		t.Fatalf("second import: %s", out)
	}
	code, out = run("inventory", "export", "-config", cfgPath, "-format", "stores.csv")
	if code != 0 || out != "id,name,market,province,do,ownership,nodes,open,env,cluster\nS-1,store 1,sh,SH,do-1,direct,2,true,uat,uat-a\nS-2,store 2,hz,ZJ,do-2,DL,1,false,prod,prod-a\n" {
		t.Fatalf("export stores: %d %q", code, out)
	}
	code, out = run("inventory", "export", "-config", cfgPath, "-format", "json")
	var doc struct {
		Clusters []state.Cluster
		Stores   []state.StoreInfo
	}
	if err := json.Unmarshal([]byte(out), &doc); code != 0 || err != nil || len(doc.Clusters) != 2 || doc.Clusters[1].Name != "uat-a" ||
		strings.Join(doc.Clusters[1].Tags, ",") != "east,retail" || doc.Clusters[0].K8sID != "c-7f3a9" {
		t.Fatalf("export json: %v %s", err, out)
	}
	// The JSON export imports back as unchanged.
	jsonPath := filepath.Join(dir, "inv.json")
	os.WriteFile(jsonPath, []byte(out), 0o644)
	if code, out = run("inventory", "import", "-config", cfgPath, jsonPath); code != 0 || !strings.Contains(out, "imported 0 cluster(s) and 0 store(s); 4 unchanged; 0 rejected") {
		t.Fatalf("json round trip: %d %s", code, out)
	}
	// Stopped bot: the CLI opens the state file itself.
	ck.k.Bot.Stop()
	if code, out = run("inventory", "export", "-config", cfgPath, "-format", "clusters.csv"); code != 0 || !strings.Contains(out, "prod-a,prod,Ali,5+3,0,") {
		t.Fatalf("offline export: %d %s", code, out)
	}
}

const editableFlow = `flows:
  - name: change
    title: Change
    editable: true
    locks: ["svc:{service}"]
    fields:
      - {name: service, required: true}
      - {name: window, required: true}
      - {name: note}
    stages:
      - {name: review, kind: approval, roles: [techlead], approvals: 2, remind_every: 1h}
      - {name: apply, kind: action, executor: script, params: {command: deploy.sh}}
`

// TestEditStartsApprovalsOver: an approval given before an edit does not
// count after it, old cards are stale, locks follow the fields, and flows
// not marked editable refuse edits.
func TestEditStartsApprovalsOver(t *testing.T) {
	k := bottest.New(t, bottest.WithYAML(editableFlow))
	mustContain(t, bottest.Title(k.Say("alice", "/ops new change service=web window=tonight note=n")), "T-1 submitted")
	card := bottest.Card(k.Say("bob", "/ops show T-1"))
	approveBtn, _ := bottest.Button(card, "Approve")
	mustContain(t, bottest.Title(k.Say("bob", "/ops approve T-1")), "T-1 approve")
	if got := len(k.Ticket("T-1").Approvals); got != 1 {
		t.Fatalf("approvals %d", got)
	}
	mustContain(t, bottest.Title(k.Say("alice", "/ops edit T-1 window=tomorrow service=api note=")), "T-1 edited; approvals start over")
	tk := k.Ticket("T-1")
	if len(tk.Approvals) != 0 || tk.Fields["window"] != "tomorrow" || tk.Fields["note"] != "" || tk.Stage != "review" {
		t.Fatalf("after edit %+v", tk)
	}
	if len(tk.Locks) != 1 || tk.Locks[0] != "svc:api" {
		t.Fatalf("locks %v", tk.Locks)
	}
	// The old lock is free, the new one held.
	mustContain(t, bottest.Title(k.Say("carol", "/ops new change service=web window=x")), "T-2 submitted")
	mustContain(t, bottest.Title(k.Say("carol", "/ops new change service=api window=x")), "svc:api is locked by ticket T-1")
	// A card drawn before the edit is out of date.
	mustContain(t, bottest.Title(k.Click("bert", approveBtn.Value)), "this card is out of date")
	evs, _ := k.Bot.Store().Events(context.Background(), "T-1")
	last := evs[len(evs)-1]
	if last.Type != "edit" || last.Data["window"] != "tomorrow" || last.Data["service"] != "api" {
		t.Fatalf("edit event %+v", last)
	}
	mustContain(t, bottest.Title(k.Say("alice", "/ops edit T-1 window=tomorrow service=api")), "T-1 already has these values")
	// Reminders go on after the edit (they follow the stage it restarted).
	k.Clock.Advance(61 * time.Minute)
	if err := k.Bot.Engine().Tick(context.Background()); err != nil {
		t.Fatal(err)
	}
	k.Deliver()
	mustContain(t, strings.Join(k.Notices("bert"), "\n"), "T-1 提醒：仍在等待你审批 reminder")
	mustContain(t, bottest.Title(k.Say("alice", "/ops edit T-1 colour=red")), `unknown field "colour"`)
	approve(t, k, "bob", "T-1", "review")
	approve(t, k, "bert", "T-1", "apply")
	mustContain(t, bottest.Title(k.Say("alice", "/ops new golive service=pay version=v1 rollback_app=redeploy")), "T-3 submitted")
	mustContain(t, bottest.Title(k.Say("alice", "/ops edit T-3 version=v2")), "golive tickets cannot be edited; cancel and open a new one")
}

// TestClusterHooksAsScripts: the K8s look-up and the apply hook as
// scripts; utilization may go over 100% for a cluster the requester
// picks.
func TestClusterHooksAsScripts(t *testing.T) {
	named := dnstest.Start(t, "ops.example.test")
	t.Setenv("OPSBOT_DNS_TSIG_SECRET", named.Secret)
	k := bottest.New(t, bottest.WithYAML(fmt.Sprintf(`clusters:
  sizes: {"3+3": 2, "5+3": 20, "9+6": 40}
  k8s_lookup: {script: k8s-nodes.sh}
  apply: {script: apply-move.sh}
dns: {server: %q, zone: ops.example.test, key_name: %s}`, named.Addr, named.KeyName)))
	scripts := map[string]string{
		"k8s-nodes.sh":  "#!/bin/sh\ncase \"$OPSBOT_FIELD_K8S_ID\" in\n  c-7f3a9) echo 10.9.0.1 10.9.0.2 10.9.0.3 10.9.0.4 10.9.0.5 ;;\n  *) echo \"no such cluster $OPSBOT_FIELD_K8S_ID\" >&2; exit 3 ;;\nesac\n",
		"apply-move.sh": "#!/bin/sh\necho \"$OPSBOT_TICKET $OPSBOT_FIELD_STORES -> $OPSBOT_FIELD_TARGET\" >> \"$(dirname \"$0\")/../applied.log\"\necho rancher job 77 ok\n",
	}
	for name, body := range scripts {
		if err := os.WriteFile(filepath.Join(k.Dir, "scripts", name), []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	mustContain(t, bottest.Title(k.Say("alice", "/ops new cluster-create "+cloudProd)), "T-1 submitted")
	if got := k.Ticket("T-1").Fields["k8s_ips_lookup"]; got != "10.9.0.1,10.9.0.2,10.9.0.3,10.9.0.4,10.9.0.5" {
		t.Fatalf("script look-up: %q", got)
	}
	mustContain(t, bottest.Title(k.Say("alice", "/ops new cluster-create "+with(cloudProd, "k8s_id=c-nope", "name=prod-sh-03", "domain=prod-sh-03.ops.example.test"))),
		"k8s_id=c-nope 查询 K8s IP 失败 · looking up the K8s IPs of k8s_id c-nope failed: lookup script: exit code 3 no such cluster c-nope")

	if err := k.Bot.Inventory().Put(context.Background(), []state.Cluster{{Name: "uat-a", Env: "uat", Location: "Putuo", Size: "3+3", Status: "active"}},
		[]state.StoreInfo{uatStore("U1", "uat-a"), uatStore("U2", "uat-a"), uatStore("U3", "")}); err != nil {
		t.Fatal(err)
	}
	mustContain(t, bottest.Title(k.Say("alice", "/ops new cluster-change stores=U3 cluster=uat-a reason=full")), "T-2 submitted")
	if got := k.Ticket("T-2").Fields["utilization"]; got != "uat-a: 2 +1 → 3/2 = 150% ⚠️ 超过 over 80%" {
		t.Fatalf("over 100%%: %q", got)
	}
	approve(t, k, "ivan", "T-2", "executing")
	tk := k.WaitStage("T-2", "done")
	mustContain(t, tk.Results["executing"].Output, "rancher job 77 ok")
	log, _ := os.ReadFile(filepath.Join(k.Dir, "applied.log"))
	if string(log) != "T-2 U3 -> uat-a\n" {
		t.Fatalf("apply script saw %q", log)
	}
	mustContain(t, bottest.Title(k.Say("bob", "/ops cluster show uat-a")), "Cluster uat-a: 3/2 = 150%")
}

// TestClusterInventorySurvivesRestart: the inventory and the reservations
// of tickets in flight come back after a restart, and the ticket goes on.
func TestClusterInventorySurvivesRestart(t *testing.T) {
	dir, clock := t.TempDir(), bottest.NewClock()
	k := bottest.Start(t, dir, clock)
	if err := k.Bot.Inventory().Put(context.Background(), []state.Cluster{{Name: "uat-a", Env: "uat", Location: "Putuo", Size: "3+3", Capacity: 10, Status: "active"}},
		[]state.StoreInfo{uatStore("U1", "uat-a"), uatStore("U2", "")}); err != nil {
		t.Fatal(err)
	}
	mustContain(t, bottest.Title(k.Say("alice", "/ops new cluster-change stores=U2 cluster=uat-a reason=x")), "T-1 submitted")
	k.Bot.Stop()
	k = bottest.Start(t, dir, clock)
	mustContain(t, k.Say("ivan", "/ops cluster show uat-a")[0].Body, "in flight +1/-0 (T-1) → 2/10 = 20%")
	approve(t, k, "ivan", "T-1", "executing")
	k.WaitStage("T-1", "done")
	mustContain(t, bottest.Title(k.Say("ivan", "/ops cluster show uat-a")), "Cluster uat-a: 2/10 = 20%")
}
