package clusternode

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/styx-inference/styx/pkg/embedetcd/etcdtest"
	"github.com/styx-inference/styx/pkg/etcdauth"
	"github.com/styx-inference/styx/pkg/pki"
	"github.com/styx-inference/styx/pkg/pki/pkitest"
	"github.com/styx-inference/styx/pkg/testwait"
)

// TestNodeServesHTTPS: with an identity and --https-addr, the node answers
// the query API over TLS with its certificate (a client trusting the CA
// accepts it), and over plain HTTP as before. Its etcd connection runs
// with its certificate and only its own permissions.
func TestNodeServesHTTPS(t *testing.T) {
	p := pkitest.New(t)
	srv, admin := etcdtest.StartSecure(t, p)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := etcdauth.Grant(ctx, admin, pki.Identity{Role: pki.Node, ID: "node-tls"}); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t, t.TempDir(), fixtureDBPath(t))
	cfg.EtcdEndpoints = []string{srv.Endpoint()}
	cfg.ID = ""
	cfg.PKI = p.Source(t, pki.Node, "node-tls")
	cfg.HTTPSAddr = "127.0.0.1:0"
	r := startNode(t, cfg)
	defer r.stop(t)
	if got := r.node.ID(); got != "node-tls" {
		t.Errorf("node id %q, want the certificate's node-tls", got)
	}

	roots := x509.NewCertPool()
	roots.AddCert(p.CA.Cert)
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: "localhost"}}}
	defer client.CloseIdleConnections()
	resp, err := client.Get("https://" + r.node.HTTPSAddr() + "/v2/192.0.2.1")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.TLS == nil {
		t.Fatalf("https: status %d, tls %v", resp.StatusCode, resp.TLS != nil)
	}
	if id, err := pki.FromCert(resp.TLS.PeerCertificates[0]); err != nil || id != (pki.Identity{Role: pki.Node, ID: "node-tls"}) {
		t.Errorf("served certificate is %v (%v)", id, err)
	}
	resp, err = http.Get("http://" + r.node.HTTPAddr() + "/v2/192.0.2.1")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("http: status %d", resp.StatusCode)
	}
	// A client that does not trust the CA refuses the node's certificate.
	if _, err := http.Get("https://" + r.node.HTTPSAddr() + "/v2/192.0.2.1"); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("a client without the CA: %v, want a certificate error", err)
	}
	// The node registered with its own identity.
	testwait.For(t, 15*time.Second, "the node's registration", func() bool {
		resp, err := admin.Get(ctx, "/styx/nodes/node-tls")
		return err == nil && len(resp.Kvs) == 1
	})
}
