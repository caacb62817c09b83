package bot

import (
	"context"
	"fmt"
	"opsbot/flows"
	"opsbot/integrations/inventory"
	"opsbot/integrations/ldap"
	"opsbot/integrations/puppetca"
	"opsbot/integrations/servers"
	"os"
	"time"
)

// newServers builds the store-server executor with the Puppet CA and LDAP
// clients that are configured.
func newServers(cfg *Config, scripts flows.Executor) (*servers.Executor, error) {
	var sc servers.Config
	if c := cfg.PuppetCA; c.URL != "" {
		ca, err := puppetca.New(puppetca.Config{URL: c.URL, CA: cfg.Resolve(c.CA), Cert: cfg.Resolve(c.Cert), Key: cfg.Resolve(c.Key), ServerName: c.ServerName})
		if err != nil {
			return nil, err
		}
		sc.CA = ca
	}
	if cfg.LDAP.URL != "" {
		l := cfg.LDAP
		if l.CA != "" {
			l.CA = cfg.Resolve(l.CA)
		}
		d, err := ldap.New(l)
		if err != nil {
			return nil, err
		}
		sc.LDAP = d
	}
	a := cfg.Servers.Apply
	sc.Hook = inventory.Hook{Script: a.Script, URL: a.URL, Scripts: scripts}
	return servers.New(sc), nil
}

// checkServers checks the puppet_ca: and ldap: sections: the URLs, the
// certificate files, where the password comes from.
func (c *Config) checkServers() []error {
	var errs []error
	if c.PuppetCA.URL != "" || c.PuppetCA.Cert != "" {
		p := c.PuppetCA
		if _, err := puppetca.New(puppetca.Config{URL: p.URL, CA: c.Resolve(p.CA), Cert: c.Resolve(p.Cert), Key: c.Resolve(p.Key)}); err != nil {
			errs = append(errs, err)
		}
	}
	if c.LDAP.URL != "" || c.LDAP.BindDN != "" {
		l := c.LDAP
		if l.CA != "" {
			l.CA = c.Resolve(l.CA)
		}
		if _, err := ldap.New(l); err != nil {
			errs = append(errs, err)
		}
		if l.BindDN != "" && (l.PasswordEnv == "" || os.Getenv(l.PasswordEnv) == "") {
			errs = append(errs, fmt.Errorf("ldap.password_env: name a variable holding the bind password of %s (e.g. OPSBOT_LDAP_PASSWORD), and set it", l.BindDN))
		}
	}
	return errs
}

// reachServers reaches the Puppet CA (with the bot's certificate) and
// binds to LDAP, as config check does for etcd.
func reachServers(ctx context.Context, cfg *Config) []error {
	var errs []error
	x, err := newServers(cfg, nil)
	if err != nil {
		return []error{err}
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	if ca := x.CA(); ca != nil {
		if err := ca.Ping(ctx); err != nil {
			errs = append(errs, fmt.Errorf("puppet_ca: %w", err))
		}
	}
	if d := x.LDAP(); d != nil {
		if err := d.Ping(ctx); err != nil {
			errs = append(errs, fmt.Errorf("ldap: %w", err))
		}
	}
	return errs
}
