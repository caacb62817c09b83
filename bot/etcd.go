package bot

// The etcd backend: the client from the configuration, and its checks.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"opsbot/state"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// checkState validates the state options; the etcd ones without
// connecting (config check connects separately).
func (c *Config) checkState() []error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	switch c.State.Backend {
	case "bbolt":
		return nil
	case "etcd":
	default:
		bad("state.backend: %q: use bbolt (one file, the default) or etcd (several replicas)", c.State.Backend)
		return errs
	}
	e := c.State.Etcd
	if len(e.Endpoints) == 0 {
		bad("state.etcd.endpoints: name the cluster's members, e.g. [https://10.0.0.1:2379, https://10.0.0.2:2379, https://10.0.0.3:2379]")
	}
	for _, ep := range e.Endpoints {
		u, err := url.Parse(ep)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("state.etcd.endpoints: %q is not a client URL (e.g. https://10.0.0.1:2379)", ep)
		}
	}
	if !strings.HasSuffix(e.Prefix, "/") || strings.Contains(e.Prefix, ".live/") {
		bad("state.etcd.prefix: %q must end in '/' (e.g. opsbot/ or opsbot-prod/)", e.Prefix)
	}
	if (e.Cert == "") != (e.Key == "") {
		bad("state.etcd: cert and key go together (this client's certificate and its key)")
	}
	for key, f := range map[string]string{"ca": e.CA, "cert": e.Cert, "key": e.Key} {
		if f == "" {
			continue
		}
		if _, err := os.Stat(c.Resolve(f)); err != nil {
			bad("state.etcd.%s: %v", key, err)
		}
	}
	if e.Username != "" && os.Getenv(e.PasswordEnv) == "" {
		bad("state.etcd.password_env: environment variable %s is not set (the password of etcd user %s)", e.PasswordEnv, e.Username)
	}
	if os.Getenv(c.State.KeyEnv) == "" {
		bad("state.key_env: environment variable %s is not set; with etcd every replica needs the same sealing key "+
			"(32 random bytes, e.g. from `openssl rand -hex 32`)", c.State.KeyEnv)
	}
	if ttl := e.LeaseTTL.D(); ttl < time.Second || ttl > time.Minute {
		bad("state.etcd.lease_ttl: %s: between 1s and 1m (e.g. 5s): how long a dead replica keeps its work", ttl)
	}
	if https := len(e.Endpoints) > 0 && strings.HasPrefix(e.Endpoints[0], "https://"); e.CA != "" && !https {
		bad("state.etcd.ca is set but the endpoints are http://: use https:// endpoints")
	}
	return errs
}

// etcdClient connects to the configured cluster.
func etcdClient(cfg *Config) (*clientv3.Client, error) {
	e := cfg.State.Etcd
	cc := clientv3.Config{Endpoints: e.Endpoints, DialTimeout: e.DialTimeout.D(), Logger: zap.NewNop(),
		Username: e.Username, Password: os.Getenv(e.PasswordEnv),
		// Keepalives notice a member that died without closing.
		DialKeepAliveTime: 2 * time.Second, DialKeepAliveTimeout: 2 * time.Second}
	if e.Username == "" {
		cc.Password = ""
	}
	if e.CA != "" || e.Cert != "" {
		tc := &tls.Config{MinVersion: tls.VersionTLS12}
		if e.CA != "" {
			pem, err := os.ReadFile(cfg.Resolve(e.CA))
			if err != nil {
				return nil, fmt.Errorf("state.etcd.ca: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("state.etcd.ca: %s holds no PEM certificate", e.CA)
			}
			tc.RootCAs = pool
		}
		if e.Cert != "" {
			cert, err := tls.LoadX509KeyPair(cfg.Resolve(e.Cert), cfg.Resolve(e.Key))
			if err != nil {
				return nil, fmt.Errorf("state.etcd.cert/key: %w", err)
			}
			tc.Certificates = []tls.Certificate{cert}
		}
		cc.TLS = tc
	}
	cli, err := clientv3.New(cc)
	if err != nil {
		return nil, fmt.Errorf("etcd %s: %w", strings.Join(e.Endpoints, ","), err)
	}
	return cli, nil
}

// openStore opens the configured state: the bbolt file, or the state in
// etcd (then the client is returned too, for the caller to close).
func openStore(ctx context.Context, cfg *Config, readOnly bool) (*state.Store, *clientv3.Client, error) {
	if cfg.State.Backend != "etcd" {
		statePath := cfg.Resolve(cfg.State.Path)
		var key []byte
		if !readOnly {
			if err := os.MkdirAll(filepath.Dir(statePath), 0o750); err != nil {
				return nil, nil, fmt.Errorf("create state directory: %w", err)
			}
			var err error
			if key, err = state.LoadKey(cfg.State.KeyEnv, statePath+".key"); err != nil {
				return nil, nil, err
			}
		}
		st, err := state.Open(state.Options{Path: statePath, ReadOnly: readOnly, OpenTimeout: cfg.State.OpenTimeout.D(), Key: key})
		return st, nil, err
	}
	if os.Getenv(cfg.State.KeyEnv) == "" {
		return nil, nil, fmt.Errorf("state.key_env: set %s: with etcd every replica needs the same sealing key (e.g. `openssl rand -hex 32`)", cfg.State.KeyEnv)
	}
	key, err := state.LoadKey(cfg.State.KeyEnv, "")
	if err != nil {
		return nil, nil, err
	}
	cli, err := etcdClient(cfg)
	if err != nil {
		return nil, nil, err
	}
	st, err := state.OpenEtcd(ctx, cli, state.EtcdOptions{Prefix: cfg.State.Etcd.Prefix, Key: key,
		OrderedAudit: len(cfg.Webhooks) > 0 || cfg.Audit.Stream.File != "" || cfg.Audit.Stream.URL != ""})
	if err != nil {
		cli.Close()
		return nil, nil, fmt.Errorf("state in etcd %s: %w", strings.Join(cfg.State.Etcd.Endpoints, ","), err)
	}
	return st, cli, nil
}

// reachEtcd checks that the cluster answers and that this client may
// read and write under the prefix (config check).
func reachEtcd(ctx context.Context, cfg *Config) error {
	cli, err := etcdClient(cfg)
	if err != nil {
		return err
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(ctx, cfg.State.Etcd.DialTimeout.D())
	defer cancel()
	var errs []error
	reached := 0
	for _, ep := range cfg.State.Etcd.Endpoints {
		st, err := cli.Status(ctx, ep)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", ep, err))
			continue
		}
		reached++
		if len(st.Errors) > 0 {
			errs = append(errs, fmt.Errorf("%s reports %s", ep, strings.Join(st.Errors, "; ")))
		}
	}
	if reached == 0 {
		return fmt.Errorf("state.etcd: no member answers: %w", errors.Join(errs...))
	}
	probe := strings.TrimSuffix(cfg.State.Etcd.Prefix, "/") + ".live/config-check"
	if _, err := cli.Put(ctx, probe, time.Now().UTC().Format(time.RFC3339)); err != nil {
		return fmt.Errorf("state.etcd: cannot write under %s: %w", cfg.State.Etcd.Prefix, err)
	}
	if _, err := cli.Delete(ctx, probe); err != nil {
		return fmt.Errorf("state.etcd: cannot delete under %s: %w", cfg.State.Etcd.Prefix, err)
	}
	if len(errs) > 0 {
		return fmt.Errorf("state.etcd: the cluster answers, but %w", errors.Join(errs...))
	}
	return nil
}
