// Package ldaptest runs Debian's OpenLDAP server (slapd) for tests: on a
// free loopback port (plain LDAP with StartTLS, and LDAPS on a second
// port), a test suffix, a schema carrying the Puppet node group, and
// node and group entries.
package ldaptest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Suffix, the bind DN and its password of the test directory.
const (
	Suffix   = "dc=example,dc=test"
	BindDN   = "cn=opsbot," + Suffix
	Password = "ldap-test-password-0123"
	Admin    = "cn=admin," + Suffix
)

// Schema is the node classification schema: a node's group, role and
// puppet status, and group entries.
const Schema = `attributetype ( 1.3.6.1.4.1.58724.1.1 NAME 'puppetGroup'
  DESC 'the Puppet node group of a server'
  EQUALITY caseIgnoreMatch SUBSTR caseIgnoreSubstringsMatch
  SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
attributetype ( 1.3.6.1.4.1.58724.1.2 NAME 'puppetRole'
  EQUALITY caseIgnoreMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
attributetype ( 1.3.6.1.4.1.58724.1.3 NAME 'puppetStatus'
  EQUALITY caseIgnoreMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
objectclass ( 1.3.6.1.4.1.58724.2.1 NAME 'puppetNode' SUP top AUXILIARY
  MAY ( puppetGroup $ puppetRole $ puppetStatus ) )
objectclass ( 1.3.6.1.4.1.58724.2.2 NAME 'puppetNodeGroup' SUP top STRUCTURAL
  MUST cn MAY description )
`

// Server is a running slapd.
type Server struct {
	Dir string
	// URL is ldap://127.0.0.1:<port> (StartTLS offered); LDAPS is
	// ldaps://127.0.0.1:<port>; CA is the certificate that signs both.
	URL, LDAPS, CA string
	cmd            *exec.Cmd
}

// Available says why slapd cannot run here, or "".
func Available() string {
	for _, p := range []string{"/usr/sbin/slapd", "/usr/sbin/slapadd", "/usr/lib/ldap/back_mdb.so"} {
		if _, err := os.Stat(p); err != nil {
			return "OpenLDAP is not installed (make deps installs Debian's slapd and ldap-utils)"
		}
	}
	return ""
}

func freePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Start starts slapd with entries (LDIF, after the base entries) and
// stops it when the test ends.
func Start(t testing.TB, entries string) *Server {
	t.Helper()
	if why := Available(); why != "" {
		t.Skip(why)
	}
	dir := t.TempDir()
	s := &Server{Dir: dir}
	for _, d := range []string{"db"} {
		os.MkdirAll(filepath.Join(dir, d), 0o700)
	}
	cert, key := s.selfSigned(t)
	conf := fmt.Sprintf(`include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include %[1]s/puppet.schema
modulepath /usr/lib/ldap
moduleload back_mdb
pidfile %[1]s/slapd.pid
TLSCertificateFile %[2]s
TLSCertificateKeyFile %[3]s
database mdb
maxsize 67108864
suffix "%[4]s"
rootdn "%[5]s"
rootpw %[6]s
directory %[1]s/db
access to attrs=userPassword by anonymous auth by * none
access to * by dn.exact="%[7]s" write by * none
`, dir, cert, key, Suffix, Admin, Password, BindDN)
	files := map[string]string{"puppet.schema": Schema, "slapd.conf": conf, "base.ldif": fmt.Sprintf(`dn: %[1]s
objectClass: dcObject
objectClass: organization
dc: example
o: example

dn: %[2]s
objectClass: simpleSecurityObject
objectClass: organizationalRole
cn: opsbot
userPassword: %[3]s

dn: ou=nodes,%[1]s
objectClass: organizationalUnit
ou: nodes

dn: ou=groups,%[1]s
objectClass: organizationalUnit
ou: groups

%[4]s`, Suffix, BindDN, Password, entries)}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := exec.Command("/usr/sbin/slapadd", "-f", filepath.Join(dir, "slapd.conf"), "-l", filepath.Join(dir, "base.ldif")).CombinedOutput(); err != nil {
		t.Fatalf("slapadd: %v\n%s", err, out)
	}
	port, tlsPort := freePort(t), freePort(t)
	s.URL, s.LDAPS = fmt.Sprintf("ldap://127.0.0.1:%d", port), fmt.Sprintf("ldaps://127.0.0.1:%d", tlsPort)
	s.cmd = exec.Command("/usr/sbin/slapd", "-d", "0", "-f", filepath.Join(dir, "slapd.conf"), "-h", s.URL+"/ "+s.LDAPS+"/")
	logs, _ := os.Create(filepath.Join(dir, "slapd.log"))
	s.cmd.Stdout, s.cmd.Stderr = logs, logs
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.cmd.Process.Kill(); s.cmd.Wait(); logs.Close() })
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.Dial("tcp", strings.TrimPrefix(s.URL, "ldap://"))
		if err == nil {
			c.Close()
			return s
		}
		if time.Now().After(deadline) {
			raw, _ := os.ReadFile(filepath.Join(dir, "slapd.log"))
			t.Fatalf("slapd did not start: %v\n%s", err, raw)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// selfSigned writes a CA-signed-by-itself certificate for 127.0.0.1.
func (s *Server) selfSigned(t testing.TB) (certPath, keyPath string) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "ldap test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"},
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	certPath, keyPath = filepath.Join(s.Dir, "cert.pem"), filepath.Join(s.Dir, "key.pem")
	os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)
	s.CA = certPath
	return certPath, keyPath
}

// Node is an LDIF entry for a node in a group.
func Node(host, group, role string) string {
	return fmt.Sprintf("dn: cn=%s,ou=nodes,%s\nobjectClass: device\nobjectClass: puppetNode\ncn: %s\npuppetGroup: %s\npuppetRole: %s\npuppetStatus: enabled\n\n",
		host, Suffix, host, group, role)
}

// Group is an LDIF entry for a group.
func Group(name string) string {
	return fmt.Sprintf("dn: cn=%s,ou=groups,%s\nobjectClass: puppetNodeGroup\ncn: %s\n\n", name, Suffix, name)
}
