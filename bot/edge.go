package bot

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"opsbot/bot/endpoint"
	"opsbot/state"
)

// maxRefusalReason bounds what a refusal entry keeps of its reason: a
// refused request may carry megabytes of attacker-chosen text (an XML
// element name, a header), none of which belongs in the audit log.
const maxRefusalReason = 160

// maxRefusalSources bounds the sampler's memory; refusals from sources
// beyond it are counted together.
const maxRefusalSources = 1024

// refusals writes refused requests to the audit log and the log, bounded
// and sampled: per source (platform, client address, action, reason
// class) the first refusal of a window is written with a short reason, the
// rest of the window only counted, and the count written as one entry
// when the window ends. A flood of refusals costs one entry per source
// and window, not one per request.
type refusals struct {
	audit  *auditWriter
	log    *slog.Logger
	now    func() time.Time
	window time.Duration
	redact func(string) string
	// count counts each refusal by platform and class (metrics).
	count func(platform, class string)

	mu      sync.Mutex
	sources map[string]*refusalSource
}

type refusalSource struct {
	r       endpoint.Refusal
	since   time.Time
	counted int
}

func newRefusals(audit *auditWriter, log *slog.Logger, now func() time.Time, window time.Duration, redact func(string) string) *refusals {
	return &refusals{audit: audit, log: log, now: now, window: window, redact: redact, sources: map[string]*refusalSource{}}
}

// Refuse records one refusal.
func (s *refusals) Refuse(ctx context.Context, r endpoint.Refusal) {
	if s.count != nil {
		s.count(r.Platform, r.Class)
	}
	r.Remote = endpoint.Clip(r.Remote, 64)
	r.Action = endpoint.Clip(r.Action, 100)
	r.Reason = endpoint.Clip(s.redact(r.Reason), maxRefusalReason)
	now := s.now()
	key := r.Platform + "|" + r.Remote + "|" + r.Action + "|" + r.Class
	s.mu.Lock()
	src, ok := s.sources[key]
	if !ok && len(s.sources) >= maxRefusalSources {
		key = r.Platform + "|overflow|" + r.Class
		src, ok = s.sources[key]
		r.Remote, r.Action = "(many sources)", "(many)"
	}
	if ok && now.Sub(src.since) < s.window {
		src.counted++
		s.mu.Unlock()
		return
	}
	var summary *refusalSource
	if ok && src.counted > 0 {
		c := *src
		summary = &c
	}
	s.sources[key] = &refusalSource{r: r, since: now}
	s.mu.Unlock()
	if summary != nil {
		s.writeSummary(ctx, summary, now)
	}
	s.log.Warn("refused a request", "refused_platform", r.Platform, "remote", r.Remote, "action", r.Action, "class", r.Class, "reason", r.Reason)
	s.audit.Add(ctx, state.AuditEntry{At: now, User: "unknown", Platform: r.Platform, Action: "request refused",
		Args: r.Action + " from " + r.Remote, Result: "refused: " + r.Class + ": " + r.Reason})
}

// Flush writes the counts of windows that ended and forgets their sources.
func (s *refusals) Flush(ctx context.Context, all bool) {
	now := s.now()
	var done []*refusalSource
	s.mu.Lock()
	for k, src := range s.sources {
		if all || now.Sub(src.since) >= s.window {
			if src.counted > 0 {
				done = append(done, src)
			}
			delete(s.sources, k)
		}
	}
	s.mu.Unlock()
	for _, src := range done {
		s.writeSummary(ctx, src, now)
	}
}

func (s *refusals) writeSummary(ctx context.Context, src *refusalSource, now time.Time) {
	r := src.r
	res := fmt.Sprintf("refused: %s: %d more like this since %s (counted, not written one by one)", r.Class, src.counted,
		src.since.UTC().Format(time.RFC3339))
	s.log.Warn("refused requests (counted)", "refused_platform", r.Platform, "remote", r.Remote, "action", r.Action, "class", r.Class, "count", src.counted)
	s.audit.Add(ctx, state.AuditEntry{At: now, User: "unknown", Platform: r.Platform, Action: "requests refused",
		Args: r.Action + " from " + r.Remote, Result: res})
}

// run flushes ended windows until ctx ends, then everything.
func (s *refusals) run(ctx context.Context) {
	t := time.NewTicker(max(s.window/4, 50*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			s.Flush(context.WithoutCancel(ctx), true)
			return
		case <-t.C:
			s.Flush(ctx, false)
		}
	}
}

// loopbackHosts are the Host header names the local listener answers to.
var loopbackHosts = map[string]bool{"127.0.0.1": true, "localhost": true, "::1": true}

// guard protects the loopback listener from other sites and from DNS
// rebinding: every request must name a loopback host (a rebinding page's
// requests carry its own host name); a request a browser marks as coming
// from another site (Origin, Sec-Fetch-Site) is refused; a request that
// changes something must be JSON, which a page on another site cannot
// send without a CORS preflight this listener never grants.
func guard(next http.Handler, refuse endpoint.Refuser) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		deny := func(code int, class, reason string) {
			refuse(r.Context(), endpoint.Refusal{Platform: "local", Remote: endpoint.RemoteHost(r), Action: r.Method + " " + r.URL.Path,
				Class: class, Reason: reason})
			writeJSONReply(w, code, map[string]string{"error": reason})
		}
		host := r.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		host = strings.Trim(host, "[]")
		if !loopbackHosts[strings.ToLower(host)] {
			deny(http.StatusMisdirectedRequest, "host", fmt.Sprintf("Host %q is not this loopback listener; use http://127.0.0.1", endpoint.Clip(r.Host, 64)))
			return
		}
		if o := r.Header.Get("Origin"); o != "" && o != "http://"+r.Host {
			deny(http.StatusForbidden, "origin", fmt.Sprintf("Origin %q is another site; requests from other pages are refused", endpoint.Clip(o, 64)))
			return
		}
		if site := r.Header.Get("Sec-Fetch-Site"); site == "cross-site" || site == "same-site" {
			deny(http.StatusForbidden, "origin", "Sec-Fetch-Site "+site+": requests from other pages are refused")
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
			if err != nil || mt != "application/json" {
				deny(http.StatusUnsupportedMediaType, "content_type",
					fmt.Sprintf("Content-Type %q: send application/json", endpoint.Clip(r.Header.Get("Content-Type"), 64)))
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// minAdminToken is the shortest admin token accepted.
const minAdminToken = 16

// adminAuth lets a request through only with "Authorization: Bearer
// <token>" matching the admin token (compared in constant time over
// hashes, so neither content nor length leaks). With no token configured
// the admin endpoints are off.
func adminAuth(token string, tokenEnv string, next http.Handler, refuse endpoint.Refuser) http.Handler {
	want := sha256.Sum256([]byte(token))
	on := len(token) >= minAdminToken
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		deny := func(code int, class, reason string) {
			refuse(r.Context(), endpoint.Refusal{Platform: "admin", Remote: endpoint.RemoteHost(r), Action: r.Method + " " + r.URL.Path,
				Class: class, Reason: reason})
			writeJSONReply(w, code, map[string]string{"error": reason})
		}
		if !on {
			deny(http.StatusForbidden, "off", fmt.Sprintf("the admin API is off: set %s (16+ characters) for the bot and the CLI", tokenEnv))
			return
		}
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		have := sha256.Sum256([]byte(got))
		if !ok || subtle.ConstantTimeCompare(have[:], want[:]) != 1 {
			deny(http.StatusUnauthorized, "token", fmt.Sprintf("missing or wrong admin token: send Authorization: Bearer $%s", tokenEnv))
			return
		}
		next.ServeHTTP(w, r)
	})
}
