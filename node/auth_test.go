package node

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

func TestAuthToken(t *testing.T) {
	cfg := testConfig(t)
	cfg.Token = "s3cret"
	n := startNode(t, cfg)
	if _, err := nats.Connect(n.ClientURL()); err == nil {
		t.Fatal("a client without the token was let in")
	}
	if _, err := nats.Connect(n.ClientURL(), nats.Token("wrong")); err == nil {
		t.Fatal("a client with a wrong token was let in")
	}
	nc := connect(t, n, nats.Token("s3cret"))
	if r := request(t, nc, SubjectCheck, `{"limiter":"api","key":"a"}`); r.code != 0 || !*decodeDecision(t, r.data).Allowed {
		t.Fatalf("with the token: %d %s", r.code, r.data)
	}
}

func TestAuthUserPassword(t *testing.T) {
	cfg := testConfig(t)
	cfg.User, cfg.Password = "flux", "pa55"
	n := startNode(t, cfg)
	if _, err := nats.Connect(n.ClientURL()); err == nil {
		t.Fatal("a client without credentials was let in")
	}
	if _, err := nats.Connect(n.ClientURL(), nats.UserInfo("flux", "nope")); err == nil {
		t.Fatal("a client with a wrong password was let in")
	}
	nc := connect(t, n, nats.UserInfo("flux", "pa55"))
	if r := request(t, nc, SubjectCheck, `{"limiter":"api","key":"a"}`); r.code != 0 {
		t.Fatalf("with credentials: %d %s", r.code, r.desc)
	}
}

func TestTLS(t *testing.T) {
	dir := t.TempDir()
	ca, cert, key := writeCerts(t, dir)
	cfg := testConfig(t)
	cfg.TLSCert, cfg.TLSKey, cfg.TLSCA = cert, key, ca
	n := startNode(t, cfg)
	if got := n.ClientURL(); len(got) < 6 || got[:6] != "tls://" {
		t.Fatalf("ClientURL() = %q, want tls://", got)
	}
	plain := "nats://" + n.ClientURL()[len("tls://"):]
	if _, err := nats.Connect(plain); err == nil {
		t.Fatal("a client that does not trust the CA connected")
	}
	nc := connect(t, n, nats.RootCAs(ca))
	if r := request(t, nc, SubjectCheck, `{"limiter":"api","key":"a"}`); r.code != 0 {
		t.Fatalf("over TLS: %d %s", r.code, r.desc)
	}
	if !nc.TLSRequired() {
		t.Fatal("connection is not TLS")
	}
}

func TestMutualTLS(t *testing.T) {
	dir := t.TempDir()
	ca, cert, key := writeCerts(t, dir)
	cfg := testConfig(t)
	cfg.TLSCert, cfg.TLSKey, cfg.TLSCA, cfg.TLSVerify = cert, key, ca, true
	n := startNode(t, cfg) // its own connection presents the certificate
	if _, err := nats.Connect(n.ClientURL(), nats.RootCAs(ca)); err == nil {
		t.Fatal("a client without a certificate connected")
	}
	nc := connect(t, n, nats.RootCAs(ca), nats.ClientCert(cert, key))
	if r := request(t, nc, SubjectCheck, `{"limiter":"api","key":"a"}`); r.code != 0 {
		t.Fatalf("with a client certificate: %d %s", r.code, r.desc)
	}
}

// writeCerts writes a CA and a certificate for 127.0.0.1 and localhost,
// usable by servers and clients, and returns the three PEM files.
func writeCerts(t *testing.T, dir string) (caFile, certFile, keyFile string) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "flux test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "flux-node"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:     []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name, typ string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	return write("ca.pem", "CERTIFICATE", caDER), write("cert.pem", "CERTIFICATE", der), write("key.pem", "EC PRIVATE KEY", keyDER)
}
