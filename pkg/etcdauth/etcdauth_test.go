package etcdauth_test

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.uber.org/goleak"
	"google.golang.org/grpc"

	"github.com/styx-inference/styx/pkg/embedetcd"
	"github.com/styx-inference/styx/pkg/embedetcd/etcdtest"
	"github.com/styx-inference/styx/pkg/etcdauth"
	"github.com/styx-inference/styx/pkg/keyspace"
	"github.com/styx-inference/styx/pkg/leader"
	"github.com/styx-inference/styx/pkg/modelstore"
	"github.com/styx-inference/styx/pkg/pki"
	"github.com/styx-inference/styx/pkg/pki/pkitest"
	"github.com/styx-inference/styx/pkg/registration"
	"github.com/styx-inference/styx/pkg/testwait"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// cluster is an embedded etcd over TLS with client certificate
// authentication and etcd authentication on, and an admin's client.
type cluster struct {
	srv   *embedetcd.Server
	pki   *pkitest.PKI
	admin *clientv3.Client
}

func newCluster(t *testing.T) *cluster {
	t.Helper()
	p := pkitest.New(t)
	srv, admin := etcdtest.StartSecure(t, p)
	return &cluster{srv: srv, pki: p, admin: admin}
}

// as is a client presenting id's certificate.
func (c *cluster) as(t *testing.T, id pki.Identity) *clientv3.Client {
	t.Helper()
	cli, err := c.srv.ClientAs(c.pki.Source(t, id.Role, id.ID))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// grant grants id with the admin's client and returns a client as id.
func (c *cluster) grant(t *testing.T, id pki.Identity) *clientv3.Client {
	t.Helper()
	if err := etcdauth.Grant(ctx(t), c.admin, id); err != nil {
		t.Fatalf("grant %s: %v", id, err)
	}
	return c.as(t, id)
}

func ctx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func id(role pki.Role, s string) pki.Identity { return pki.Identity{Role: role, ID: s} }

func allowed(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Errorf("%s: %v, want it allowed", what, err)
	}
}

func denied(t *testing.T, what string, err error) {
	t.Helper()
	if !errors.Is(err, rpctypes.ErrPermissionDenied) {
		t.Errorf("%s: err %v, want %v", what, err, rpctypes.ErrPermissionDenied)
	}
}

func put(t *testing.T, cli *clientv3.Client, key string, opts ...clientv3.OpOption) error {
	t.Helper()
	_, err := cli.Put(ctx(t), key, "{}", opts...)
	return err
}

func get(t *testing.T, cli *clientv3.Client, key string, opts ...clientv3.OpOption) error {
	t.Helper()
	_, err := cli.Get(ctx(t), key, opts...)
	return err
}

// exists reads key with the admin's client.
func (c *cluster) exists(t *testing.T, key string) bool {
	t.Helper()
	resp, err := c.admin.Get(ctx(t), key)
	if err != nil {
		t.Fatal(err)
	}
	return len(resp.Kvs) > 0
}

// TestPermissionsTable pins the table the package comment shows.
func TestPermissionsTable(t *testing.T) {
	rw := func(key string, prefix bool) etcdauth.Permission {
		return etcdauth.Permission{Access: etcdauth.ReadWrite, Key: key, Prefix: prefix}
	}
	readAll := etcdauth.Permission{Access: etcdauth.Read, Key: "/styx/", Prefix: true}
	for _, tc := range []struct {
		id   pki.Identity
		root bool
		want []etcdauth.Permission
	}{
		{id(pki.Scheduler, "s1"), false, []etcdauth.Permission{readAll, rw("/styx/leader/", true), rw("/styx/config/", true)}},
		{id(pki.Worker, "w1"), false, []etcdauth.Permission{readAll, rw("/styx/workers/w1", false), rw("/styx/models/canary/w1", false),
			rw("/styx/workers/w1-numa", true), rw("/styx/models/canary/w1-numa", true)}},
		{id(pki.Node, "n1"), false, []etcdauth.Permission{readAll, rw("/styx/nodes/n1", false)}},
		{id(pki.Trainer, "t1"), false, []etcdauth.Permission{readAll, rw("/styx/models/current", false), rw("/styx/models/blobs/", true)}},
		{id(pki.Admin, "ops"), true, nil},
		{id(pki.Etcd, "e1"), false, nil},
		{id(pki.NATS, "n1"), false, nil},
	} {
		if got := etcdauth.Permissions(tc.id); !slices.Equal(got, tc.want) {
			t.Errorf("Permissions(%s) = %v, want %v", tc.id, got, tc.want)
		}
		if got := etcdauth.IsRoot(tc.id); got != tc.root {
			t.Errorf("IsRoot(%s) = %v, want %v", tc.id, got, tc.root)
		}
	}
	if got := etcdauth.Permissions(id(pki.Worker, "w1"))[1].String(); got != "readwrite key /styx/workers/w1" {
		t.Errorf("String() = %q", got)
	}
	if got, want := readAll.RangeEnd(), "/styx0"; got != want {
		t.Errorf("RangeEnd of %v = %q, want %q", readAll, got, want)
	}
}

// TestWorker: a worker registers under its own key on a lease (the
// registrar of pkg/registration, which revokes the lease on the way out),
// writes and clears its canary report on that lease and reads the model,
// and writes nothing else.
func TestWorker(t *testing.T) {
	c := newCluster(t)
	w1 := c.grant(t, id(pki.Worker, "w1"))

	reg, err := registration.New(registration.Config{
		Client: w1, Key: keyspace.WorkerKey("w1"), TTL: 5 * time.Second,
		Value: func() (string, error) { return keyspace.Encode(keyspace.WorkerRegistration{ID: "w1"}) },
	}, zerolog.New(zerolog.NewTestWriter(t)))
	if err != nil {
		t.Fatal(err)
	}
	rctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- reg.Run(rctx) }()
	// The registrar publishes its lease after writing the key.
	testwait.For(t, testwait.Timeout, "w1 registered", func() bool { return reg.Lease() != clientv3.NoLease })
	lease := reg.Lease()
	if !c.exists(t, keyspace.WorkerKey("w1")) {
		t.Error("registered, and no worker key")
	}
	allowed(t, "canary report on the lease", put(t, w1, keyspace.CanaryKey("w1"), clientv3.WithLease(lease)))
	allowed(t, "refresh", reg.Refresh(ctx(t)))
	// The lease now holds the registration and the canary report: the
	// registrar's revoke on the way out needs write on both.
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if c.exists(t, keyspace.WorkerKey("w1")) || c.exists(t, keyspace.CanaryKey("w1")) {
		t.Error("keys still there after the registrar revoked its lease")
	}

	allowed(t, "put canary without lease", put(t, w1, keyspace.CanaryKey("w1")))
	// Its host's NUMA children register under the same certificate.
	allowed(t, "NUMA child registration", put(t, w1, keyspace.WorkerKey("w1-numa0")))
	allowed(t, "NUMA child canary report", put(t, w1, keyspace.CanaryKey("w1-numa1")))
	_, err = w1.Delete(ctx(t), keyspace.CanaryKey("w1"))
	allowed(t, "clear canary report", err)
	allowed(t, "read /styx/", get(t, w1, keyspace.Root, clientv3.WithPrefix()))
	allowed(t, "read model pointer", get(t, w1, keyspace.ModelCurrent))

	for _, key := range []string{
		keyspace.WorkerKey("w2"),
		keyspace.WorkerKey("w10"), // its key is one key, not a prefix
		keyspace.WorkerKey("w10-numa0"),
		keyspace.CanaryKey("w2"),
		keyspace.CanaryKey("w10"),
		keyspace.ShedPolicyKey,
		keyspace.ModelCurrent,
		keyspace.ModelBlobKey("v1", 0),
		keyspace.NodeKey("w1"),
		keyspace.LeaderPrefix + "x",
		"/elsewhere",
	} {
		denied(t, "worker w1 puts "+key, put(t, w1, key))
	}
	_, err = w1.Delete(ctx(t), keyspace.WorkersPrefix, clientv3.WithPrefix())
	denied(t, "worker w1 deletes every registration", err)
	denied(t, "worker w1 reads outside /styx/", get(t, w1, "/elsewhere"))
	denied(t, "worker w1 campaigns", campaign(t, w1))
}

// TestNode: a node registers under its own key, reads the leader and the
// model, and writes nothing else.
func TestNode(t *testing.T) {
	c := newCluster(t)
	n1 := c.grant(t, id(pki.Node, "n1"))

	reg, err := registration.New(registration.Config{
		Client: n1, Key: keyspace.NodeKey("n1"), TTL: 5 * time.Second,
		Value: func() (string, error) { return keyspace.Encode(keyspace.NodeRegistration{ID: "n1"}) },
	}, zerolog.New(zerolog.NewTestWriter(t)))
	if err != nil {
		t.Fatal(err)
	}
	rctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- reg.Run(rctx) }()
	testwait.For(t, testwait.Timeout, "n1 registered", func() bool { return reg.Lease() != clientv3.NoLease })
	if !c.exists(t, keyspace.NodeKey("n1")) {
		t.Error("registered, and no node key")
	}
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if c.exists(t, keyspace.NodeKey("n1")) {
		t.Error("node key still there after the registrar revoked its lease")
	}

	if _, _, err := leader.Current(ctx(t), n1); !errors.Is(err, leader.ErrNoLeader) {
		t.Errorf("leader.Current: %v, want %v", err, leader.ErrNoLeader)
	}
	if _, _, err := modelstore.Current(ctx(t), n1); !errors.Is(err, modelstore.ErrNoModel) {
		t.Errorf("modelstore.Current: %v, want %v", err, modelstore.ErrNoModel)
	}
	for _, key := range []string{
		keyspace.NodeKey("n2"),
		keyspace.WorkerKey("n1"),
		keyspace.ShedPolicyKey,
		keyspace.ModelCurrent,
		// The model follower a node runs clears a canary report it never
		// writes (it reports under no lease): refused, and ignored there.
		keyspace.CanaryKey("node-n1"),
		keyspace.LeaderPrefix + "x",
	} {
		denied(t, "node n1 puts "+key, put(t, n1, key))
	}
	denied(t, "node n1 campaigns", campaign(t, n1))
}

// campaign runs a scheduler's election round as cli: campaign, resign,
// close the session (revoking its lease). It returns the first error.
func campaign(t *testing.T, cli *clientv3.Client) error {
	t.Helper()
	sess, err := concurrency.NewSession(cli, concurrency.WithTTL(5))
	if err != nil {
		return err
	}
	defer sess.Close()
	el := concurrency.NewElection(sess, strings.TrimSuffix(keyspace.LeaderPrefix, "/"))
	v, err := keyspace.Encode(keyspace.LeaderInfo{ID: "x"})
	if err != nil {
		t.Fatal(err)
	}
	if err := el.Campaign(ctx(t), v); err != nil {
		return err
	}
	if err := el.Resign(ctx(t)); err != nil {
		return err
	}
	return sess.Close()
}

// TestScheduler: a scheduler campaigns on /styx/leader/ and leads, follows
// the workers and writes /styx/config/; it writes no registration and no
// model.
func TestScheduler(t *testing.T) {
	c := newCluster(t)
	s1 := c.grant(t, id(pki.Scheduler, "s1"))
	n1 := c.grant(t, id(pki.Node, "n1"))

	sess, err := concurrency.NewSession(s1, concurrency.WithTTL(5))
	if err != nil {
		t.Fatal(err)
	}
	el := concurrency.NewElection(sess, strings.TrimSuffix(keyspace.LeaderPrefix, "/"))
	v, err := keyspace.Encode(keyspace.LeaderInfo{ID: "s1", GRPCAddr: "s1:1"})
	if err != nil {
		t.Fatal(err)
	}
	allowed(t, "campaign", el.Campaign(ctx(t), v))
	li, _, err := leader.Current(ctx(t), n1)
	if err != nil || li.ID != "s1" {
		t.Errorf("the node sees leader %+v, %v; want s1", li, err)
	}
	allowed(t, "resign", el.Resign(ctx(t)))
	allowed(t, "close the election session", sess.Close())
	allowed(t, "campaign again", campaign(t, s1))

	shed, err := keyspace.Encode(keyspace.ShedPolicy{Mode: "newest"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = s1.Put(ctx(t), keyspace.ShedPolicyKey, shed)
	allowed(t, "write the shedding policy", err)
	allowed(t, "list the workers", get(t, s1, keyspace.WorkersPrefix, clientv3.WithPrefix()))
	wch := s1.Watch(clientv3.WithRequireLeader(ctx(t)), keyspace.WorkersPrefix, clientv3.WithPrefix(), clientv3.WithCreatedNotify())
	if wr := <-wch; wr.Err() != nil || !wr.Created {
		t.Errorf("watch /styx/workers/: %v, created %v", wr.Err(), wr.Created)
	}

	for _, key := range []string{
		keyspace.WorkerKey("w1"),
		keyspace.NodeKey("n1"),
		keyspace.ModelCurrent,
		keyspace.ModelBlobKey("v1", 0),
		keyspace.CanaryKey("w1"),
	} {
		denied(t, "scheduler s1 puts "+key, put(t, s1, key))
	}
}

// TestModelWriters: only trainers and admins store artifacts and move
// the model pointer (modelstore's compare-and-swap); everyone reads it.
func TestModelWriters(t *testing.T) {
	c := newCluster(t)
	artifact := []byte("model bytes")
	for _, who := range []pki.Identity{id(pki.Worker, "w1"), id(pki.Node, "n1"), id(pki.Scheduler, "s1")} {
		cli := c.grant(t, who)
		_, err := modelstore.Store(ctx(t), cli, "v0", artifact)
		denied(t, string(who.Role)+" stores an artifact", err)
		ref := modelstore.Ref("v0", artifact, modelstore.EtcdURL("v0"))
		_, err = modelstore.Activate(ctx(t), cli, ref)
		denied(t, string(who.Role)+" activates a model", err)
		denied(t, string(who.Role)+" puts the pointer", put(t, cli, keyspace.ModelCurrent))
	}

	tr := c.grant(t, id(pki.Trainer, "t1"))
	w1 := c.as(t, id(pki.Worker, "w1"))
	for i, cli := range []*clientv3.Client{tr, c.admin} {
		ver := []string{"v1", "v2"}[i]
		ref, err := modelstore.Store(ctx(t), cli, ver, artifact)
		allowed(t, "store "+ver, err)
		_, err = modelstore.Activate(ctx(t), cli, ref)
		allowed(t, "activate "+ver, err)
		p, _, err := modelstore.Current(ctx(t), w1)
		if err != nil || p.Version != ver {
			t.Fatalf("the worker reads %+v, %v; want %s", p, err, ver)
		}
		b, err := modelstore.Fetch(ctx(t), w1, p.ModelRef)
		if err != nil || string(b) != string(artifact) {
			t.Errorf("the worker fetches %q, %v", b, err)
		}
	}
	_, err := modelstore.Rollback(ctx(t), tr)
	allowed(t, "trainer rolls back", err)
	_, err = modelstore.Prune(ctx(t), tr)
	allowed(t, "trainer prunes", err)
	allowed(t, "trainer reads canary reports", get(t, tr, keyspace.CanaryPrefix, clientv3.WithPrefix()))
	for _, key := range []string{keyspace.CanaryKey("w1"), keyspace.ShedPolicyKey, keyspace.WorkerKey("w1"), keyspace.LeaderPrefix + "x"} {
		denied(t, "trainer puts "+key, put(t, tr, key))
	}
}

// handshake connects with cfg, asks for /version and reads the answer's
// first byte: in TLS 1.3 a client finishes its handshake before the server
// has checked the client's certificate, and the server's verdict arrives
// with the first read (an alert, or the answer a served client receives).
func handshake(t *testing.T, addr string, cfg *tls.Config) error {
	t.Helper()
	conn, err := (&tls.Dialer{Config: cfg}).DialContext(ctx(t), "tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(testwait.Timeout)); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Write([]byte("GET /version HTTP/1.1\r\nHost: etcd\r\n\r\n")); err != nil {
		return err
	}
	_, err = conn.Read(make([]byte, 1))
	return err
}

// refusedByServer reports whether err is the TLS alert the server sent.
func refusedByServer(err error, alert string) bool {
	var oe *net.OpError
	return errors.As(err, &oe) && oe.Op == "remote error" && strings.HasSuffix(oe.Error(), "tls: "+alert)
}

func clientTLS(t *testing.T, dir string) *tls.Config {
	t.Helper()
	cfg := &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true} // the server's identity is not what is tested
	if dir != "" {
		pair, err := tls.LoadX509KeyPair(dir+"/"+pki.CertFile, dir+"/"+pki.KeyFile)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return cfg
}

// TestRefusedClients: the server refuses in the TLS handshake a client
// with no certificate, one signed by another CA and an expired one; a
// certificate of the CA whose identity was never granted passes TLS and is
// refused every key.
func TestRefusedClients(t *testing.T) {
	c := newCluster(t)
	addr := c.srv.Endpoint()
	old := pkitest.Opts()
	old.Now = time.Now().Add(-48 * time.Hour)
	for _, tc := range []struct {
		name  string
		dir   string
		alert string // "": served
	}{
		{"a certificate of the CA", c.pki.Dir(t, pki.Worker, "w1"), ""},
		{"no certificate", "", "certificate required"},
		{"another CA", pkitest.New(t).Dir(t, pki.Admin, "ops"), "unknown certificate authority"},
		{"expired", c.pki.Issue(t, pki.Admin, "ops", old), "expired certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := handshake(t, addr, clientTLS(t, tc.dir))
			switch {
			case tc.alert == "" && err != nil:
				t.Errorf("handshake: %v, want served", err)
			case tc.alert != "" && !refusedByServer(err, tc.alert):
				t.Errorf("handshake: %v, want the server's TLS alert %q", err, tc.alert)
			}
		})
	}

	// A certificate of the CA that names no etcd user: no key, read or write.
	stranger := c.as(t, id(pki.Worker, "w9"))
	denied(t, "ungranted identity reads", get(t, stranger, keyspace.Root, clientv3.WithPrefix()))
	denied(t, "ungranted identity writes its own key", put(t, stranger, keyspace.WorkerKey("w9")))
	// An etcd server's certificate names no user either.
	boot, err := c.srv.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer boot.Close()
	denied(t, "the etcd server's identity reads", get(t, boot, keyspace.Root, clientv3.WithPrefix()))
}

// TestRevoke: a revoked identity loses its access with its next request;
// revoking again is no error, granting again restores it.
func TestRevoke(t *testing.T) {
	c := newCluster(t)
	w1id := id(pki.Worker, "w1")
	w1 := c.grant(t, w1id)
	allowed(t, "put before revoke", put(t, w1, keyspace.WorkerKey("w1")))
	for range 2 {
		if err := etcdauth.Revoke(ctx(t), c.admin, w1id); err != nil {
			t.Fatalf("revoke: %v", err)
		}
	}
	denied(t, "put after revoke", put(t, w1, keyspace.WorkerKey("w1")))
	denied(t, "get after revoke", get(t, w1, keyspace.WorkerKey("w1")))
	if _, err := c.admin.RoleGet(ctx(t), etcdauth.UserName(w1id)); !errors.Is(err, rpctypes.ErrRoleNotFound) {
		t.Errorf("role after revoke: %v, want %v", err, rpctypes.ErrRoleNotFound)
	}
	if err := etcdauth.Grant(ctx(t), c.admin, w1id); err != nil {
		t.Fatal(err)
	}
	allowed(t, "put after granting again", put(t, w1, keyspace.WorkerKey("w1")))

	// Revoking an admin deletes the user, never the root role.
	ops2 := id(pki.Admin, "ops2")
	a2 := c.grant(t, ops2)
	allowed(t, "second admin writes the pointer", put(t, a2, keyspace.ModelCurrent))
	if err := etcdauth.Revoke(ctx(t), c.admin, ops2); err != nil {
		t.Fatal(err)
	}
	denied(t, "revoked admin writes the pointer", put(t, a2, keyspace.ModelCurrent))
	allowed(t, "remaining admin writes the pointer", put(t, c.admin, keyspace.ModelCurrent))
}

// TestGrantIsExact: Grant restores a role tampered with (an extra
// permission, a changed access, a missing one) and takes back any other
// role the user was given.
func TestGrantIsExact(t *testing.T) {
	c := newCluster(t)
	w1id := id(pki.Worker, "w1")
	w1 := c.grant(t, w1id)
	name := etcdauth.UserName(w1id)
	a := c.admin.Auth
	must := func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(a.RoleGrantPermission(ctx(t), name, keyspace.ModelCurrent, "", clientv3.PermissionType(clientv3.PermReadWrite)))
	must(a.RoleGrantPermission(ctx(t), name, keyspace.Root, clientv3.GetPrefixRangeEnd(keyspace.Root), clientv3.PermissionType(clientv3.PermReadWrite)))
	must(a.RoleRevokePermission(ctx(t), name, keyspace.CanaryKey("w1"), ""))
	must(a.UserGrantRole(ctx(t), name, etcdauth.RootRole))
	allowed(t, "tampered: put the pointer", put(t, w1, keyspace.ModelCurrent))

	if err := etcdauth.Grant(ctx(t), c.admin, w1id); err != nil {
		t.Fatal(err)
	}
	denied(t, "granted again: put the pointer", put(t, w1, keyspace.ModelCurrent))
	denied(t, "granted again: put the shedding policy", put(t, w1, keyspace.ShedPolicyKey))
	allowed(t, "granted again: put the canary report", put(t, w1, keyspace.CanaryKey("w1")))

	u, err := a.UserGet(ctx(t), name)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(u.Roles, []string{name}) {
		t.Errorf("user %s has roles %v, want [%s]", name, u.Roles, name)
	}
	r, err := a.RoleGet(ctx(t), name)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range r.Perm {
		got = append(got, p.PermType.String()+" "+string(p.Key)+".."+string(p.RangeEnd))
	}
	var want []string
	for _, p := range etcdauth.Permissions(w1id) {
		typ := "READ"
		if p.Access == etcdauth.ReadWrite {
			typ = "READWRITE"
		}
		want = append(want, typ+" "+p.Key+".."+p.RangeEnd())
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("role %s holds %v, want %v", name, got, want)
	}
}

// TestEnable: Enable again with an admin's client adds admins and is no
// error; with anyone else's it fails, and so do Grant and Revoke. Servers'
// identities get no user.
func TestEnable(t *testing.T) {
	c := newCluster(t)
	st, err := c.admin.AuthStatus(ctx(t))
	if err != nil || !st.Enabled {
		t.Fatalf("auth status %+v, %v; want enabled", st, err)
	}
	ops2 := id(pki.Admin, "ops2")
	if err := etcdauth.Enable(ctx(t), c.admin, etcdtest.Admin, ops2); err != nil {
		t.Fatalf("enable again: %v", err)
	}
	allowed(t, "added admin writes the pointer", put(t, c.as(t, ops2), keyspace.ModelCurrent))

	s1 := c.grant(t, id(pki.Scheduler, "s1"))
	denied(t, "enable as a scheduler", etcdauth.Enable(ctx(t), s1, id(pki.Admin, "mallory")))
	denied(t, "grant as a scheduler", etcdauth.Grant(ctx(t), s1, id(pki.Worker, "w1")))
	denied(t, "revoke as a scheduler", etcdauth.Revoke(ctx(t), s1, etcdtest.Admin))
	allowed(t, "the first admin is still one", put(t, c.admin, keyspace.ModelCurrent))

	if err := etcdauth.Enable(ctx(t), c.admin, id(pki.Worker, "w1")); err == nil {
		t.Error("enable with a worker as admin: no error")
	}
	for _, who := range []pki.Identity{id(pki.Etcd, "e1"), id(pki.NATS, "n1"), {Role: pki.Worker, ID: "bad/id"}} {
		if err := etcdauth.Grant(ctx(t), c.admin, who); err == nil {
			t.Errorf("grant %s: no error", who)
		}
	}
}

// TestGrantWhileServing: each grant changes etcd's auth revision, and
// etcd refuses a request whose authentication it read at an older one
// (ErrAuthOldRevision, which happens here to a good share of the puts).
// etcd's client retries those, so a serving identity sees no error.
func TestGrantWhileServing(t *testing.T) {
	c := newCluster(t)
	if err := etcdauth.Grant(ctx(t), c.admin, id(pki.Worker, "w1")); err != nil {
		t.Fatal(err)
	}
	var attempts, oldRevision atomic.Int64
	cfg := etcdauth.ClientConfig([]string{c.srv.Endpoint()}, c.pki.Source(t, pki.Worker, "w1"))
	// Inside etcd's retrying interceptor: sees every attempt.
	cfg.DialOptions = []grpc.DialOption{grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		err := invoker(ctx, method, req, reply, cc, opts...)
		attempts.Add(1)
		if errors.Is(rpctypes.Error(err), rpctypes.ErrAuthOldRevision) {
			oldRevision.Add(1)
		}
		return err
	})}
	w1, err := clientv3.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer w1.Close()
	stop := make(chan struct{})
	errs := make(chan error, 1)
	go func() {
		defer close(errs)
		for n := 0; ; n++ {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := w1.Put(context.Background(), keyspace.WorkerKey("w1"), strconv.Itoa(n)); err != nil {
				errs <- err
				return
			}
		}
	}()
	for n := range 20 {
		if err := etcdauth.Grant(ctx(t), c.admin, id(pki.Node, "n"+strconv.Itoa(n))); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	if err := <-errs; err != nil {
		t.Errorf("worker w1 writing while others are granted: %v", err)
	}
	t.Logf("%d attempts, %d refused for an old auth revision and retried", attempts.Load(), oldRevision.Load())
}
