// Package puppetcatest runs Debian's Puppet Server (with its certificate
// authority) for tests: on a free loopback port, with its own confdir,
// ssldir, cadir and auth rules, autosigning requests. It issues the bot's
// client certificate the way a node gets one (a CSR to the CA, signed),
// and the auth rules let that certificate manage certificate status, as
// an operator grants opsbot in production. Starting it takes a minute:
// start it once per test binary (Shared).
package puppetcatest

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Jar is where Debian installs Puppet Server.
const Jar = "/usr/share/puppetserver/puppetserver.jar"

// BotCertname is the certname of the bot's client certificate.
const BotCertname = "opsbot"

// Server is a running Puppet Server.
type Server struct {
	Dir  string
	URL  string // https://127.0.0.1:<port>
	Port int
	// CA, Cert and Key are the files of the CA certificate and the bot's
	// client certificate and key.
	CA, Cert, Key string
	cmd           *exec.Cmd
	logs          *os.File
}

var (
	sharedOnce sync.Once
	shared     *Server
	sharedErr  error
)

// Available says why Puppet Server cannot run here, or "".
func Available() string {
	if _, err := os.Stat(Jar); err != nil {
		return "puppetserver is not installed (make deps installs Debian's puppetserver)"
	}
	if _, err := exec.LookPath("java"); err != nil {
		return "java is not installed"
	}
	return ""
}

// Shared starts one server for the whole test binary (stopped by Stop,
// from TestMain).
func Shared() (*Server, error) {
	sharedOnce.Do(func() { shared, sharedErr = Start() })
	return shared, sharedErr
}

// StopShared stops the shared server, if started.
func StopShared() {
	if shared != nil {
		shared.Stop()
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// authConf lets the bot's certificate read, revoke and delete
// certificates (certificate_status), next to Puppet's own rules.
const botRule = `        {
            # opsbot cleans node certificates for approved tickets.
            match-request: {
                path: "/puppet-ca/v1/certificate_status"
                type: path
                method: [get, put, delete]
            }
            allow: ["%s"]
            sort-order: 400
            name: "opsbot cert status"
        },
        {
            match-request: {
                path: "/puppet-ca/v1/certificate_statuses"
                type: path
                method: get
            }
            allow: ["%s"]
            sort-order: 400
            name: "opsbot cert statuses"
        },
`

// Start starts a server in a new directory and waits until it serves.
func Start() (*Server, error) {
	if why := Available(); why != "" {
		return nil, fmt.Errorf("%s", why)
	}
	dir, err := os.MkdirTemp("", "puppetserver-")
	if err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	s := &Server{Dir: dir, Port: port, URL: fmt.Sprintf("https://127.0.0.1:%d", port)}
	conf := filepath.Join(dir, "conf.d")
	for _, d := range []string{"conf.d", "puppet/code", "var", "run", "log", "ssl", "ca", "bot"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	for _, f := range []string{"global.conf", "web-routes.conf", "metrics.conf", "ca.conf"} {
		raw, err := os.ReadFile("/etc/puppet/puppetserver/conf.d/" + f)
		if err != nil {
			return nil, err
		}
		if err := os.WriteFile(filepath.Join(conf, f), raw, 0o644); err != nil {
			return nil, err
		}
	}
	auth, err := os.ReadFile("/etc/puppet/puppetserver/conf.d/auth.conf")
	if err != nil {
		return nil, err
	}
	a := strings.Replace(string(auth), "    rules: [\n", "    rules: [\n"+fmt.Sprintf(botRule, BotCertname, BotCertname), 1)
	files := map[string]string{
		"conf.d/auth.conf": a,
		"conf.d/webserver.conf": fmt.Sprintf(`webserver: {
    client-auth: want
    ssl-host: 127.0.0.1
    ssl-port: %d
}
`, port),
		"conf.d/puppetserver.conf": fmt.Sprintf(`jruby-puppet: {
    ruby-load-path: [/usr/lib/puppetserver/ruby/vendor_ruby]
    gem-home: %[1]s/var/jruby-gems
    gem-path: [${jruby-puppet.gem-home}, "/usr/lib/puppetserver/vendored-jruby-gems"]
    server-conf-dir: %[1]s/puppet
    server-code-dir: %[1]s/puppet/code
    server-var-dir: %[1]s/var
    server-run-dir: %[1]s/run
    server-log-dir: %[1]s/log
    max-active-instances: 1
}
http-client: {}
profiler: {}
`, dir),
		"puppet/puppet.conf": fmt.Sprintf(`[main]
ssldir = %[1]s/ssl
certname = localhost
server = localhost
dns_alt_names = localhost,127.0.0.1
[server]
cadir = %[1]s/ca
autosign = true
vardir = %[1]s/var
`, dir),
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			return nil, err
		}
	}
	s.logs, err = os.Create(filepath.Join(dir, "server.log"))
	if err != nil {
		return nil, err
	}
	s.cmd = exec.Command("java", "-Xms256m", "-Xmx768m", "-XX:+UseSerialGC", "-Djruby.lib=/usr/share/jruby/lib", "-Dlogappender=STDOUT",
		"-jar", Jar, "--config", conf, "--bootstrap-config", "/etc/puppet/puppetserver/services.d")
	s.cmd.Dir = "/usr/share/puppetserver"
	s.cmd.Stdout, s.cmd.Stderr = s.logs, s.logs
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		return nil, err
	}
	insecure := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	deadline := time.Now().Add(5 * time.Minute)
	for {
		resp, err := insecure.Get(s.URL + "/status/v1/simple")
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if strings.TrimSpace(string(body)) == "running" {
				break
			}
		}
		if time.Now().After(deadline) {
			s.Stop()
			return nil, fmt.Errorf("puppetserver did not start in 5 minutes:\n%s", s.Logs())
		}
		time.Sleep(500 * time.Millisecond)
	}
	// The CA's certificate: fetched over the connection, then pinned.
	caPEM, err := get(insecure, s.URL+"/puppet-ca/v1/certificate/ca")
	if err != nil {
		s.Stop()
		return nil, err
	}
	s.CA = filepath.Join(dir, "bot", "ca.pem")
	if err := os.WriteFile(s.CA, caPEM, 0o644); err != nil {
		return nil, err
	}
	s.Cert, s.Key = filepath.Join(dir, "bot", BotCertname+".pem"), filepath.Join(dir, "bot", BotCertname+".key")
	key, certPEM, err := s.Request(BotCertname)
	if err != nil {
		s.Stop()
		return nil, fmt.Errorf("the bot's certificate: %w", err)
	}
	if err := os.WriteFile(s.Key, key, 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(s.Cert, certPEM, 0o644); err != nil {
		return nil, err
	}
	return s, nil
}

// client trusts the server's CA (no client certificate).
func (s *Server) client() (*http.Client, error) {
	pool := x509.NewCertPool()
	ca, err := os.ReadFile(s.CA)
	if err != nil {
		return nil, err
	}
	pool.AppendCertsFromPEM(ca)
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "localhost"}}}, nil
}

func get(c *http.Client, url string) ([]byte, error) {
	resp, err := c.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return nil, fmt.Errorf("GET %s: %d %s", url, resp.StatusCode, body)
	}
	return body, nil
}

// Request does what a node's first agent run does: a key, a CSR for
// certname sent to the CA, and the certificate it signs. It returns the
// key and the certificate (PEM). A certname whose certificate exists is
// refused by the CA.
func (s *Server) Request(certname string) (keyPEM, certPEM []byte, err error) {
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	if s.CA != "" {
		if c, err = s.client(); err != nil {
			return nil, nil, err
		}
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, nil, err
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: certname}}, key)
	if err != nil {
		return nil, nil, err
	}
	csr := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
	req, _ := http.NewRequest(http.MethodPut, s.URL+"/puppet-ca/v1/certificate_request/"+certname, strings.NewReader(string(csr)))
	req.Header.Set("Content-Type", "text/plain")
	resp, err := c.Do(req)
	if err != nil {
		return nil, nil, err
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return nil, nil, fmt.Errorf("the CA refused the CSR for %s: %d %s", certname, resp.StatusCode, body)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		certPEM, err = get(c, s.URL+"/puppet-ca/v1/certificate/"+certname)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			return nil, nil, err
		}
		time.Sleep(200 * time.Millisecond)
	}
	keyPEM = pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	return keyPEM, certPEM, nil
}

// Agent runs a real Puppet agent's first step for certname (puppet ssl
// bootstrap with a fresh ssldir): a key, a CSR to the CA, the signed
// certificate downloaded.
func (s *Server) Agent(certname string) error {
	dir, err := os.MkdirTemp(s.Dir, "agent-")
	if err != nil {
		return err
	}
	cmd := exec.Command("puppet", "ssl", "bootstrap", "--certname", certname, "--server", "localhost", "--serverport", fmt.Sprint(s.Port),
		"--confdir", dir, "--vardir", filepath.Join(dir, "var"), "--ssldir", filepath.Join(dir, "ssl"), "--waitforcert", "0",
		"--localcacert", s.CA, "--color", "false")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("puppet ssl bootstrap %s: %v\n%s", certname, err, out)
	}
	if _, err := os.Stat(filepath.Join(dir, "ssl", "certs", certname+".pem")); err != nil {
		return fmt.Errorf("puppet ssl bootstrap %s: no certificate downloaded\n%s", certname, out)
	}
	return nil
}

// Logs is the server's log.
func (s *Server) Logs() string {
	raw, _ := os.ReadFile(filepath.Join(s.Dir, "server.log"))
	if len(raw) > 8000 {
		raw = raw[len(raw)-8000:]
	}
	return string(raw)
}

// Stop kills the server and removes its directory.
func (s *Server) Stop() {
	if s.cmd != nil && s.cmd.Process != nil {
		syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		s.cmd.Wait()
	}
	if s.logs != nil {
		s.logs.Close()
	}
	os.RemoveAll(s.Dir)
}
