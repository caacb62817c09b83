package ldap_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	goldap "github.com/go-ldap/ldap/v3"

	"opsbot/integrations/ldap"
	"opsbot/integrations/ldap/ldaptest"
)

func directory(t *testing.T, s *ldaptest.Server, url string, startTLS bool) *ldap.Directory {
	t.Helper()
	t.Setenv("OPSBOT_LDAP_PASSWORD", ldaptest.Password)
	d, err := ldap.New(ldap.Config{URL: url, StartTLS: startTLS, CA: s.CA, BindDN: ldaptest.BindDN, PasswordEnv: "OPSBOT_LDAP_PASSWORD",
		NodesBase: "ou=nodes," + ldaptest.Suffix, GroupsBase: "ou=groups," + ldaptest.Suffix})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// Against real slapd, over StartTLS and LDAPS: a node's entry is read by
// hostname, groups are listed, a group change is a compare-and-swap that
// a concurrent change makes fail instead of being overwritten, and a
// repeat of an applied change is no error.
func TestGroupChangeAgainstSlapd(t *testing.T) {
	s := ldaptest.Start(t, ldaptest.Group("web")+ldaptest.Group("db")+ldaptest.Group("cache")+ldaptest.Node("web-01.example.test", "web", "nginx"))
	ctx := context.Background()
	for _, d := range []*ldap.Directory{directory(t, s, s.URL, true), directory(t, s, s.LDAPS, false)} {
		if err := d.Ping(ctx); err != nil {
			t.Fatal(err)
		}
	}
	d := directory(t, s, s.URL, true)
	n, err := d.Node(ctx, "web-01.example.test")
	if err != nil || n.DN != "cn=web-01.example.test,ou=nodes,"+ldaptest.Suffix || n.Group != "web" || n.Role != "nginx" || n.Status != "enabled" {
		t.Fatalf("node: %+v %v", n, err)
	}
	if _, err := d.Node(ctx, "nope.example.test"); !errors.Is(err, ldap.ErrNoNode) {
		t.Fatalf("an unknown host: %v", err)
	}
	if gs, err := d.Groups(ctx); err != nil || strings.Join(gs, ",") != "cache,db,web" {
		t.Fatalf("groups: %v %v", gs, err)
	}
	if err := d.SetGroup(ctx, n.DN, "web", "cache"); err != nil {
		t.Fatal(err)
	}
	if err := d.SetGroup(ctx, n.DN, "web", "cache"); err != nil {
		t.Fatalf("the same change again: %v", err)
	}
	// Someone else moves it to db; our change from the old value fails.
	admin, err := goldap.DialURL(s.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	if err := admin.Bind(ldaptest.Admin, ldaptest.Password); err != nil {
		t.Fatal(err)
	}
	m := goldap.NewModifyRequest(n.DN, nil)
	m.Replace("puppetGroup", []string{"db"})
	if err := admin.Modify(m); err != nil {
		t.Fatal(err)
	}
	err = d.SetGroup(ctx, n.DN, "cache", "web")
	if !errors.Is(err, ldap.ErrConflict) || !strings.Contains(err.Error(), `now in group "db"`) {
		t.Fatalf("a concurrent change: %v", err)
	}
	if n, _ := d.Node(ctx, "web-01.example.test"); n.Group != "db" {
		t.Fatalf("the concurrent change was overwritten: %+v", n)
	}
	// A wrong password is refused at the bind, saying where it comes from.
	t.Setenv("OPSBOT_LDAP_PASSWORD", "wrong")
	if err := d.Ping(ctx); err == nil || !strings.Contains(err.Error(), "$OPSBOT_LDAP_PASSWORD") {
		t.Fatalf("a wrong password: %v", err)
	}
}
