package bot

// `opsbot gate`: a CI step that opens a ticket through the API and waits
// for people to decide. Exit 0 when the ticket is done; 1 when it was
// rejected, cancelled, expired or failed; 3 on timeout; 4 when the API
// refused or could not be reached; 2 on a usage mistake.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

// Gate's exit codes.
const (
	GateDone    = 0
	GateStopped = 1
	GateUsage   = 2
	GateTimeout = 3
	GateError   = 4
)

// gateKey is the Idempotency-Key of this CI job: the same job run again
// (a retried step) finds its ticket instead of opening a second one.
func gateKey() string {
	for _, env := range [][]string{
		{"CI_PIPELINE_ID", "CI_JOB_NAME"}, // GitLab CI
		{"BUILD_TAG"},                     // Jenkins
		{"GITHUB_RUN_ID", "GITHUB_RUN_ATTEMPT", "GITHUB_JOB"},
	} {
		var parts []string
		for _, e := range env {
			if v := os.Getenv(e); v != "" {
				parts = append(parts, v)
			}
		}
		if len(parts) == len(env) {
			return "gate-" + strings.Join(parts, "-")
		}
	}
	var b [12]byte
	_, _ = rand.Read(b[:])
	return "gate-" + hex.EncodeToString(b[:])
}

// GateMain is `opsbot gate`.
func GateMain(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("opsbot gate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	base := fs.String("url", os.Getenv("OPSBOT_URL"), "the API's address, e.g. https://opsbot.example.com (default: $OPSBOT_URL)")
	tokenEnv := fs.String("token-env", "OPSBOT_TOKEN", "the environment variable holding the API token")
	flow := fs.String("flow", "", "the flow to open, e.g. golive")
	wait := fs.Bool("wait", false, "wait until the ticket closes (without it: print the ticket and exit 0)")
	timeout := fs.Duration("timeout", 4*time.Hour, "how long to wait for people to decide")
	key := fs.String("key", "", "Idempotency-Key (default: from the CI job: CI_PIPELINE_ID+CI_JOB_NAME, BUILD_TAG, GITHUB_RUN_ID...)")
	if err := fs.Parse(args); err != nil {
		return GateUsage
	}
	usage := func(msg string) int {
		fmt.Fprintf(stderr, "opsbot gate: %s\nexample: OPSBOT_URL=https://opsbot.example.com opsbot gate --flow golive --wait service=payments version=v1.4.2\n", msg)
		return GateUsage
	}
	if *base == "" {
		return usage("no API address: set OPSBOT_URL or --url")
	}
	if *flow == "" {
		return usage("name the flow with --flow")
	}
	token := os.Getenv(*tokenEnv)
	if token == "" {
		return usage(fmt.Sprintf("no API token in $%s (opsbot token create makes one)", *tokenEnv))
	}
	fields := map[string]string{}
	for _, a := range fs.Args() {
		k, v, ok := strings.Cut(a, "=")
		if !ok || k == "" {
			return usage(fmt.Sprintf("%q is not a field: write name=value, e.g. version=v1.4.2", a))
		}
		fields[k] = v
	}
	if *key == "" {
		*key = gateKey()
	}
	g := &gateClient{base: strings.TrimRight(*base, "/"), token: token, http: &http.Client{Timeout: maxWait + 30*time.Second}, out: stderr}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	body, _ := json.Marshal(createRequest{Flow: *flow, Fields: fields})
	var t TicketJSON
	if err := g.retry(ctx, func() error { return g.do(ctx, http.MethodPost, "/api/v1/tickets", body, *key, &t) }); err != nil {
		fmt.Fprintln(stderr, "opsbot gate:", err)
		return GateError
	}
	fmt.Fprintf(stdout, "%s %s: %s (%s)%s\n", t.ID, t.Flow, t.Title, t.StageTitle, linkOf(t))
	if !*wait {
		return GateDone
	}
	for t.Open {
		var w TicketJSON
		err := g.retry(ctx, func() error {
			return g.do(ctx, http.MethodGet, fmt.Sprintf("/api/v1/tickets/%s/wait?timeout=60s&after_version=%d", url.PathEscape(t.ID), t.Version), nil, "", &w)
		})
		if ctx.Err() != nil {
			fmt.Fprintf(stdout, "%s is still at %s after %s: giving up (the ticket stays open; cancel it in chat with /ops cancel %s)\n",
				t.ID, t.StageTitle, *timeout, t.ID)
			return GateTimeout
		}
		if err != nil {
			fmt.Fprintln(stderr, "opsbot gate:", err)
			return GateError
		}
		if w.StageTitle != t.StageTitle && w.Open {
			fmt.Fprintf(stdout, "%s → %s\n", t.ID, w.StageTitle)
		}
		t = w
	}
	var who []string
	for _, a := range t.Approvals {
		who = append(who, a.Display)
	}
	if t.Stage == "done" {
		fmt.Fprintf(stdout, "%s %s: approved by %s\n", t.ID, t.StageTitle, strings.Join(who, ", "))
		return GateDone
	}
	msg := fmt.Sprintf("%s %s", t.ID, t.StageTitle)
	if d := t.DecidedBy; d != nil {
		msg += " by " + d.Display
		if d.Comment != "" {
			msg += ": " + d.Comment
		}
	}
	fmt.Fprintln(stdout, msg)
	return GateStopped
}

func linkOf(t TicketJSON) string {
	s := "; in chat: /ops show " + t.ID
	if t.Link != "" {
		s = " " + t.Link + s
	}
	return s
}

type gateClient struct {
	base, token string
	http        *http.Client
	out         io.Writer
}

// errFinal is a refusal retrying will not change.
type errFinal struct{ msg string }

func (e errFinal) Error() string { return e.msg }

// do sends one request and decodes the answer into out.
func (g *gateClient) do(ctx context.Context, method, path string, body []byte, key string, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, g.base+path, bytes.NewReader(body))
	if err != nil {
		return errFinal{err.Error()}
	}
	req.Header.Set("Authorization", "Bearer "+g.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	resp, err := g.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode >= 300 {
		var e struct {
			Error apiError `json:"error"`
		}
		_ = json.Unmarshal(raw, &e)
		msg := fmt.Sprintf("%s %s: %d %s", method, path, resp.StatusCode, e.Error.Message)
		if e.Error.Hint != "" {
			msg += " (" + e.Error.Hint + ")"
		}
		for f, why := range e.Error.Fields {
			msg += fmt.Sprintf("; %s: %s", f, why)
		}
		if resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests {
			return errors.New(msg)
		}
		return errFinal{msg}
	}
	return json.Unmarshal(raw, out)
}

// retry repeats fn on transport errors and 5xx/429 with backoff until ctx
// ends; a refusal is final. The create carries its Idempotency-Key, so a
// retry after a lost answer finds the same ticket.
func (g *gateClient) retry(ctx context.Context, fn func() error) error {
	wait := time.Second
	for {
		err := fn()
		var fe errFinal
		if err == nil || errors.As(err, &fe) {
			return err
		}
		fmt.Fprintf(g.out, "opsbot gate: %v; trying again in %s\n", err, wait)
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
		wait = min(2*wait, 30*time.Second)
	}
}
