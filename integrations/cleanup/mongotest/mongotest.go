// Package mongotest runs FerretDB (the MongoDB wire protocol over SQLite)
// on a free loopback port for tests. `make deps` builds bin/ferretdb from
// the module proxy; without it the tests fail and say so.
package mongotest

import (
	"context"
	"net"
	"opsbot/internal/testbin"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/mongo"
	"go.mongodb.org/mongo-driver/v2/mongo/options"
)

// Server is a running FerretDB.
type Server struct {
	URI    string
	Client *mongo.Client
	cmd    *exec.Cmd
}

// Binary finds bin/ferretdb above the working directory, or
// $OPSBOT_FERRETDB.
func Binary() (string, error) {
	return testbin.Find("ferretdb", "OPSBOT_FERRETDB", "run `make deps` (builds FerretDB v1.24 from the module proxy)")
}

// Start runs FerretDB and stops it when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	bin, err := Binary()
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	dir := t.TempDir()
	s := &Server{URI: "mongodb://" + addr + "/"}
	s.cmd = exec.Command(bin, "--handler=sqlite", "--sqlite-url=file:"+dir+"/", "--listen-addr="+addr,
		"--telemetry=disable", "--debug-addr=-", "--state-dir="+dir, "--log-level=warn")
	logf, err := os.Create(filepath.Join(dir, "ferretdb.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close() // the child keeps its own descriptor
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.stop)
	c, err := mongo.Connect(options.Client().ApplyURI(s.URI).SetServerSelectionTimeout(2 * time.Second))
	if err != nil {
		t.Fatal(err)
	}
	s.Client = c
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := c.Ping(ctx, nil)
		cancel()
		if err == nil {
			return s
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "ferretdb.log"))
			t.Fatalf("FerretDB did not answer on %s: %v\n%s", addr, err, log)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (s *Server) stop() {
	if s.Client != nil {
		_ = s.Client.Disconnect(context.Background())
	}
	if s.cmd != nil && s.cmd.Process != nil {
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = s.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = s.cmd.Process.Kill()
			<-done
		}
	}
}
