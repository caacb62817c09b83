package puppetca_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"opsbot/integrations/puppetca"
	"opsbot/integrations/puppetca/puppetcatest"
)


func TestMain(m *testing.M) {
	code := m.Run()
	puppetcatest.StopShared()
	os.Exit(code)
}

func ca(t *testing.T) (*puppetcatest.Server, *puppetca.Client) {
	t.Helper()
	if why := puppetcatest.Available(); why != "" {
		t.Skip(why)
	}
	s, err := puppetcatest.Shared()
	if err != nil {
		t.Fatal(err)
	}
	c, err := puppetca.New(puppetca.Config{URL: s.URL, CA: s.CA, Cert: s.Cert, Key: s.Key, ServerName: "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	return s, c
}

// Against the real CA: a node's certificate is read (signed, with its
// SHA-256 fingerprint), cleaned (revoked and deleted), cleaning again is
// no error, and the node's new CSR under the same certname is accepted.
func TestCleanAgainstPuppetServer(t *testing.T) {
	s, c := ca(t)
	ctx := context.Background()
	if _, _, err := s.Request("web-01.store.example.test"); err != nil {
		t.Fatal(err)
	}
	st, err := c.Status(ctx, "web-01.store.example.test")
	if err != nil || st.State != "signed" || !strings.Contains(st.SHA256(), ":") {
		t.Fatalf("status: %+v %v", st, err)
	}
	before, found, err := c.Clean(ctx, "web-01.store.example.test")
	if err != nil || !found || before.SHA256() != st.SHA256() {
		t.Fatalf("clean: %+v %v %v", before, found, err)
	}
	if _, err := c.Status(ctx, "web-01.store.example.test"); !errors.Is(err, puppetca.ErrNotFound) {
		t.Fatalf("after clean: %v", err)
	}
	if _, found, err := c.Clean(ctx, "web-01.store.example.test"); err != nil || found {
		t.Fatalf("clean again: %v %v", found, err)
	}
	if _, _, err := s.Request("web-01.store.example.test"); err != nil {
		t.Fatalf("a new CSR from the same certname: %v", err)
	}
	if st2, err := c.Status(ctx, "web-01.store.example.test"); err != nil || st2.SHA256() == st.SHA256() {
		t.Fatalf("the new certificate: %+v %v", st2, err)
	}
	if err := c.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Status(ctx, "Bad Name"); err == nil || !strings.Contains(err.Error(), "e.g. web-01") {
		t.Fatalf("a bad certname: %v", err)
	}
	// A certificate the auth rules do not allow is refused clearly.
	key, cert, err := s.Request("intruder")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	os.WriteFile(dir+"/k.pem", key, 0o600)
	os.WriteFile(dir+"/c.pem", cert, 0o600)
	other, _ := puppetca.New(puppetca.Config{URL: s.URL, CA: s.CA, Cert: dir + "/c.pem", Key: dir + "/k.pem", ServerName: "localhost"})
	if _, err := other.Status(ctx, "web-01.store.example.test"); err == nil || !strings.Contains(err.Error(), "auth.conf") {
		t.Fatalf("a certificate the CA does not allow: %v", fmt.Sprint(err))
	}
}
