// Package deploy holds the deployment files of STYX and the tests that check
// them against the binaries:
//
//   - compose/: a Docker Compose stack (three etcd members, two schedulers,
//     workers, two cluster nodes) on images built FROM scratch by
//     `make images`, and its end-to-end test (`make e2e`);
//   - systemd/: service units, with a worker template per NUMA node;
//   - k8s/: Kubernetes manifests (kustomize);
//   - etcd/cmd/styx-etcd: etcd built from the etcd module, for the images;
//   - dev/: the all-in-one development cluster (`make run`).
//
// The tests here build the binaries, read the STYX_* variables each one
// accepts from its -h output, and check that every file sets only real
// ones, that Kubernetes objects decode strictly into their API types and
// hang together, and that systemd accepts the units (systemd-analyze verify,
// when installed). docs/operations.md describes adding and removing hosts.
package deploy
