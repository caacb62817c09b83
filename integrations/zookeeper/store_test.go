package zookeeper_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"opsbot/integrations/zookeeper"
	"opsbot/integrations/zookeeper/zktest"
)

func open(t *testing.T, srv *zktest.Server) *zookeeper.Store {
	s, err := zookeeper.Open(zookeeper.Config{Name: "test", Servers: []string{srv.Addr}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func publishProd(s *zookeeper.Store, v int) error {
	rec := zookeeper.Record{Version: v, Kind: "base", ReleaseType: "online", MinUpdatable: 1, Compatible: []int{v}}
	_, _, err := s.Change(context.Background(), "android", &rec, func(p zookeeper.Pointers, _ []zookeeper.Record) (zookeeper.Pointers, error) {
		if v > p.Prod {
			p.Prod = v
		}
		return p, nil
	})
	return err
}

func TestHistoryIsInVersionOrder(t *testing.T) {
	s := open(t, zktest.Start(t))
	for _, v := range []int{1148, 1146, 1200, 1147} { // created out of order
		if err := publishProd(s, v); err != nil {
			t.Fatal(err)
		}
	}
	recs, err := s.Records("android")
	if err != nil {
		t.Fatal(err)
	}
	var got []int
	for _, r := range recs {
		got = append(got, r.Version)
	}
	if len(got) != 4 || got[0] != 1146 || got[1] != 1147 || got[2] != 1148 || got[3] != 1200 {
		t.Fatalf("history %v", got)
	}
}

func TestRacingPublishersKeepBothRecords(t *testing.T) {
	srv := zktest.Start(t)
	a, b := open(t, srv), open(t, srv)
	var wg sync.WaitGroup
	for i := 0; i < 10; i++ {
		for _, s := range []*zookeeper.Store{a, b} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := publishProd(s, 2000+i*2+map[*zookeeper.Store]int{a: 0, b: 1}[s]); err != nil {
					t.Error(err)
				}
			}()
		}
	}
	wg.Wait()
	recs, _ := a.Records("android")
	p, _, _ := a.Pointers("android")
	if len(recs) != 20 || p.Prod != 2019 {
		t.Fatalf("%d records, prod %d; want 20 and 2019", len(recs), p.Prod)
	}
}

func TestSessionSurvivesAServerRestart(t *testing.T) {
	srv := zktest.Start(t)
	s := open(t, srv)
	if err := publishProd(s, 1); err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	time.Sleep(5 * time.Second) // past the 4 s session timeout: the session expires
	srv.Restart()
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := publishProd(s, 2)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no recovery after the restart: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if p, _, _ := s.Pointers("android"); p.Prod != 2 {
		t.Fatalf("prod %d", p.Prod)
	}
}

func TestStatus(t *testing.T) {
	s := open(t, zktest.Start(t))
	if st, err := s.Status("ios"); st != "active" {
		t.Fatalf("default status %q %v", st, err)
	}
	s.SetStatus("ios", "stopped")
	if st, _ := s.Status("ios"); st != "stopped" {
		t.Fatalf("status %q", st)
	}
}

// CheckRepublish: the same record again (also promoted to another kind)
// passes; another package or other terms for a version in the history is
// refused with the next free number.
func TestCheckRepublish(t *testing.T) {
	recs := []zookeeper.Record{{Version: 100, Kind: "gray", URL: "u100", MinUpdatable: 90, ReleaseType: "online"}, {Version: 101, Kind: "base", URL: "u101"}}
	if err := zookeeper.CheckRepublish(recs, zookeeper.Record{Version: 100, Kind: "base", URL: "u100", MinUpdatable: 90, ReleaseType: "online"}); err != nil {
		t.Fatalf("a gray version promoted with the same record: %v", err)
	}
	err := zookeeper.CheckRepublish(recs, zookeeper.Record{Version: 100, Kind: "base", URL: "u100b", MinUpdatable: 95, ReleaseType: "online"})
	if err == nil || !strings.Contains(err.Error(), "url u100 (now u100b), 最低可更新 min_updatable 90 (now 95)") || !strings.Contains(err.Error(), "version=102") {
		t.Fatalf("a rebuilt package: %v", err)
	}
	if err := zookeeper.CheckRepublish(recs, zookeeper.Record{Version: 102, URL: "x"}); err != nil {
		t.Fatalf("a new version: %v", err)
	}
}

// A platform name is one znode name: nothing typed reaches outside the
// platform's node ("..", a "/").
func TestPlatformNamesStayInTheirNode(t *testing.T) {
	s := open(t, zktest.Start(t))
	for _, bad := range []string{"../../zookeeper", "a/b", "..", "", ".hidden", "x..y"} {
		if err := s.SetStatus(bad, "stopped"); err == nil || !strings.Contains(err.Error(), "is not a platform name") {
			t.Errorf("SetStatus(%q): %v", bad, err)
		}
		if _, _, err := s.Pointers(bad); err == nil {
			t.Errorf("Pointers(%q) read", bad)
		}
		if _, _, err := s.Change(context.Background(), bad, nil, func(p zookeeper.Pointers, _ []zookeeper.Record) (zookeeper.Pointers, error) { return p, nil }); err == nil {
			t.Errorf("Change(%q) wrote", bad)
		}
	}
	if err := s.SetStatus("android-cn_2.0", "stopped"); err != nil {
		t.Fatal(err)
	}
}
