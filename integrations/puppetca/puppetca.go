// Package puppetca talks to a Puppet Server certificate authority over
// its HTTP API (/puppet-ca/v1/certificate_status), authenticated by the
// bot's client certificate, which the CA's auth rules allow: it reads a
// node's certificate (state and fingerprint) and cleans it (revoke, then
// delete) so the node can request a new one.
package puppetca

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strings"
	"time"
)

// Config reaches the CA.
type Config struct {
	// URL is the CA's address, e.g. https://puppet.example.com:8140.
	URL string `yaml:"url"`
	// CA verifies the server; Cert and Key are the bot's client
	// certificate, which the CA's auth.conf allows on certificate_status.
	CA   string `yaml:"ca"`
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
	// ServerName overrides the name checked in the server's certificate
	// (default: the URL's host).
	ServerName string        `yaml:"server_name"`
	Timeout    time.Duration `yaml:"-"`
}

// Status is a certificate as the CA knows it.
type Status struct {
	Name        string `json:"name"`
	State       string `json:"state"` // requested, signed, revoked
	Fingerprint string `json:"fingerprint"`
	// Fingerprints holds SHA256 and others.
	Fingerprints map[string]string `json:"fingerprints"`
	Serial       int64             `json:"serial_number"`
	NotAfter     string            `json:"not_after"`
}

// SHA256 is the certificate's SHA-256 fingerprint (or the default one).
func (s Status) SHA256() string {
	if f := s.Fingerprints["SHA256"]; f != "" {
		return f
	}
	return s.Fingerprint
}

// ErrNotFound means the CA has no certificate or request of that name.
var ErrNotFound = errors.New("the CA has no certificate of that name")

// certname is what a certname may be (Puppet's own rule: lower case).
var certname = regexp.MustCompile(`^[a-z0-9._-]{1,253}$`)

// CheckCertname says what is wrong with a certname, with an example.
func CheckCertname(name string) error {
	if !certname.MatchString(name) {
		return fmt.Errorf("%q is not a Puppet certname: lower-case letters, digits, dots, dashes, e.g. web-01.store.example.com", name)
	}
	return nil
}

// Client is a CA client.
type Client struct {
	base string
	http *http.Client
}

// New builds a client from the configuration's files.
func New(cfg Config) (*Client, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("puppet_ca.url %q: the CA's https URL, e.g. https://puppet.example.com:8140", cfg.URL)
	}
	caPEM, err := os.ReadFile(cfg.CA)
	if err != nil {
		return nil, fmt.Errorf("puppet_ca.ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("puppet_ca.ca %s: no PEM certificate in it", cfg.CA)
	}
	pair, err := tls.LoadX509KeyPair(cfg.Cert, cfg.Key)
	if err != nil {
		return nil, fmt.Errorf("puppet_ca.cert/key: %w", err)
	}
	timeout := cfg.Timeout
	if timeout <= 0 {
		timeout = 15 * time.Second
	}
	tc := &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair}, ServerName: cfg.ServerName, MinVersion: tls.VersionTLS12}
	return &Client{base: strings.TrimRight(cfg.URL, "/") + "/puppet-ca/v1",
		http: &http.Client{Timeout: timeout, Transport: &http.Transport{TLSClientConfig: tc}}}, nil
}

func (c *Client) do(ctx context.Context, method, path string, body any) (int, []byte, error) {
	var rd io.Reader
	if body != nil {
		raw, _ := json.Marshal(body)
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("puppet CA: %w", err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode == http.StatusForbidden || resp.StatusCode == http.StatusUnauthorized {
		return resp.StatusCode, raw, fmt.Errorf("the puppet CA refuses opsbot's certificate for %s %s (%d: %s): allow its certname on /puppet-ca/v1/certificate_status in the CA's auth.conf",
			method, path, resp.StatusCode, strings.TrimSpace(string(raw)))
	}
	return resp.StatusCode, raw, nil
}

// Status reads a certificate's status; ErrNotFound when there is none.
func (c *Client) Status(ctx context.Context, name string) (Status, error) {
	if err := CheckCertname(name); err != nil {
		return Status{}, err
	}
	code, raw, err := c.do(ctx, http.MethodGet, "/certificate_status/"+url.PathEscape(name), nil)
	if err != nil {
		return Status{}, err
	}
	switch code {
	case http.StatusOK:
		var s Status
		if err := json.Unmarshal(raw, &s); err != nil {
			return s, fmt.Errorf("puppet CA: an unreadable status for %s: %w", name, err)
		}
		return s, nil
	case http.StatusNotFound:
		return Status{}, ErrNotFound
	}
	return Status{}, fmt.Errorf("puppet CA: status of %s: %d %s", name, code, strings.TrimSpace(string(raw)))
}

// Clean revokes a node's certificate (when signed) and deletes what the
// CA holds of it, so the node can request a new one. It returns the
// status before. Idempotent: a certificate already gone is success with
// found false, so a retry after a crash does not fail.
func (c *Client) Clean(ctx context.Context, name string) (before Status, found bool, err error) {
	before, err = c.Status(ctx, name)
	if errors.Is(err, ErrNotFound) {
		return before, false, nil
	}
	if err != nil {
		return before, false, err
	}
	if before.State == "signed" {
		code, raw, err := c.do(ctx, http.MethodPut, "/certificate_status/"+url.PathEscape(name), map[string]string{"desired_state": "revoked"})
		if err != nil {
			return before, true, err
		}
		if code/100 != 2 && code != http.StatusNotFound {
			return before, true, fmt.Errorf("puppet CA: revoke %s: %d %s", name, code, strings.TrimSpace(string(raw)))
		}
	}
	code, raw, err := c.do(ctx, http.MethodDelete, "/certificate_status/"+url.PathEscape(name), nil)
	if err != nil {
		return before, true, err
	}
	if code/100 != 2 && code != http.StatusNotFound {
		return before, true, fmt.Errorf("puppet CA: delete %s: %d %s", name, code, strings.TrimSpace(string(raw)))
	}
	return before, true, nil
}

// Ping checks the CA answers the bot's certificate (config check).
func (c *Client) Ping(ctx context.Context) error {
	code, raw, err := c.do(ctx, http.MethodGet, "/certificate_statuses/any", nil)
	if err != nil {
		return err
	}
	if code != http.StatusOK {
		return fmt.Errorf("puppet CA: list certificates: %d %s", code, strings.TrimSpace(string(raw)))
	}
	return nil
}
