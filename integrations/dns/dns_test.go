package dns_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"opsbot/flows"
	"opsbot/integrations/dns"
	"opsbot/integrations/dns/dnstest"
	"opsbot/state"
)

func ticket(domain, ip string) state.Ticket {
	return state.Ticket{ID: "T-1", Flow: "cluster-create", Fields: map[string]string{"name": "prod-sh-01", "domain": domain, "ingress_ip": ip}}
}

func TestUpdateThroughTSIGThenResolves(t *testing.T) {
	n := dnstest.Start(t, "ops.example.test")
	t.Setenv("TEST_TSIG", n.Secret)
	x := dns.New(dns.Config{Server: n.Addr, Zone: n.Zone, KeyName: n.KeyName, KeySecretEnv: "TEST_TSIG", Resolver: n.Addr})
	ctx := context.Background()
	tk := ticket("prod-sh-01.ops.example.test", "10.1.2.3")

	r := x.Run(ctx, flows.ExecInput{Ticket: tk, Kind: "wait", Params: map[string]string{"op": "resolve"}})
	if r.OK || !strings.Contains(fmt.Sprint(r.Err), "does not resolve to 10.1.2.3 yet") {
		t.Fatalf("before the update: %+v", r)
	}
	r = x.Run(ctx, flows.ExecInput{Ticket: tk, Kind: "action", Params: map[string]string{"op": "update"}})
	if !r.OK || r.Set["dns_request"] != "DNS-prod-sh-01" {
		t.Fatalf("update: %+v\n%s", r, n.Log())
	}
	got, err := n.Lookup("prod-sh-01.ops.example.test")
	if err != nil || len(got) != 1 || got[0] != "10.1.2.3" {
		t.Fatalf("BIND has %v, %v", got, err)
	}
	r = x.Run(ctx, flows.ExecInput{Ticket: tk, Kind: "wait", Params: map[string]string{"op": "resolve"}})
	if !r.OK {
		t.Fatalf("resolve: %+v", r)
	}
	// A repeat (a retry) replaces the record rather than adding a second.
	tk.Fields["ingress_ip"] = "10.1.2.4"
	if r = x.Run(ctx, flows.ExecInput{Ticket: tk, Params: map[string]string{"op": "update"}}); !r.OK {
		t.Fatal(r.Err)
	}
	if got, _ := n.Lookup("prod-sh-01.ops.example.test"); len(got) != 1 || got[0] != "10.1.2.4" {
		t.Fatalf("after the repeat BIND has %v", got)
	}
}

func TestWrongKeyIsRefusedClearly(t *testing.T) {
	n := dnstest.Start(t, "ops.example.test")
	t.Setenv("TEST_TSIG", dnstest.NewSecret())
	x := dns.New(dns.Config{Server: n.Addr, Zone: n.Zone, KeyName: n.KeyName, KeySecretEnv: "TEST_TSIG", Resolver: n.Addr})
	r := x.Run(context.Background(), flows.ExecInput{Ticket: ticket("c1.ops.example.test", "10.0.0.9"), Params: map[string]string{"op": "update"}})
	if r.OK || !strings.Contains(fmt.Sprint(r.Err), "DNS 更新被拒绝 DNS-prod-sh-01") || !strings.Contains(fmt.Sprint(r.Err), "NOTAUTH") || !strings.Contains(fmt.Sprint(r.Err), "check the TSIG key") {
		t.Fatalf("wrong key: %+v", r)
	}
	if got, _ := n.Lookup("c1.ops.example.test"); len(got) != 0 {
		t.Fatalf("a refused update left %v", got)
	}
	// Outside the zone: refused before anything is sent.
	r = x.Run(context.Background(), flows.ExecInput{Ticket: ticket("c1.other.test", "10.0.0.9"), Params: map[string]string{"op": "update"}})
	if r.OK || !strings.Contains(fmt.Sprint(r.Err), "not in the zone") {
		t.Fatalf("outside the zone: %+v", r)
	}
}
