// Package deploy holds the deployment files of STYX and the tests that check
// them against the binaries:
//
//   - compose/: a Docker Compose stack (three etcd members, three JetStream
//     servers for the verdict log, two schedulers, workers, two cluster
//     nodes) on images built FROM scratch by `make images`, every hop over
//     mutual TLS with identities a one-shot pki service issues, and its
//     end-to-end test (`make e2e`);
//   - systemd/: service units, with a worker template per NUMA node, and a
//     unit and an example configuration for styx-nats;
//   - k8s/: Kubernetes manifests (kustomize), the JetStream servers as a
//     StatefulSet;
//   - etcd/cmd/styx-etcd: etcd built from the etcd module, for the images;
//   - nats/cmd/styx-nats: nats-server with JetStream built from the
//     nats-server module, for the images and the systemd unit;
//   - pki/cmd/styx-pki: the CA, certificates per role and identity, and
//     etcd's users and roles for them;
//   - dev/: the all-in-one development cluster (`make run`), with embedded
//     etcd and JetStream and a throwaway CA.
//
// The tests here build the binaries, read the STYX_* variables each one
// accepts from its -h output, and check that every file sets only real
// ones, that Kubernetes objects decode strictly into their API types and
// hang together, that every STYX process names every JetStream server and
// the schedulers keep a stream replica on each, and that systemd accepts
// the units (systemd-analyze verify, when installed). docs/operations.md
// describes adding and removing hosts, and running the verdict log.
package deploy
