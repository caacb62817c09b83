package puppet_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"opsbot/flows"
	"opsbot/integrations/gitlab"
	"opsbot/integrations/gitlab/gitlabfake"
	"opsbot/integrations/puppet"
	"opsbot/state"
)

func TestCheckPuppetfile(t *testing.T) {
	body := `forge 'https://forge.puppet.com'
mod 'puppetlabs/stdlib', '9.0.0'
mod 'ntp',
  :git => 'https://git.example/ntp.git',
  :commit => '0123456789abcdef0123456789abcdef01234567'
mod 'chrony', :git => 'https://git.example/chrony.git', :tag => 'v1.2.0'
mod 'bad', :git => 'https://git.example/bad.git', :commit => 'abc123'
mod 'loose', :git => 'https://git.example/loose.git'
mood 'typo'
`
	got := puppet.CheckPuppetfile(body)
	want := []string{`line 7: mod bad: :commit "abc123" is not a 40-hex sha`, `line 8: mod loose: a :git module needs :commit, :tag or :branch`,
		`line 9: not a mod entry: "mood 'typo'"`}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// BenchmarkRelease40Zones releases 40 zone branches in 4 batches of 10
// against the fake with 100 ms injected latency per API call, and reports
// how well the bot schedules the release apart from the fake's own CPU:
// the fake runs real git for every call, and on two cores its processes
// queue behind each other, which is the fake's cost, not the bot's.
//
// Every API call is timed as the bot sees it (latency plus the fake's
// service time, contention included) and put in a lane: the zone it
// concerns, or the path (the release branch, uat, production), which is
// worked in sequence. A batch cannot take less than its path calls one
// after the other plus its slowest zone's calls one after the other; the
// sum over the batches is "served-s", what a perfect scheduler would take
// with this fake. "ratio" is total-s / served-s: the bot's own overhead
// (its work between calls, waiting on the concurrency bound, anything run
// in sequence that could overlap). "calls-critical-s" is the old figure,
// the number of sequential calls times the latency, which a fake with no
// CPU cost would meet; "fake-git-cpu-s" is the CPU the fake's git
// processes used (on two cores, at least half of it is wall time).
func BenchmarkRelease40Zones(b *testing.B) {
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		fake := gitlabfake.New(b)
		fake.Commit("main", "base", map[string]string{"manifests/site.pp": "node default {}\n"})
		var batches []string
		for z := 0; z < 40; z++ {
			fake.Branch(fmt.Sprintf("zone%02d", z+1), "main")
		}
		for bt := 0; bt < 4; bt++ {
			var zs []string
			for z := bt * 10; z < bt*10+10; z++ {
				zs = append(zs, fmt.Sprintf("zone%02d", z+1))
			}
			batches = append(batches, strings.Join(zs, ","))
		}
		fake.Branch("uat", "main")
		fake.Branch("production", "main")
		fake.Branch("release/x", "uat")
		fake.Commit("release/x", "x", map[string]string{"manifests/x.pp": "class x {}\n"})
		rec := &laneRecorder{next: http.DefaultTransport, mrLane: map[string]string{}}
		c, _ := gitlab.New(gitlab.Config{BaseURL: fake.URL(), Token: fake.Token, Project: gitlabfake.Project,
			HTTPClient: &http.Client{Transport: rec}})
		conc := 10
		if v := os.Getenv("BENCH_CONCURRENCY"); v != "" {
			conc, _ = strconv.Atoi(v)
		}
		ex := puppet.New(puppet.Config{Client: c, MaxConcurrent: conc})
		st := &flows.Stage{Kind: flows.KindRelease}
		parsed, err := flows.ParseBatches(st, strings.Join(batches, ";"))
		if err != nil {
			b.Fatal(err)
		}
		tk := state.Ticket{ID: "T-1", Title: "bench", Fields: map[string]string{"branch": "release/x"}, Batches: parsed}
		latency := 100 * time.Millisecond
		if v := os.Getenv("BENCH_LATENCY"); v != "" {
			latency, _ = time.ParseDuration(v)
		}
		fake.SetLatency(latency)
		var before syscall.Rusage
		syscall.Getrusage(syscall.RUSAGE_CHILDREN, &before)
		b.StartTimer()
		start := time.Now()
		var served time.Duration
		calls := 0
		for n := range tk.Batches {
			rec.reset()
			res := ex.Run(context.Background(), flows.ExecInput{Ticket: tk, Kind: "release", Params: map[string]string{"batch": fmt.Sprint(n)}})
			if !res.OK {
				b.Fatalf("batch %d: %s", n+1, res.Err)
			}
			tk.Batches[n] = *res.Batch
			d, k := rec.critical()
			served += d
			calls += k
		}
		total := time.Since(start)
		b.StopTimer()
		var after syscall.Rusage
		syscall.Getrusage(syscall.RUSAGE_CHILDREN, &after)
		gitCPU := time.Duration(after.Utime.Nano()+after.Stime.Nano()-before.Utime.Nano()-before.Stime.Nano()) * time.Nanosecond
		b.ReportMetric(gitCPU.Seconds(), "fake-git-cpu-s")
		b.ReportMetric(total.Seconds(), "total-s")
		b.ReportMetric(served.Seconds(), "served-s")
		b.ReportMetric(total.Seconds()/served.Seconds(), "ratio")
		b.ReportMetric((time.Duration(calls) * latency).Seconds(), "calls-critical-s")
	}
}

// laneRecorder times every API call and files it under the branch lane it
// concerns: a zone ("zone07"), or "path".
type laneRecorder struct {
	next   http.RoundTripper
	mu     sync.Mutex
	lanes  map[string]time.Duration
	counts map[string]int
	mrLane map[string]string // merge request iid -> lane
}

var laneBranch = regexp.MustCompile(`zone\d+`)

func (l *laneRecorder) reset() {
	l.mu.Lock()
	l.lanes, l.counts = map[string]time.Duration{}, map[string]int{}
	l.mu.Unlock()
}

// critical is a batch's least possible time with this fake: the path's
// calls in sequence plus the slowest zone's calls in sequence, and how
// many calls that chain holds.
func (l *laneRecorder) critical() (time.Duration, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	d, n := l.lanes["path"], l.counts["path"]
	var slowest string
	for lane, t := range l.lanes {
		if lane != "path" && (slowest == "" || t > l.lanes[slowest]) {
			slowest = lane
		}
	}
	if slowest != "" {
		d, n = d+l.lanes[slowest], n+l.counts[slowest]
	}
	return d, n
}

func (l *laneRecorder) RoundTrip(r *http.Request) (*http.Response, error) {
	var body []byte
	if r.Body != nil {
		body, _ = io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
	}
	iid := regexp.MustCompile(`merge_requests/(\d+)`).FindStringSubmatch(r.URL.Path)
	start := time.Now()
	resp, err := l.next.RoundTrip(r)
	took := time.Since(start)
	lane := laneBranch.FindString(r.URL.RawQuery + " " + string(body))
	var out []byte
	if err == nil {
		out, _ = io.ReadAll(resp.Body)
		resp.Body = io.NopCloser(bytes.NewReader(out))
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if lane == "" && iid != nil {
		lane = l.mrLane[iid[1]]
	}
	if lane == "" {
		// A merge request created or listed: its answer names its target.
		lane = laneBranch.FindString(string(out))
	}
	if lane == "" {
		lane = "path"
	}
	var mr struct {
		IID    int64  `json:"iid"`
		Target string `json:"target_branch"`
	}
	if json.Unmarshal(out, &mr) == nil && mr.IID > 0 {
		if z := laneBranch.FindString(mr.Target); z != "" {
			l.mrLane[fmt.Sprint(mr.IID)] = z
		}
	}
	l.lanes[lane] += took
	l.counts[lane]++
	return resp, err
}

// TestRevertResumesWithoutRevertingTwice: a rollback cut short after some
// reverts (the bot restarted) runs again and skips what was reverted.
func TestRevertResumesWithoutRevertingTwice(t *testing.T) {
	fake, c, ex, tk := oneZoneRelease(t)
	res := ex.Run(context.Background(), flows.ExecInput{Ticket: tk, Kind: "release", Params: map[string]string{"batch": "0"}})
	if !res.OK {
		t.Fatal(res.Err)
	}
	b := *res.Batch
	// Before the restart the rollback had reverted the zone (its first step).
	zoneStep := b.Steps[2]
	if _, err := c.Revert(context.Background(), zoneStep.MergeSHA, "zone01"); err != nil {
		t.Fatal(err)
	}
	tk.Batches[0] = b
	res = ex.Run(context.Background(), flows.ExecInput{Ticket: tk, Kind: "revert", Params: map[string]string{"batch": "0"}})
	if !res.OK {
		t.Fatalf("resumed rollback: %s", res.Err)
	}
	reverts := 0
	for _, call := range fake.Calls() {
		if strings.HasSuffix(call, "/revert") {
			reverts++
		}
	}
	if reverts != 3 { // zone01 once (before), production and uat now
		t.Fatalf("%d revert calls, want 3", reverts)
	}
	for _, br := range []string{"uat", "production", "zone01"} {
		if fake.Read(br, "manifests/x.pp") != "" {
			t.Errorf("%s still has the change", br)
		}
	}
}

// TestReleaseRegistersItsMergesAndRevertUsesThem: a release registers one
// undo step per merge, in the order made; the revert reverses exactly
// the steps it is handed, newest first, and nothing else.
func TestReleaseRegistersItsMergesAndRevertUsesThem(t *testing.T) {
	fake, _, ex, tk := oneZoneRelease(t)
	res := ex.Run(context.Background(), flows.ExecInput{Ticket: tk, Kind: state.JobRelease, Params: map[string]string{"batch": "0"}})
	if !res.OK {
		t.Fatal(res.Err)
	}
	var targets []string
	for _, u := range res.Undo {
		targets = append(targets, u.Values["target"])
		if u.Values["merge_sha"] == "" {
			t.Fatalf("undo step without the merge: %+v", u)
		}
	}
	if strings.Join(targets, ",") != "uat,production,zone01" {
		t.Fatalf("registered %v, want the merges in order", targets)
	}
	tk.Batches[0] = *res.Batch
	// Handed only the zone's step (as a saga whose other entries were
	// undone), the revert touches the zone alone.
	res = ex.Run(context.Background(), flows.ExecInput{Ticket: tk, Kind: state.JobRevert, Params: map[string]string{"batch": "0"},
		Undo: []state.UndoStep{res.Undo[2]}})
	if !res.OK {
		t.Fatal(res.Err)
	}
	if fake.Read("zone01", "manifests/x.pp") != "" || fake.Read("production", "manifests/x.pp") == "" {
		t.Fatal("the revert did not follow its undo steps")
	}
}

// oneZoneRelease is a release of branch release/x (one new file) in one
// batch: uat, production, then zone01.
func oneZoneRelease(t *testing.T) (*gitlabfake.Fake, *gitlab.Client, *puppet.Executor, state.Ticket) {
	t.Helper()
	fake := gitlabfake.New(t)
	fake.Commit("main", "base", map[string]string{"manifests/site.pp": "node default {}\n"})
	for _, b := range []string{"uat", "production", "zone01"} {
		fake.Branch(b, "main")
	}
	fake.Branch("release/x", "uat")
	fake.Commit("release/x", "x", map[string]string{"manifests/x.pp": "class x {}\n"})
	c, _ := gitlab.New(gitlab.Config{BaseURL: fake.URL(), Token: fake.Token, Project: gitlabfake.Project})
	ex := puppet.New(puppet.Config{Client: c})
	parsed, _ := flows.ParseBatches(&flows.Stage{Kind: flows.KindRelease}, "zone01")
	tk := state.Ticket{ID: "T-1", Title: "x", Fields: map[string]string{"branch": "release/x"}, Batches: parsed}
	return fake, c, ex, tk
}
