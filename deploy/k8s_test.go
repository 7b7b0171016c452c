package deploy_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	k8syaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

const k8sDir = "k8s"

// k8sObject is one decoded manifest document.
type k8sObject struct {
	where string // file:document
	kind  string
	meta  metav1.ObjectMeta
	obj   any
}

// workload is a Deployment, DaemonSet or StatefulSet.
type workload struct {
	where, kind, name string
	selector          *metav1.LabelSelector
	tpl               corev1.PodTemplateSpec
	claims            []corev1.PersistentVolumeClaim
	replicas          *int32
}

// newTyped returns the API type a document of this apiVersion and kind
// decodes into; a kind the manifests do not use is an error.
func newTyped(tm metav1.TypeMeta) (any, error) {
	switch tm.APIVersion + " " + tm.Kind {
	case "v1 Namespace":
		return &corev1.Namespace{}, nil
	case "v1 ConfigMap":
		return &corev1.ConfigMap{}, nil
	case "v1 Service":
		return &corev1.Service{}, nil
	case "apps/v1 Deployment":
		return &appsv1.Deployment{}, nil
	case "apps/v1 DaemonSet":
		return &appsv1.DaemonSet{}, nil
	case "apps/v1 StatefulSet":
		return &appsv1.StatefulSet{}, nil
	case "policy/v1 PodDisruptionBudget":
		return &policyv1.PodDisruptionBudget{}, nil
	}
	return nil, fmt.Errorf("unexpected apiVersion %q kind %q", tm.APIVersion, tm.Kind)
}

// loadManifests decodes every document of every manifest strictly (an
// unknown or duplicate field is an error) into its Kubernetes API type.
func loadManifests(t *testing.T) []k8sObject {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(k8sDir, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in %s: %v", k8sDir, err)
	}
	var out []k8sObject
	for _, f := range files {
		if filepath.Base(f) == "kustomization.yaml" {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range splitYAML(t, f, b) {
			where := fmt.Sprintf("%s#%d", f, i+1)
			var tm metav1.TypeMeta
			if err := yaml.Unmarshal(doc, &tm); err != nil {
				t.Errorf("%s: %v", where, err)
				continue
			}
			obj, err := newTyped(tm)
			if err != nil {
				t.Errorf("%s: %v", where, err)
				continue
			}
			if err := yaml.UnmarshalStrict(doc, obj); err != nil {
				t.Errorf("%s: strict decoding into %T: %v", where, obj, err)
				continue
			}
			o := k8sObject{where: where, kind: tm.Kind, obj: obj}
			m := obj.(metav1.Object)
			o.meta = metav1.ObjectMeta{Name: m.GetName(), Namespace: m.GetNamespace()}
			if o.meta.Name == "" {
				t.Errorf("%s: %s without metadata.name", where, tm.Kind)
			}
			out = append(out, o)
		}
	}
	return out
}

// splitYAML splits a multi-document YAML file into its documents (the
// apimachinery reader) and drops those that hold only comments.
func splitYAML(t *testing.T, name string, b []byte) [][]byte {
	t.Helper()
	var docs [][]byte
	r := k8syaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(b)))
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return docs
		}
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for line := range strings.Lines(string(doc)) {
			if s := strings.TrimSpace(line); s != "" && s != "---" && !strings.HasPrefix(s, "#") {
				docs = append(docs, doc)
				break
			}
		}
	}
}

var imageRef = regexp.MustCompile(`^styx-(nats|scheduler|worker|node):([A-Za-z0-9_][A-Za-z0-9_.-]*)$`)

func TestKubernetesManifests(t *testing.T) {
	objs := loadManifests(t)
	if t.Failed() {
		return
	}

	var (
		namespace    string
		configMaps   = map[string]*corev1.ConfigMap{}
		services     []*corev1.Service
		workloads    []workload
		pdbs         []*policyv1.PodDisruptionBudget
		statefulSets []*appsv1.StatefulSet
	)
	for _, o := range objs {
		switch v := o.obj.(type) {
		case *corev1.Namespace:
			namespace = v.Name
		case *corev1.ConfigMap:
			configMaps[v.Name] = v
		case *corev1.Service:
			services = append(services, v)
		case *appsv1.Deployment:
			workloads = append(workloads, workload{o.where, o.kind, v.Name, v.Spec.Selector, v.Spec.Template, nil, v.Spec.Replicas})
			if v.Spec.Replicas == nil || *v.Spec.Replicas != 2 {
				t.Errorf("%s: Deployment %s: want 2 replicas (one leads, one stands by)", o.where, v.Name)
			}
		case *appsv1.DaemonSet:
			workloads = append(workloads, workload{o.where, o.kind, v.Name, v.Spec.Selector, v.Spec.Template, nil, nil})
			checkInferenceScheduling(t, o.where, v)
		case *appsv1.StatefulSet:
			workloads = append(workloads, workload{o.where, o.kind, v.Name, v.Spec.Selector, v.Spec.Template, v.Spec.VolumeClaimTemplates, v.Spec.Replicas})
			statefulSets = append(statefulSets, v)
			checkGoverningService(t, o.where, v, objs)
		case *policyv1.PodDisruptionBudget:
			pdbs = append(pdbs, v)
		}
	}
	if namespace == "" {
		t.Fatal("no Namespace object")
	}
	for _, o := range objs {
		if o.kind != "Namespace" && o.meta.Namespace != namespace {
			t.Errorf("%s: %s %s in namespace %q, want %q", o.where, o.kind, o.meta.Name, o.meta.Namespace, namespace)
		}
	}

	// Each role runs once, as the kind the brief asks for.
	wantKind := map[string]string{"nats": "StatefulSet", "scheduler": "Deployment", "worker": "DaemonSet", "node": "StatefulSet"}
	images := map[string]bool{}
	tags := map[string]bool{}
	seen := map[string]bool{}
	for _, w := range workloads {
		sel, err := metav1.LabelSelectorAsSelector(w.selector)
		if err != nil || w.selector == nil || sel.Empty() {
			t.Errorf("%s: %s %s: selector %v: %v", w.where, w.kind, w.name, w.selector, err)
		} else if !sel.Matches(labels.Set(w.tpl.Labels)) {
			t.Errorf("%s: %s %s: selector %s does not match the template labels %v", w.where, w.kind, w.name, sel, w.tpl.Labels)
		}
		pod := w.tpl.Spec
		if sc := pod.SecurityContext; sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot {
			t.Errorf("%s: %s %s: the pod must set runAsNonRoot", w.where, w.kind, w.name)
		}
		volumes := map[string]bool{}
		for _, v := range pod.Volumes {
			volumes[v.Name] = true
		}
		for _, c := range w.claims {
			volumes[c.Name] = true
		}
		if len(pod.Containers) == 0 {
			t.Errorf("%s: %s %s has no container", w.where, w.kind, w.name)
		}
		for _, c := range pod.Containers {
			where := fmt.Sprintf("%s: %s %s container %s", w.where, w.kind, w.name, c.Name)
			m := imageRef.FindStringSubmatch(c.Image)
			if m == nil {
				t.Errorf("%s: image %q is not styx-<nats|scheduler|worker|node>:<tag>", where, c.Image)
				continue
			}
			r := m[1]
			images["styx-"+r] = true
			tags[m[2]] = true
			if seen[r] {
				t.Errorf("%s: a second workload runs %s", where, r)
			}
			seen[r] = true
			if wantKind[r] != w.kind {
				t.Errorf("%s: %s runs as a %s, want a %s", where, r, w.kind, wantKind[r])
			}
			checkContainer(t, where, r, c, volumes, configMaps)
		}
	}
	for r := range wantKind {
		if !seen[r] {
			t.Errorf("no workload runs styx-%s", r)
		}
	}
	if len(tags) > 1 {
		t.Errorf("the images carry different tags: %v", tags)
	}

	for _, s := range services {
		checkService(t, s, workloads)
	}
	for _, p := range pdbs {
		sel, err := metav1.LabelSelectorAsSelector(p.Spec.Selector)
		if err != nil || !slices.ContainsFunc(workloads, func(w workload) bool { return sel.Matches(labels.Set(w.tpl.Labels)) }) {
			t.Errorf("PodDisruptionBudget %s selects no workload (%v)", p.Name, err)
		}
	}
	checkKustomization(t, objs, namespace, images)
	checkNATS(t, statefulSets, workloads, configMaps)
	for _, w := range workloads {
		checkIdentity(t, w)
	}
}

// checkIdentity checks that every STYX container of a workload runs with
// an identity directory (STYX_PKI_DIR, or --pki-dir for styx-nats) on a
// read-only volume its user can read, never --insecure, and that its
// probes do not speak gRPC (the port needs a client certificate). The
// directory comes from a Secret (a Deployment or a StatefulSet whose pods
// share an identity), from a projection of one Secret per pod, each into
// the directory of the pod's name (a StatefulSet whose pods each have
// their own), or from the host (a DaemonSet: one identity per host).
func checkIdentity(t *testing.T, w workload) {
	t.Helper()
	pod := w.tpl.Spec
	volumes := map[string]corev1.Volume{}
	for _, v := range pod.Volumes {
		volumes[v.Name] = v
	}
	for _, c := range pod.Containers {
		where := fmt.Sprintf("%s %s container %s", w.kind, w.name, c.Name)
		dir, podName := "", ""
		for _, e := range c.Env {
			switch {
			case e.Name == "STYX_PKI_DIR":
				dir = e.Value
			case e.Name == "STYX_INSECURE":
				t.Errorf("%s: STYX_INSECURE: the manifests run with identities", where)
			case e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.name":
				podName = e.Name
			}
		}
		for _, a := range append(slices.Clone(c.Command), c.Args...) {
			if v, ok := strings.CutPrefix(a, "--pki-dir="); ok {
				dir = v
			}
			if a == "--insecure" || strings.HasPrefix(a, "--insecure=") {
				t.Errorf("%s: %s: the manifests run with identities", where, a)
			}
		}
		if dir == "" {
			t.Errorf("%s: no identity directory (STYX_PKI_DIR, or --pki-dir for styx-nats)", where)
			continue
		}
		var mount *corev1.VolumeMount
		for i, m := range c.VolumeMounts {
			if dir == m.MountPath || strings.HasPrefix(dir, m.MountPath+"/") {
				mount = &c.VolumeMounts[i]
			}
		}
		if mount == nil {
			t.Errorf("%s: identity directory %s is on no volume", where, dir)
			continue
		}
		if !mount.ReadOnly {
			t.Errorf("%s: the identity volume %s is mounted read-write", where, mount.Name)
		}
		v := volumes[mount.Name]
		sub := strings.TrimPrefix(strings.TrimPrefix(dir, mount.MountPath), "/")
		switch {
		case v.Secret != nil:
			if sub != "" || !strings.HasSuffix(v.Secret.SecretName, "-pki") || len(v.Secret.Items) != 0 {
				t.Errorf("%s: identity from Secret %s%s: want the whole Secret <name>-pki (ca.crt, tls.crt, tls.key) as the directory", where, v.Secret.SecretName, sub)
			}
			checkReadable(t, where, pod, v.Secret.DefaultMode)
		case v.Projected != nil:
			checkProjectedIdentity(t, where, w, v.Projected, sub, podName)
			checkReadable(t, where, pod, v.Projected.DefaultMode)
		case v.HostPath != nil:
			if w.kind != "DaemonSet" || sub != "" || v.HostPath.Type == nil || *v.HostPath.Type != corev1.HostPathDirectory {
				t.Errorf("%s: identity from the host's %s: only a DaemonSet takes its identity from its host, a directory (type Directory)", where, v.HostPath.Path)
			}
		default:
			t.Errorf("%s: identity volume %s is not a Secret, a projection of Secrets or a host directory", where, mount.Name)
		}
		for kind, pr := range map[string]*corev1.Probe{"readiness": c.ReadinessProbe, "liveness": c.LivenessProbe, "startup": c.StartupProbe} {
			if pr != nil && pr.GRPC != nil {
				t.Errorf("%s: %s probe speaks gRPC to a port that requires a client certificate", where, kind)
			}
		}
	}
}

// checkProjectedIdentity checks a StatefulSet's projection of one Secret
// per pod: <set>-<i>-pki into the directory <set>-<i>, for every replica,
// and the container reading the directory of its own pod name.
func checkProjectedIdentity(t *testing.T, where string, w workload, p *corev1.ProjectedVolumeSource, sub, podName string) {
	t.Helper()
	if w.kind != "StatefulSet" || podName == "" || sub != "$("+podName+")" {
		t.Errorf("%s: a projected identity is for a StatefulSet, read at <mount>/$(POD NAME VARIABLE); got %q", where, sub)
		return
	}
	replicas := 1
	if w.replicas != nil {
		replicas = int(*w.replicas)
	}
	got := map[string]bool{}
	for _, src := range p.Sources {
		if src.Secret == nil {
			t.Errorf("%s: the identity projection holds something other than Secrets", where)
			continue
		}
		pod, ok := strings.CutSuffix(src.Secret.Name, "-pki")
		if !ok {
			t.Errorf("%s: Secret %s: want <pod name>-pki", where, src.Secret.Name)
			continue
		}
		var items []string
		for _, it := range src.Secret.Items {
			if it.Key != path.Base(it.Path) || path.Dir(it.Path) != pod {
				t.Errorf("%s: Secret %s: key %s projected to %s, want %s/%s", where, src.Secret.Name, it.Key, it.Path, pod, it.Key)
			}
			items = append(items, it.Key)
		}
		slices.Sort(items)
		if !slices.Equal(items, []string{"ca.crt", "tls.crt", "tls.key"}) {
			t.Errorf("%s: Secret %s projects %v, want ca.crt, tls.crt, tls.key", where, src.Secret.Name, items)
		}
		got[pod] = true
	}
	for i := range replicas {
		pod := fmt.Sprintf("%s-%d", w.name, i)
		if !got[pod] {
			t.Errorf("%s: no identity for pod %s (Secret %s-pki) in the projection", where, pod, pod)
		}
		delete(got, pod)
	}
	for pod := range got {
		t.Errorf("%s: the projection holds the identity of %s, which is no pod of %d replicas", where, pod, replicas)
	}
}

// checkReadable checks that the pod's user can read a Secret's files:
// they belong to root and the pod's fsGroup, so they must be readable by
// the group.
func checkReadable(t *testing.T, where string, pod corev1.PodSpec, mode *int32) {
	t.Helper()
	if pod.SecurityContext == nil || pod.SecurityContext.FSGroup == nil {
		t.Errorf("%s: the identity comes from a Secret but the pod sets no fsGroup: its user cannot read the key", where)
	}
	if mode == nil || *mode&0o040 == 0 || *mode&0o007 != 0 {
		t.Errorf("%s: identity files mode %v: want readable by the group (fsGroup), not by others (0440)", where, mode)
	}
}

// checkNATS checks the verdict log's StatefulSet: three servers in one
// cluster whose routes name every pod by its DNS name under the governing
// Service, a store on each pod's own volume, STYX_NATS_URL naming every
// pod, and schedulers asking for a stream replica on each server.
func checkNATS(t *testing.T, sets []*appsv1.StatefulSet, workloads []workload, configMaps map[string]*corev1.ConfigMap) {
	t.Helper()
	var ss *appsv1.StatefulSet
	for _, s := range sets {
		if len(s.Spec.Template.Spec.Containers) == 1 && strings.HasPrefix(s.Spec.Template.Spec.Containers[0].Image, "styx-nats:") {
			ss = s
		}
	}
	if ss == nil {
		t.Error("no StatefulSet runs styx-nats")
		return
	}
	replicas := 1
	if ss.Spec.Replicas != nil {
		replicas = int(*ss.Spec.Replicas)
	}
	if replicas != 3 {
		t.Errorf("StatefulSet %s: %d replicas, want 3", ss.Name, replicas)
	}
	if ss.Spec.PodManagementPolicy != appsv1.ParallelPodManagement {
		t.Errorf("StatefulSet %s: podManagementPolicy %q, want Parallel (the servers elect a leader together)", ss.Name, ss.Spec.PodManagementPolicy)
	}
	c := ss.Spec.Template.Spec.Containers[0]
	args := map[string]string{}
	for _, a := range c.Args {
		k, v, _ := strings.Cut(a, "=")
		args[k] = v
	}
	var routes, urls []string
	for i := range replicas {
		host := fmt.Sprintf("%s-%d.%s", ss.Name, i, ss.Spec.ServiceName)
		routes = append(routes, "nats://"+host+":6222")
		urls = append(urls, "nats://"+host+":4222")
	}
	if got := strings.Split(args["--routes"], ","); !slices.Equal(got, routes) {
		t.Errorf("StatefulSet %s: --routes=%s, want %s", ss.Name, args["--routes"], strings.Join(routes, ","))
	}
	if args["--name"] != "$(POD_NAME)" || args["--cluster_name"] == "" || args["--https_port"] != "8222" || args["--http_port"] != "" {
		t.Errorf("StatefulSet %s: want --name=$(POD_NAME), a --cluster_name and --https_port=8222 (with an identity, monitoring is HTTPS), got %v", ss.Name, args)
	}
	for kind, pr := range map[string]*corev1.Probe{"startup": c.StartupProbe, "readiness": c.ReadinessProbe, "liveness": c.LivenessProbe} {
		if pr != nil && pr.HTTPGet != nil && pr.HTTPGet.Scheme != corev1.URISchemeHTTPS {
			t.Errorf("StatefulSet %s: %s probe over %q: the monitoring port serves HTTPS", ss.Name, kind, pr.HTTPGet.Scheme)
		}
	}
	store := args["--store_dir"]
	mounted := false
	for _, m := range c.VolumeMounts {
		if m.MountPath == store && slices.ContainsFunc(ss.Spec.VolumeClaimTemplates, func(p corev1.PersistentVolumeClaim) bool { return p.Name == m.Name }) {
			mounted = true
		}
	}
	if store == "" || !mounted {
		t.Errorf("StatefulSet %s: --store_dir=%q is not a volume claimed per pod", ss.Name, store)
	}
	for _, e := range c.Env {
		if strings.HasPrefix(e.Name, "STYX_") {
			t.Errorf("StatefulSet %s: %s: styx-nats reads no STYX_* variable", ss.Name, e.Name)
		}
	}

	cm := configMaps["styx-config"]
	if cm == nil {
		t.Error("no ConfigMap styx-config")
		return
	}
	if got := strings.Split(cm.Data["STYX_NATS_URL"], ","); !slices.Equal(got, urls) {
		t.Errorf("ConfigMap styx-config: STYX_NATS_URL=%q, want %s", cm.Data["STYX_NATS_URL"], strings.Join(urls, ","))
	}
	for _, w := range workloads {
		for _, ct := range w.tpl.Spec.Containers {
			if !strings.HasPrefix(ct.Image, "styx-scheduler:") {
				continue
			}
			got := ""
			for _, e := range ct.Env {
				if e.Name == "STYX_LOG_REPLICAS" {
					got = e.Value
				}
			}
			if got != fmt.Sprint(replicas) {
				t.Errorf("%s %s: STYX_LOG_REPLICAS=%q, want %d (a stream replica on each NATS server)", w.kind, w.name, got, replicas)
			}
		}
	}
}

// checkContainer checks a container's environment, ports, probes and
// mounts against its role's binary and its pod.
func checkContainer(t *testing.T, where, r string, c corev1.Container, volumes map[string]bool, configMaps map[string]*corev1.ConfigMap) {
	t.Helper()
	var names []string
	defined := map[string]bool{}
	ref := regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)
	for _, e := range c.Env {
		names = append(names, e.Name)
		for _, m := range ref.FindAllStringSubmatch(e.Value, -1) {
			if !defined[m[1]] {
				t.Errorf("%s: %s refers to $(%s), which no earlier env entry defines", where, e.Name, m[1])
			}
		}
		defined[e.Name] = true
		if e.Value != "" && e.ValueFrom != nil {
			t.Errorf("%s: %s has both value and valueFrom", where, e.Name)
		}
	}
	for _, ef := range c.EnvFrom {
		if ef.ConfigMapRef == nil {
			continue
		}
		cm := configMaps[ef.ConfigMapRef.Name]
		if cm == nil {
			t.Errorf("%s: envFrom names ConfigMap %q, which the manifests do not define", where, ef.ConfigMapRef.Name)
			continue
		}
		for k := range cm.Data {
			if !strings.HasPrefix(k, "STYX_") {
				t.Errorf("%s: ConfigMap %s key %s is not a STYX_* setting", where, cm.Name, k)
			}
			names = append(names, k)
		}
	}
	if r != "nats" { // styx-nats takes nats-server's flags, not STYX_* variables
		checkVars(t, where, r, names)
	}

	ports := map[string]int32{}
	numbers := map[int32]bool{}
	for _, p := range c.Ports {
		if p.ContainerPort <= 0 || p.ContainerPort > 65535 {
			t.Errorf("%s: port %q: containerPort %d", where, p.Name, p.ContainerPort)
		}
		if p.Name != "" {
			if _, dup := ports[p.Name]; dup {
				t.Errorf("%s: two ports named %q", where, p.Name)
			}
			ports[p.Name] = p.ContainerPort
		}
		numbers[p.ContainerPort] = true
	}
	portOK := func(p intstr.IntOrString) bool {
		if p.Type == intstr.String {
			_, ok := ports[p.StrVal]
			return ok
		}
		return numbers[p.IntVal]
	}
	for kind, pr := range map[string]*corev1.Probe{"readiness": c.ReadinessProbe, "liveness": c.LivenessProbe} {
		switch {
		case pr == nil:
			t.Errorf("%s: no %s probe", where, kind)
		case pr.HTTPGet != nil && !portOK(pr.HTTPGet.Port):
			t.Errorf("%s: %s probe port %s is not a container port", where, kind, pr.HTTPGet.Port.String())
		case pr.GRPC != nil && !numbers[pr.GRPC.Port]:
			t.Errorf("%s: %s probe gRPC port %d is not a container port", where, kind, pr.GRPC.Port)
		case pr.TCPSocket != nil && !portOK(pr.TCPSocket.Port):
			t.Errorf("%s: %s probe port %s is not a container port", where, kind, pr.TCPSocket.Port.String())
		}
	}
	for _, m := range c.VolumeMounts {
		if !volumes[m.Name] {
			t.Errorf("%s: mounts volume %q, which the pod does not define", where, m.Name)
		}
	}
	sc := c.SecurityContext
	if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
		sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
		sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
		t.Errorf("%s: want allowPrivilegeEscalation false, readOnlyRootFilesystem true, capabilities drop ALL", where)
	}
}

// checkService checks that a Service selects a workload and that each of
// its target ports is a port of that workload's containers.
func checkService(t *testing.T, s *corev1.Service, workloads []workload) {
	t.Helper()
	if len(s.Spec.Selector) == 0 {
		t.Errorf("Service %s has no selector", s.Name)
		return
	}
	sel := labels.SelectorFromSet(s.Spec.Selector)
	var matched []workload
	for _, w := range workloads {
		if sel.Matches(labels.Set(w.tpl.Labels)) {
			matched = append(matched, w)
		}
	}
	if len(matched) == 0 {
		t.Errorf("Service %s: selector %s matches no workload", s.Name, sel)
		return
	}
	for _, p := range s.Spec.Ports {
		target := p.TargetPort
		if target.Type == intstr.Int && target.IntVal == 0 {
			target = intstr.FromInt32(p.Port)
		}
		for _, w := range matched {
			found := false
			for _, c := range w.tpl.Spec.Containers {
				for _, cp := range c.Ports {
					if target.Type == intstr.String && cp.Name == target.StrVal || target.Type == intstr.Int && cp.ContainerPort == target.IntVal {
						found = true
					}
				}
			}
			if !found {
				t.Errorf("Service %s port %s: targetPort %s is not a container port of %s %s", s.Name, p.Name, target.String(), w.kind, w.name)
			}
		}
	}
}

// checkInferenceScheduling checks that workers land only on inference
// hosts, and tolerate those hosts' taint.
func checkInferenceScheduling(t *testing.T, where string, d *appsv1.DaemonSet) {
	t.Helper()
	ns := d.Spec.Template.Spec.NodeSelector
	if len(ns) == 0 {
		t.Errorf("%s: DaemonSet %s has no nodeSelector: workers would run on every host", where, d.Name)
	}
	for key := range ns {
		if !slices.ContainsFunc(d.Spec.Template.Spec.Tolerations, func(tol corev1.Toleration) bool { return tol.Key == key }) {
			t.Errorf("%s: DaemonSet %s selects hosts by %s but tolerates no taint of that key", where, d.Name, key)
		}
	}
}

// checkGoverningService checks that a StatefulSet's serviceName is a
// headless Service that selects it.
func checkGoverningService(t *testing.T, where string, s *appsv1.StatefulSet, objs []k8sObject) {
	t.Helper()
	for _, o := range objs {
		svc, ok := o.obj.(*corev1.Service)
		if !ok || svc.Name != s.Spec.ServiceName {
			continue
		}
		if svc.Spec.ClusterIP != corev1.ClusterIPNone {
			t.Errorf("%s: StatefulSet %s: Service %s is not headless", where, s.Name, svc.Name)
		}
		if !labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(s.Spec.Template.Labels)) {
			t.Errorf("%s: StatefulSet %s: Service %s does not select its pods", where, s.Name, svc.Name)
		}
		return
	}
	t.Errorf("%s: StatefulSet %s: serviceName %q is not a Service of the manifests", where, s.Name, s.Spec.ServiceName)
}

// kustomization is the part of kustomize's Kustomization the manifests use.
type kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Namespace  string   `json:"namespace"`
	Resources  []string `json:"resources"`
	Images     []struct {
		Name    string `json:"name"`
		NewName string `json:"newName,omitempty"`
		NewTag  string `json:"newTag,omitempty"`
	} `json:"images"`
}

// checkKustomization checks that kustomization.yaml lists every manifest,
// the namespace, and every image the workloads use; and, when kubectl is
// installed, that `kubectl kustomize` (offline) builds it.
func checkKustomization(t *testing.T, objs []k8sObject, namespace string, images map[string]bool) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(k8sDir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var k kustomization
	if err := yaml.UnmarshalStrict(b, &k); err != nil {
		t.Fatalf("kustomization.yaml: %v", err)
	}
	if k.Kind != "Kustomization" || k.Namespace != namespace {
		t.Errorf("kustomization.yaml: kind %q namespace %q, want Kustomization in %q", k.Kind, k.Namespace, namespace)
	}
	files := map[string]bool{}
	for _, o := range objs {
		f, _, _ := strings.Cut(o.where, "#")
		files[filepath.Base(f)] = true
	}
	for f := range files {
		if !slices.Contains(k.Resources, f) {
			t.Errorf("kustomization.yaml does not list %s", f)
		}
	}
	for _, r := range k.Resources {
		if !files[r] {
			t.Errorf("kustomization.yaml lists %s, which holds no object", r)
		}
	}
	var named []string
	for _, im := range k.Images {
		named = append(named, im.Name)
		if !images[im.Name] {
			t.Errorf("kustomization.yaml: image %s is used by no workload", im.Name)
		}
	}
	for im := range images {
		if !slices.Contains(named, im) {
			t.Errorf("kustomization.yaml: no images entry for %s", im)
		}
	}
	if kubectl, err := exec.LookPath("kubectl"); err == nil {
		if out, err := exec.Command(kubectl, "kustomize", k8sDir).CombinedOutput(); err != nil {
			t.Errorf("kubectl kustomize %s: %v\n%s", k8sDir, err, out)
		}
	}
}
