// Package script is the "script" executor: it runs a configured command
// with the ticket's fields as environment variables, a timeout, and its
// output captured (truncated). The exit code decides success; configured
// exit codes (75, EX_TEMPFAIL, by default) mark a transient failure that
// the engine retries with backoff. Lines of the form
// "OPSBOT_SET key=value" on stdout record values on the ticket, such as
// the deployed commit that a rollback returns to.
package script

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
	"unicode/utf8"

	"opsbot/flows"
)

// Config configures the executor.
type Config struct {
	// Dir holds the scripts; a command is a path inside it, never outside.
	Dir string
	// OutputLimit bounds the captured output, in bytes.
	OutputLimit int
	// TransientExitCodes are retried by the engine.
	TransientExitCodes []int
	// Redact masks secrets in the output before it is cut to OutputLimit
	// (a secret cut in half would no longer be recognized).
	Redact func(string) string
	// WaitDelay is how long, after the script exits, its output pipes may
	// stay open (a background child holding stdout) before they are
	// closed; 0 means 2s.
	WaitDelay time.Duration
}

// Executor runs scripts.
type Executor struct{ cfg Config }

// New returns a script executor.
func New(cfg Config) *Executor {
	if cfg.OutputLimit <= 0 {
		cfg.OutputLimit = 4000
	}
	if cfg.Redact == nil {
		cfg.Redact = func(s string) string { return s }
	}
	if cfg.WaitDelay <= 0 {
		cfg.WaitDelay = 2 * time.Second
	}
	return &Executor{cfg: cfg}
}

var envName = regexp.MustCompile(`[^A-Z0-9_]`)

// Env returns the environment a script of this ticket sees.
func Env(in flows.ExecInput) []string {
	t := in.Ticket
	env := []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + os.Getenv("HOME"),
		"LANG=C.UTF-8",
		"OPSBOT_TICKET=" + t.ID,
		"OPSBOT_FLOW=" + t.Flow,
		"OPSBOT_STAGE=" + in.Stage,
		"OPSBOT_KIND=" + string(in.Kind),
		"OPSBOT_REQUESTER=" + t.Requester,
		"OPSBOT_OPERATOR=" + t.Operator,
		fmt.Sprintf("OPSBOT_ATTEMPT=%d", in.Attempt),
	}
	for k, v := range t.Fields {
		env = append(env, "OPSBOT_FIELD_"+envName.ReplaceAllString(strings.ToUpper(k), "_")+"="+v)
	}
	for k, v := range t.Outputs {
		env = append(env, "OPSBOT_OUT_"+envName.ReplaceAllString(strings.ToUpper(k), "_")+"="+v)
	}
	slices.Sort(env)
	return env
}

// Run runs params["command"] (split on spaces; the first word is a file in
// Dir) and reports its exit code and output.
func (x *Executor) Run(ctx context.Context, in flows.ExecInput) flows.ExecResult {
	argv := strings.Fields(in.Params["command"])
	if len(argv) == 0 {
		return flows.ExecResult{ExitCode: -1, Err: errors.New("stage has no command parameter")}
	}
	dir, err := filepath.Abs(x.cfg.Dir)
	if err != nil {
		return flows.ExecResult{ExitCode: -1, Err: err}
	}
	path := filepath.Join(dir, filepath.Clean("/"+argv[0]))
	if _, err := os.Stat(path); err != nil {
		return flows.ExecResult{ExitCode: -1, Err: fmt.Errorf("script %s not found in %s", argv[0], dir)}
	}
	cmd := exec.Command(path, argv[1:]...)
	cmd.Dir = dir
	cmd.Env = Env(in)
	// Own process group so a timeout kills the script and its children; and
	// die with the bot, so a killed bot leaves no orphan to race a retry.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	out := &limitBuffer{max: x.cfg.OutputLimit, redact: x.cfg.Redact}
	cmd.Stdout, cmd.Stderr = out, out
	// A script that exits but leaves a child holding its output would
	// otherwise keep Wait from returning until the stage times out.
	cmd.WaitDelay = x.cfg.WaitDelay
	if err := cmd.Start(); err != nil {
		return flows.ExecResult{ExitCode: -1, Err: fmt.Errorf("start %s: %v", argv[0], err)}
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var werr error
	timedOut := false
	select {
	case werr = <-done:
	case <-ctx.Done():
		timedOut = errors.Is(ctx.Err(), context.DeadlineExceeded)
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case werr = <-done:
		case <-time.After(5 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			werr = <-done
		}
	}
	res := flows.ExecResult{Output: out.String(), Set: parseSet(out.full.Bytes())}
	var ee *exec.ExitError
	switch {
	case timedOut:
		res.ExitCode, res.Err = -1, errors.New("超时 timed out")
	case ctx.Err() != nil:
		res.ExitCode, res.Err = -1, fmt.Errorf("stopped: %w", ctx.Err())
	case werr == nil, errors.Is(werr, exec.ErrWaitDelay):
		// ErrWaitDelay: the script exited 0; a child it left behind kept
		// the output open and was cut off.
		res.OK = true
	case errors.As(werr, &ee):
		res.ExitCode = ee.ExitCode()
		res.Err = flows.TransientIf(slices.Contains(x.cfg.TransientExitCodes, res.ExitCode), fmt.Errorf("exit code %d", res.ExitCode))
	default:
		res.ExitCode, res.Err = -1, werr
	}
	return res
}

var setLine = regexp.MustCompile(`^OPSBOT_SET ([a-z][a-z0-9_]{0,39})=(.{0,500})$`)

func parseSet(out []byte) map[string]string {
	var set map[string]string
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if m := setLine.FindStringSubmatch(strings.TrimRight(sc.Text(), "\r")); m != nil {
			if set == nil {
				set = map[string]string{}
			}
			set[m[1]] = m[2]
		}
	}
	return set
}

// limitBuffer keeps the first max bytes for display (and up to 64 KiB for
// OPSBOT_SET lines), counting the rest.
type limitBuffer struct {
	mu      sync.Mutex
	max     int
	redact  func(string) string
	full    bytes.Buffer
	dropped int
}

func (b *limitBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	room := 64<<10 - b.full.Len()
	if room > 0 {
		b.full.Write(p[:min(room, len(p))])
	}
	if len(p) > room {
		b.dropped += len(p) - max(room, 0)
	}
	return len(p), nil
}

func (b *limitBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.full.String()
	lines := strings.Split(s, "\n")
	kept := lines[:0]
	for _, l := range lines {
		if !strings.HasPrefix(l, "OPSBOT_SET ") {
			kept = append(kept, l)
		}
	}
	s = b.redact(strings.Join(kept, "\n"))
	extra := b.dropped
	if len(s) > b.max {
		cut := b.max
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		extra += len(s) - cut
		s = s[:cut]
	}
	if extra > 0 {
		s += fmt.Sprintf("\n… (%d bytes of output cut 输出已截断)", extra)
	}
	return s
}
