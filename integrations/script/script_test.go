package script_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"opsbot/flows"
	"opsbot/integrations/script"
	"opsbot/state"
)

func setup(t *testing.T, name, body string) *script.Executor {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	return script.New(script.Config{Dir: dir, OutputLimit: 200, TransientExitCodes: []int{75}})
}

func input(cmd string) flows.ExecInput {
	return flows.ExecInput{Ticket: state.Ticket{ID: "T-9", Flow: "golive", Requester: "alice",
		Fields: map[string]string{"service": "payments", "rollback-app": "x y"}, Outputs: map[string]string{"deployed_version": "v1"}},
		Stage: "deploy", Kind: "action", Params: map[string]string{"command": cmd}, Attempt: 2}
}

func TestEnvOutputAndSet(t *testing.T) {
	x := setup(t, "run.sh", `#!/bin/sh
echo "$OPSBOT_TICKET $OPSBOT_FIELD_SERVICE $OPSBOT_FIELD_ROLLBACK_APP $OPSBOT_OUT_DEPLOYED_VERSION $OPSBOT_ATTEMPT $1"
echo "OPSBOT_SET deployed_commit=abc123"
`)
	res := x.Run(context.Background(), input("run.sh first"))
	if !res.OK || res.Set["deployed_commit"] != "abc123" {
		t.Fatalf("%+v", res)
	}
	if strings.TrimSpace(res.Output) != "T-9 payments x y v1 2 first" {
		t.Fatalf("output %q", res.Output)
	}
}

func TestExitCodesTimeoutAndTruncation(t *testing.T) {
	x := setup(t, "run.sh", `#!/bin/sh
case "$1" in
  fail) echo broken; exit 3;;
  temp) exit 75;;
  slow) sleep 30 & wait;;
  loud) i=0; while [ $i -lt 100 ]; do echo "line $i of noisy output"; i=$((i+1)); done;;
esac
`)
	if r := x.Run(context.Background(), input("run.sh fail")); r.OK || r.ExitCode != 3 || flows.IsTransient(r.Err) || !strings.Contains(r.Output, "broken") {
		t.Fatalf("fail: %+v", r)
	}
	if r := x.Run(context.Background(), input("run.sh temp")); r.OK || !flows.IsTransient(r.Err) {
		t.Fatalf("temp: %+v", r)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	r := x.Run(ctx, input("run.sh slow"))
	if r.OK || !strings.Contains(fmt.Sprint(r.Err), "timed out") || time.Since(start) > 10*time.Second {
		t.Fatalf("slow: %+v after %v", r, time.Since(start))
	}
	r = x.Run(context.Background(), input("run.sh loud"))
	if !r.OK || len(r.Output) > 300 || !strings.Contains(r.Output, "bytes of output cut") {
		t.Fatalf("loud: %d bytes %q", len(r.Output), r.Output)
	}
}

func TestCommandCannotLeaveTheScriptsDir(t *testing.T) {
	x := setup(t, "ok.sh", "#!/bin/sh\necho ok\n")
	r := x.Run(context.Background(), input("../../../../bin/sh -c id"))
	if r.OK || !strings.Contains(fmt.Sprint(r.Err), "not found in") {
		t.Fatalf("escaped the scripts dir: %+v", r)
	}
}

// TestBackgroundChildHoldingStdoutIsNotATimeout is finding 10: a script
// that exits 0 but leaves a child holding its stdout used to be reported
// as timed out, since Wait waited for the pipe to close.
func TestBackgroundChildHoldingStdoutIsNotATimeout(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "spawn.sh"), []byte("#!/bin/sh\necho started\nsleep 30 &\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	x := script.New(script.Config{Dir: dir, WaitDelay: 200 * time.Millisecond})
	// The stage's own timeout is long; without WaitDelay the run ends only
	// when it expires, as a timeout.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	r := x.Run(ctx, input("spawn.sh"))
	if !r.OK || r.Err != nil || !strings.Contains(r.Output, "started") {
		t.Fatalf("a script that exited 0 is reported %+v", r)
	}
	if ctx.Err() != nil {
		t.Fatal("the run waited for the stage timeout")
	}
}

// TestOutputIsRedactedBeforeItIsCut is part of finding 5: a configured
// secret straddling the output limit leaked its first characters because
// the output was cut first and redacted after.
func TestOutputIsRedactedBeforeItIsCut(t *testing.T) {
	dir := t.TempDir()
	secret := "S3cr3tValueThatStraddlesTheCut"
	body := "#!/bin/sh\nprintf '%0190d' 0\necho ' " + secret + " and more output after it'\n"
	if err := os.WriteFile(filepath.Join(dir, "leak.sh"), []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	redact := func(s string) string { return strings.ReplaceAll(s, secret, "[REDACTED]") }
	x := script.New(script.Config{Dir: dir, OutputLimit: 200, Redact: redact})
	r := x.Run(context.Background(), input("leak.sh"))
	if strings.Contains(r.Output, secret[:6]) {
		t.Fatalf("the start of the secret leaked past the cut: %q", r.Output[180:])
	}
	if !r.OK {
		t.Fatalf("%+v", r)
	}
}
