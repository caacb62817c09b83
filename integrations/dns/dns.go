// Package dns is the "dns" executor: it files a cluster's DNS record
// (request title DNS-<cluster name>) through an RFC 2136 dynamic update
// signed with TSIG, or through a configured script, and checks through a
// resolver whether the name resolves yet.
package dns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"time"

	mdns "github.com/miekg/dns"

	"opsbot/flows"
)

// Config configures the executor.
type Config struct {
	// Server is the primary name server for updates, host:port.
	Server string
	// Zone is the zone updated, e.g. "ops.example.com".
	Zone string
	// KeyName, KeySecretEnv and Algorithm are the TSIG key: the secret
	// (base64) is read from the environment at each update, so a fixed
	// key needs no restart.
	KeyName      string
	KeySecretEnv string
	Algorithm    string // hmac-sha256 (default), hmac-sha512, hmac-sha1
	// Resolver answers the resolution check, host:port.
	Resolver string
	TTL      uint32
	// Script files the record instead of an RFC 2136 update (a ticket to
	// the DNS team, a provider's CLI); it runs through the script
	// executor with OPSBOT_FIELD_* and OPSBOT_DNS_TITLE in params.
	Script  string
	Scripts flows.Executor
	Timeout time.Duration
}

// Executor is the dns executor. Params["op"] is "update" (action) or
// "resolve" (wait); the record's name and address come from the ticket
// fields named by Params["name_field"] (domain) and Params["ip_field"]
// (ingress_ip), and the title from Params["title_field"] (name).
type Executor struct{ cfg Config }

// New returns the executor.
func New(cfg Config) *Executor {
	if cfg.Algorithm == "" {
		cfg.Algorithm = "hmac-sha256"
	}
	if cfg.TTL == 0 {
		cfg.TTL = 300
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	return &Executor{cfg: cfg}
}

func param(p map[string]string, k, def string) string {
	if v := p[k]; v != "" {
		return v
	}
	return def
}

// Title is the DNS request's title for a cluster.
func Title(cluster string) string { return "DNS-" + cluster }

// Run implements flows.Executor.
func (x *Executor) Run(ctx context.Context, in flows.ExecInput) flows.ExecResult {
	f := in.Ticket.Fields
	name := strings.TrimSuffix(strings.ToLower(f[param(in.Params, "name_field", "domain")]), ".")
	ip := f[param(in.Params, "ip_field", "ingress_ip")]
	title := Title(f[param(in.Params, "title_field", "name")])
	if name == "" || net.ParseIP(ip) == nil {
		return flows.ExecResult{ExitCode: -1, Err: fmt.Errorf("%s: the ticket has no domain or no valid ingress IP", title)}
	}
	switch in.Params["op"] {
	case "update":
		if x.cfg.Script != "" {
			p := map[string]string{"command": x.cfg.Script}
			r := x.cfg.Scripts.Run(ctx, flows.ExecInput{Ticket: in.Ticket, Stage: in.Stage, Kind: in.Kind, Params: p, Attempt: in.Attempt})
			r.Output = strings.TrimSpace(title + ": " + r.Output)
			return withRequest(r, title)
		}
		return withRequest(x.update(ctx, title, name, ip), title)
	case "resolve":
		return x.resolve(ctx, title, name, ip)
	}
	return flows.ExecResult{ExitCode: -1, Err: fmt.Errorf("dns executor: unknown op %q (update or resolve)", in.Params["op"])}
}

func withRequest(r flows.ExecResult, title string) flows.ExecResult {
	if r.OK {
		r.Set = map[string]string{"dns_request": title}
	}
	return r
}

func (x *Executor) algorithm() (string, error) {
	switch strings.ToLower(x.cfg.Algorithm) {
	case "hmac-sha256":
		return mdns.HmacSHA256, nil
	case "hmac-sha512":
		return mdns.HmacSHA512, nil
	case "hmac-sha1":
		return mdns.HmacSHA1, nil
	}
	return "", fmt.Errorf("unsupported TSIG algorithm %q (hmac-sha256, hmac-sha512 or hmac-sha1)", x.cfg.Algorithm)
}

// update replaces the name's A (or AAAA) records with ip, signed with
// TSIG. Replacing makes a repeat harmless.
func (x *Executor) update(ctx context.Context, title, name, ip string) flows.ExecResult {
	zone := mdns.Fqdn(strings.TrimSuffix(x.cfg.Zone, "."))
	fqdn := mdns.Fqdn(name)
	if !mdns.IsSubDomain(zone, fqdn) {
		return flows.ExecResult{ExitCode: -1, Err: fmt.Errorf("%s: %s is not in the zone %s", title, name, zone)}
	}
	rtype := "A"
	if net.ParseIP(ip).To4() == nil {
		rtype = "AAAA"
	}
	rr, err := mdns.NewRR(fmt.Sprintf("%s %d IN %s %s", fqdn, x.cfg.TTL, rtype, ip))
	if err != nil {
		return flows.ExecResult{ExitCode: -1, Err: fmt.Errorf("%s: %v", title, err)}
	}
	m := new(mdns.Msg)
	m.SetUpdate(zone)
	m.RemoveRRset([]mdns.RR{rr})
	m.Insert([]mdns.RR{rr})
	c := &mdns.Client{Net: "tcp", Timeout: x.cfg.Timeout}
	if x.cfg.KeyName != "" {
		alg, err := x.algorithm()
		if err != nil {
			return flows.ExecResult{ExitCode: -1, Err: fmt.Errorf("%s: %w", title, err)}
		}
		secret := os.Getenv(x.cfg.KeySecretEnv)
		if secret == "" {
			return flows.ExecResult{ExitCode: -1, Err: fmt.Errorf("%s: the TSIG secret is not set (environment variable %s)", title, x.cfg.KeySecretEnv)}
		}
		key := mdns.Fqdn(x.cfg.KeyName)
		c.TsigSecret = map[string]string{key: secret}
		m.SetTsig(key, alg, 300, time.Now().Unix())
	}
	resp, _, err := c.ExchangeContext(ctx, m, x.cfg.Server)
	if err != nil && (resp == nil || resp.Rcode == mdns.RcodeSuccess) {
		msg := err.Error()
		if errors.Is(err, mdns.ErrSig) || errors.Is(err, mdns.ErrAuth) {
			msg = "the server's answer failed TSIG verification (wrong key?): " + msg
		}
		return flows.ExecResult{ExitCode: -1, Err: flows.TransientIf(isTimeout(err), fmt.Errorf("DNS 更新失败 %s: update of %s at %s failed: %s", title, name, x.cfg.Server, msg))}
	}
	if resp.Rcode != mdns.RcodeSuccess {
		why := mdns.RcodeToString[resp.Rcode]
		if t := resp.IsTsig(); t != nil && t.Error != mdns.RcodeSuccess {
			why += " (TSIG " + mdns.RcodeToString[int(t.Error)] + ")"
		}
		advice := "check the zone's update policy"
		if resp.Rcode == mdns.RcodeNotAuth || resp.Rcode == mdns.RcodeRefused {
			advice = fmt.Sprintf("check the TSIG key (dns.key_name %s, secret in %s) and the zone's update-policy", x.cfg.KeyName, x.cfg.KeySecretEnv)
		}
		return flows.ExecResult{ExitCode: resp.Rcode, Err: fmt.Errorf("DNS 更新被拒绝 %s: %s refused the update of %s: %s; %s", title, x.cfg.Server, name, why, advice)}
	}
	return flows.ExecResult{OK: true, Output: fmt.Sprintf("%s: %s %s %s 已提交 updated at %s", title, name, rtype, ip, x.cfg.Server)}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// resolve asks the resolver whether name has ip yet.
func (x *Executor) resolve(ctx context.Context, title, name, ip string) flows.ExecResult {
	qtype := mdns.TypeA
	if net.ParseIP(ip).To4() == nil {
		qtype = mdns.TypeAAAA
	}
	m := new(mdns.Msg)
	m.SetQuestion(mdns.Fqdn(name), qtype)
	m.RecursionDesired = true
	c := &mdns.Client{Timeout: x.cfg.Timeout}
	resp, _, err := c.ExchangeContext(ctx, m, x.cfg.Resolver)
	if err != nil {
		return flows.ExecResult{ExitCode: -1, Err: fmt.Errorf("%s: resolver %s: %v", title, x.cfg.Resolver, err)}
	}
	var got []string
	for _, rr := range resp.Answer {
		switch r := rr.(type) {
		case *mdns.A:
			got = append(got, r.A.String())
		case *mdns.AAAA:
			got = append(got, r.AAAA.String())
		}
	}
	if slices.Contains(got, net.ParseIP(ip).String()) {
		return flows.ExecResult{OK: true, Output: fmt.Sprintf("%s: %s 已解析 resolves to %s", title, name, strings.Join(got, ", "))}
	}
	now := mdns.RcodeToString[resp.Rcode]
	if len(got) > 0 {
		now = strings.Join(got, ", ")
	}
	return flows.ExecResult{ExitCode: 1, Err: fmt.Errorf("%s: %s 尚未解析到 %s · does not resolve to %s yet (resolver %s says %s)", title, name, ip, ip, x.cfg.Resolver, now)}
}
