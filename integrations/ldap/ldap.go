// Package ldap reads and changes the Puppet node classification kept in
// LDAP: a node's entry (found by hostname) carries its group, role and
// puppet status; groups are entries of their own. A group change is a
// compare-and-swap (one modify that deletes the old value and adds the
// new), so a concurrent change fails instead of being overwritten.
package ldap

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"sort"
	"strings"
	"time"

	goldap "github.com/go-ldap/ldap/v3"
)

// Config reaches the directory.
type Config struct {
	// URL is ldap://host:389 or ldaps://host:636.
	URL string `yaml:"url"`
	// StartTLS upgrades an ldap:// connection before binding.
	StartTLS bool `yaml:"start_tls"`
	// CA verifies the server's certificate (ldaps or StartTLS); empty:
	// the system's roots.
	CA string `yaml:"ca"`
	// ServerName overrides the name checked in the server's certificate.
	ServerName string `yaml:"server_name"`
	BindDN     string `yaml:"bind_dn"`
	// PasswordEnv names the variable holding the bind password.
	PasswordEnv string `yaml:"password_env"`
	// NodesBase and GroupsBase are where node and group entries live.
	NodesBase  string `yaml:"nodes_base"`
	GroupsBase string `yaml:"groups_base"`
	// HostAttr names a node by hostname (default cn); GroupAttr, RoleAttr
	// and StatusAttr are its classification (defaults puppetGroup,
	// puppetRole, puppetStatus); GroupNameAttr names a group entry
	// (default cn).
	HostAttr      string        `yaml:"host_attr"`
	GroupAttr     string        `yaml:"group_attr"`
	RoleAttr      string        `yaml:"role_attr"`
	StatusAttr    string        `yaml:"status_attr"`
	GroupNameAttr string        `yaml:"group_name_attr"`
	Timeout       time.Duration `yaml:"-"`
}

func (c *Config) defaults() {
	def := func(p *string, v string) {
		if *p == "" {
			*p = v
		}
	}
	def(&c.HostAttr, "cn")
	def(&c.GroupAttr, "puppetGroup")
	def(&c.RoleAttr, "puppetRole")
	def(&c.StatusAttr, "puppetStatus")
	def(&c.GroupNameAttr, "cn")
	if c.Timeout <= 0 {
		c.Timeout = 10 * time.Second
	}
}

// Node is a server's classification entry.
type Node struct {
	DN, Host, Group, Role, Status string
}

// Errors a caller tells people about.
var (
	ErrNoNode   = errors.New("no LDAP entry for this host")
	ErrNoGroup  = errors.New("no such group in the directory")
	ErrConflict = errors.New("the group changed in the directory since it was read")
)

// Directory is a client of the directory.
type Directory struct {
	cfg Config
	tls *tls.Config
}

// New checks the configuration and reads its CA file.
func New(cfg Config) (*Directory, error) {
	cfg.defaults()
	u, err := url.Parse(cfg.URL)
	if err != nil || (u.Scheme != "ldap" && u.Scheme != "ldaps") || u.Host == "" {
		return nil, fmt.Errorf("ldap.url %q: ldap://host:389 (with start_tls) or ldaps://host:636", cfg.URL)
	}
	if cfg.NodesBase == "" || cfg.GroupsBase == "" {
		return nil, fmt.Errorf("ldap.nodes_base and ldap.groups_base: where node and group entries live, e.g. ou=nodes,dc=example,dc=com")
	}
	d := &Directory{cfg: cfg}
	if u.Scheme == "ldaps" || cfg.StartTLS {
		tc := &tls.Config{ServerName: cfg.ServerName, MinVersion: tls.VersionTLS12}
		if tc.ServerName == "" {
			tc.ServerName = u.Hostname()
		}
		if cfg.CA != "" {
			pem, err := os.ReadFile(cfg.CA)
			if err != nil {
				return nil, fmt.Errorf("ldap.ca: %w", err)
			}
			tc.RootCAs = x509.NewCertPool()
			if !tc.RootCAs.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("ldap.ca %s: no PEM certificate in it", cfg.CA)
			}
		}
		d.tls = tc
	}
	return d, nil
}

// conn dials, upgrades (StartTLS) and binds.
func (d *Directory) conn(ctx context.Context) (*goldap.Conn, error) {
	dialer := &net.Dialer{Timeout: d.cfg.Timeout}
	if dl, ok := ctx.Deadline(); ok {
		dialer.Deadline = dl
	}
	opts := []goldap.DialOpt{goldap.DialWithDialer(dialer)}
	if d.tls != nil {
		opts = append(opts, goldap.DialWithTLSConfig(d.tls))
	}
	c, err := goldap.DialURL(d.cfg.URL, opts...)
	if err != nil {
		return nil, fmt.Errorf("ldap: reach %s: %w", d.cfg.URL, err)
	}
	c.SetTimeout(d.cfg.Timeout)
	if d.cfg.StartTLS && strings.HasPrefix(d.cfg.URL, "ldap://") {
		if err := c.StartTLS(d.tls); err != nil {
			c.Close()
			return nil, fmt.Errorf("ldap: StartTLS with %s: %w", d.cfg.URL, err)
		}
	}
	if d.cfg.BindDN != "" {
		if err := c.Bind(d.cfg.BindDN, os.Getenv(d.cfg.PasswordEnv)); err != nil {
			c.Close()
			return nil, fmt.Errorf("ldap: bind as %s (password from $%s): %w", d.cfg.BindDN, d.cfg.PasswordEnv, err)
		}
	}
	return c, nil
}

// Ping binds (config check).
func (d *Directory) Ping(ctx context.Context) error {
	c, err := d.conn(ctx)
	if err != nil {
		return err
	}
	return c.Close()
}

// Node reads a host's entry.
func (d *Directory) Node(ctx context.Context, host string) (Node, error) {
	c, err := d.conn(ctx)
	if err != nil {
		return Node{}, err
	}
	defer c.Close()
	return d.node(c, host)
}

func (d *Directory) node(c *goldap.Conn, host string) (Node, error) {
	cfg := d.cfg
	res, err := c.Search(goldap.NewSearchRequest(cfg.NodesBase, goldap.ScopeWholeSubtree, goldap.NeverDerefAliases, 2, int(cfg.Timeout.Seconds()), false,
		fmt.Sprintf("(%s=%s)", cfg.HostAttr, goldap.EscapeFilter(host)), []string{cfg.HostAttr, cfg.GroupAttr, cfg.RoleAttr, cfg.StatusAttr}, nil))
	if err != nil && !goldap.IsErrorWithCode(err, goldap.LDAPResultSizeLimitExceeded) {
		return Node{}, fmt.Errorf("ldap: search %s: %w", host, err)
	}
	switch {
	case res == nil || len(res.Entries) == 0:
		return Node{}, ErrNoNode
	case len(res.Entries) > 1:
		return Node{}, fmt.Errorf("ldap: %d entries name host %s under %s: the classification is ambiguous", len(res.Entries), host, cfg.NodesBase)
	}
	e := res.Entries[0]
	return Node{DN: e.DN, Host: host, Group: e.GetAttributeValue(cfg.GroupAttr), Role: e.GetAttributeValue(cfg.RoleAttr),
		Status: e.GetAttributeValue(cfg.StatusAttr)}, nil
}

// Groups lists the groups of the directory, sorted.
func (d *Directory) Groups(ctx context.Context) ([]string, error) {
	c, err := d.conn(ctx)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	cfg := d.cfg
	res, err := c.Search(goldap.NewSearchRequest(cfg.GroupsBase, goldap.ScopeSingleLevel, goldap.NeverDerefAliases, 10000, int(cfg.Timeout.Seconds()), false,
		fmt.Sprintf("(%s=*)", cfg.GroupNameAttr), []string{cfg.GroupNameAttr}, nil))
	if err != nil {
		return nil, fmt.Errorf("ldap: list groups under %s: %w", cfg.GroupsBase, err)
	}
	var out []string
	for _, e := range res.Entries {
		out = append(out, e.GetAttributeValue(cfg.GroupNameAttr))
	}
	sort.Strings(out)
	return out, nil
}

// SetGroup changes a node's group from old to new in one modify that
// deletes old and adds new: when the entry no longer holds old (changed
// by someone else since it was read), nothing is written and the error
// is ErrConflict. Setting the group it already has is success (a retry
// after a crash).
func (d *Directory) SetGroup(ctx context.Context, dn, old, new string) error {
	c, err := d.conn(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	m := goldap.NewModifyRequest(dn, nil)
	m.Delete(d.cfg.GroupAttr, []string{old})
	m.Add(d.cfg.GroupAttr, []string{new})
	err = c.Modify(m)
	if err == nil {
		return nil
	}
	if goldap.IsErrorWithCode(err, goldap.LDAPResultNoSuchAttribute) {
		// old is not there: applied already, or changed by someone else.
		res, serr := c.Search(goldap.NewSearchRequest(dn, goldap.ScopeBaseObject, goldap.NeverDerefAliases, 1, int(d.cfg.Timeout.Seconds()), false,
			"(objectClass=*)", []string{d.cfg.GroupAttr}, nil))
		if serr == nil && len(res.Entries) == 1 {
			now := res.Entries[0].GetAttributeValue(d.cfg.GroupAttr)
			if strings.EqualFold(now, new) {
				return nil
			}
			return fmt.Errorf("%w: %s is now in group %q, not %q", ErrConflict, dn, now, old)
		}
		return fmt.Errorf("%w: %v", ErrConflict, err)
	}
	if goldap.IsErrorWithCode(err, goldap.LDAPResultNoSuchObject) {
		return fmt.Errorf("%w: %s", ErrNoNode, dn)
	}
	return fmt.Errorf("ldap: modify %s: %w", dn, err)
}
