package script_test

import (
	"context"
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
	if r := x.Run(context.Background(), input("run.sh fail")); r.OK || r.ExitCode != 3 || r.Transient || !strings.Contains(r.Output, "broken") {
		t.Fatalf("fail: %+v", r)
	}
	if r := x.Run(context.Background(), input("run.sh temp")); r.OK || !r.Transient {
		t.Fatalf("temp: %+v", r)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	r := x.Run(ctx, input("run.sh slow"))
	if r.OK || !strings.Contains(r.Err, "timed out") || time.Since(start) > 10*time.Second {
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
	if r.OK || !strings.Contains(r.Err, "not found in") {
		t.Fatalf("escaped the scripts dir: %+v", r)
	}
}
