//go:build unix

package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestNodeProcessesIsolatedLeaderS18 cuts the leader of a partition off from the others
// with the test's own proxies (real processes, the outermost layer of the tests: nodes cut off from each other). The
// majority elects a new leader and keeps acknowledging writes; the isolated leader steps
// down (CheckQuorum) and answers the request it holds without acknowledging it; after
// healing, every acknowledged write reads back through the node that was cut off.
func TestNodeProcessesIsolatedLeaderS18(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes; skipped with -short")
	}
	c := startProcClusterWith(t, 3, 2, true, processFlags...)
	leaders := c.waitLeaders(30 * time.Second)
	const p = 0
	old := c.index(leaders[p])
	w := c.startWriters("cut", 3)
	defer w.end()
	acked := w.acked
	w.grow(30, "writes are acknowledged before the cut")

	c.isolate(old, true)
	isolatedKey := c.keyIn("isolated", p)
	r, err := c.do(old, "PUT", "/kv/"+isolatedKey, []byte("lost"))
	if err != nil {
		t.Fatal(err)
	}
	if r.code == http.StatusNoContent {
		t.Fatalf("the isolated leader acknowledged a write it cannot commit: %v", r)
	}
	if r.code != http.StatusServiceUnavailable && r.code != http.StatusGatewayTimeout {
		t.Fatalf("the isolated leader answered %v, want 503 or 504", r)
	}
	t.Logf("the isolated leader %s answered %v", c.nodes[old].id, r)
	c.eventually(30*time.Second, "the isolated leader steps down (CheckQuorum)", func() bool {
		s, err := c.status(old)
		return err == nil && s.Partitions[p].Role != "leader"
	})
	w.grow(30, "the majority acknowledges writes during the cut")

	c.isolate(old, false)
	c.waitLeaders(60 * time.Second)
	w.end()
	got := c.must(old, "GET", "/kv/"+isolatedKey, nil)
	if r.code == http.StatusServiceUnavailable && got.code != http.StatusNotFound {
		t.Fatalf("the isolated leader answered 503, but the write applied: %v", got)
	}
	c.verifyAcked(old, acked)
}

// TestNodeProcessesWithSecretAndTLS runs clusters whose nodes prove a shared secret, over
// mutual TLS (TCP) and over the HTTP transport, and replicates through them.
func TestNodeProcessesWithSecretAndTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes; skipped with -short")
	}
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	if err := os.WriteFile(secret, []byte("a shared secret of more than sixteen bytes\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, key, ca := writeTestPKI(t, dir)
	for name, flags := range map[string][]string{
		"tcp-mtls-secret": {"-transport", "tcp", "-secret-file", secret, "-tls-cert", cert, "-tls-key", key, "-tls-ca", ca, "-cluster", "tls-test"},
		"http-secret":     {"-transport", "http", "-secret-file", secret},
	} {
		t.Run(name, func(t *testing.T) {
			c := startProcCluster(t, 3, 2, append(append([]string{}, processFlags...), flags...)...)
			c.expect(0, "PUT", "/kv/secure", []byte("yes"), http.StatusNoContent)
			if r := c.expect(2, "GET", "/kv/secure", nil, http.StatusOK); string(r.body) != "yes" {
				t.Fatalf("read through n3: %q", r.body)
			}
		})
	}
}

// writeTestPKI writes a CA and a certificate for 127.0.0.1 signed by it (for server and
// client use), as PEM files, and returns their paths.
func writeTestPKI(t *testing.T, dir string) (certFile, keyFile, caFile string) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kommander test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	leafKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leafTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "kommander node"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, caCert, &leafKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(leafKey)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name, typ string, der []byte) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	return write("node.pem", "CERTIFICATE", leafDER), write("node-key.pem", "EC PRIVATE KEY", keyDER), write("ca.pem", "CERTIFICATE", caDER)
}
