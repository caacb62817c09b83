package bot_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"opsbot/bot"
	"opsbot/bot/bottest"
	"opsbot/state"
)

// streamSeen collects audit records by sequence, checking that a record
// seen twice (after a crash) is the same record.
type streamSeen struct {
	mu   sync.Mutex
	recs map[uint64]string
	bad  []string
}

func (s *streamSeen) add(line []byte) {
	var r bot.AuditRecord
	if err := json.Unmarshal(line, &r); err != nil || r.ID != fmt.Sprintf("audit-%d", r.Seq) {
		s.bad = append(s.bad, "bad record: "+string(line))
		return
	}
	if prev, ok := s.recs[r.Seq]; ok && prev != string(line) {
		s.bad = append(s.bad, fmt.Sprintf("seq %d twice, differently:\n%s\n%s", r.Seq, prev, line))
	}
	s.recs[r.Seq] = string(line)
}

// max is the highest sequence seen and whether 1..max are all there.
func (s *streamSeen) max() (uint64, []uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var m uint64
	for q := range s.recs {
		m = max(m, q)
	}
	var missing []uint64
	for q := uint64(1); q <= m; q++ {
		if _, ok := s.recs[q]; !ok {
			missing = append(missing, q)
		}
	}
	return m, missing
}

// readStreamFiles reads the stream file and its rotated predecessors.
func readStreamFiles(t *testing.T, path string) *streamSeen {
	s := &streamSeen{recs: map[uint64]string{}}
	files, _ := filepath.Glob(path + "*")
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(bytes.NewReader(data))
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			if len(sc.Bytes()) > 0 {
				s.add(sc.Bytes())
			}
		}
	}
	return s
}

// The audit stream's file (rotated) and HTTP endpoint receive every audit
// entry, with no gap in the sequence, across a SIGKILL of the bot in the
// middle of a burst; an entry sent twice is the same record with the same
// id. opsbot audit export gives the same records.
func TestAuditStreamSurvivesSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and kills the binary")
	}
	const secret = "stream-secret-0123456789abcdef"
	httpSeen := &streamSeen{recs: map[uint64]string{}}
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			return // the bot was killed in the middle of sending: nothing arrived
		}
		ts, _ := strconv.ParseInt(r.Header.Get(bot.HeaderTimestamp), 10, 64)
		httpSeen.mu.Lock()
		defer httpSeen.mu.Unlock()
		if r.Header.Get(bot.HeaderSignature) != bot.Sign(secret, ts, body) || r.Header.Get("Content-Type") != "application/x-ndjson" {
			httpSeen.bad = append(httpSeen.bad, "unsigned batch")
			w.WriteHeader(401)
			return
		}
		for _, l := range bytes.Split(bytes.TrimSpace(body), []byte("\n")) {
			httpSeen.add(l)
		}
	}))
	t.Cleanup(recv.Close)

	bin := buildBinary(t)
	dir := t.TempDir()
	bottest.WriteScripts(t, dir)
	cfg := filepath.Join(dir, "opsbot.yaml")
	stream := filepath.Join(dir, "audit", "stream.jsonl")
	yaml := strings.Replace(bottest.ConfigYAML(dir, fmt.Sprintf(`
audit:
  stream: {file: %q, rotate_bytes: 2048, keep: 1000, url: %q, secret_env: OPSBOT_STREAM_SECRET, retry_min: 20ms, retry_max: 100ms}
`, stream, recv.URL)), "listen: 127.0.0.1:0", "listen: "+freePort(t), 1)
	if err := os.WriteFile(cfg, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	env := append(os.Environ(), "OPSBOT_STREAM_SECRET="+secret)
	p := startProcEnv(t, bin, cfg, env)
	// A burst of commands, killed in the middle.
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 40 {
				if _, err := p.try("alice", fmt.Sprintf(`/ops new golive service=s%d-%d version=v1 rollback_app=x`, w, i)); err != nil {
					return // killed
				}
			}
		}()
	}
	waitFor(t, "the stream to start", func() bool { m, _ := readStreamFiles(t, stream).max(); return m > 20 })
	p.cmd.Process.Signal(syscall.SIGKILL)
	p.cmd.Wait()
	wg.Wait()

	p = startProcEnv(t, bin, cfg, env)
	for i := range 10 {
		p.say("bob", fmt.Sprintf("/ops approve T-%d", i+1))
	}
	// Caught up: both sinks at the same, stable end.
	var last uint64
	waitFor(t, "the sinks to catch up", func() bool {
		f, _ := readStreamFiles(t, stream).max()
		h, _ := httpSeen.max()
		done := f > 0 && f == h && f == last
		last = f
		if !done {
			time.Sleep(200 * time.Millisecond)
		}
		return done
	})
	p.cmd.Process.Signal(syscall.SIGTERM)
	p.cmd.Wait()

	st, err := state.Open(state.Options{Path: filepath.Join(dir, "opsbot.db"), ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	end, err := st.LastAuditSeq(context.Background())
	st.Close()
	if err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(stream + ".*")
	if len(files) == 0 {
		t.Fatal("the stream file was never rotated")
	}
	for name, s := range map[string]*streamSeen{"file": readStreamFiles(t, stream), "http": httpSeen} {
		m, missing := s.max()
		if len(s.bad) > 0 || len(missing) > 0 || m != end {
			t.Fatalf("%s: up to %d of %d, missing %v, %v", name, m, end, missing, s.bad)
		}
	}
	// The export gives the same records.
	var out, errb strings.Builder
	if code := bot.Main([]string{"audit", "export", "-config", cfg}, nil, &out, &errb); code != 0 {
		t.Fatalf("export: %d %s", code, errb.String())
	}
	file := readStreamFiles(t, stream)
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if uint64(len(lines)) != end {
		t.Fatalf("export: %d lines, want %d", len(lines), end)
	}
	for _, l := range lines {
		var r bot.AuditRecord
		json.Unmarshal([]byte(l), &r)
		if file.recs[r.Seq] != l {
			t.Fatalf("export and stream differ at %d:\n%s\n%s", r.Seq, l, file.recs[r.Seq])
		}
	}
}
