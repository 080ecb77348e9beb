package kommander

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"testing"
	"time"
)

// testPKI is a certificate authority made in memory for one test, and a node certificate it
// signed for 127.0.0.1, good as both TLS server and client.
type testPKI struct {
	pool *x509.CertPool
	cert tls.Certificate
}

func newTestPKI(t *testing.T, name string) testPKI {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name + " CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leafTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: name + " node"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return testPKI{pool: pool, cert: tls.Certificate{Certificate: [][]byte{leafDER}, PrivateKey: key}}
}

// mutualTLS presents own's certificate and trusts only trusted's authority, both ways.
func mutualTLS(own, trusted testPKI) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{own.cert},
		RootCAs:      trusted.pool,
		ClientCAs:    trusted.pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
	}
}

// TestTransportMutualTLSPairWorksAndWrongCertificateIsKeptOut: two nodes with certificates
// of the cluster's authority talk; a node whose certificate another authority signed gets
// nothing in, and is not sent anything either.
func TestTransportMutualTLSPairWorksAndWrongCertificateIsKeptOut(t *testing.T) {
	cluster, rogue := newTestPKI(t, "cluster"), newTestPKI(t, "rogue")
	for _, tc := range networkCases() {
		t.Run(tc.name, func(t *testing.T) {
			cfgA, cfgB, cfgC := transportTestConfig("a"), transportTestConfig("b"), transportTestConfig("c")
			cfgA.TLS, cfgB.TLS = mutualTLS(cluster, cluster), mutualTLS(cluster, cluster)
			// c trusts the cluster's authority (so it would accept a's certificate) but
			// presents one the cluster does not trust.
			cfgC.TLS = mutualTLS(rogue, cluster)
			a, b, c := startTransportNode(t, tc, cfgA), startTransportNode(t, tc, cfgB), startTransportNode(t, tc, cfgC)
			expectKeptOut(t, a, b, c, "an untrusted certificate")
		})
	}
}
