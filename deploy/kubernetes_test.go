// Package deploy holds the checks of deploy/kubernetes: every manifest
// decodes strictly into the Kubernetes API types (and the Prometheus
// Operator's), and they agree with the wslb config their ConfigMap ships.
// It is a module of its own so that k8s.io stays out of wslb's go.mod;
// cmd/wslb's TestDeployModule runs it from the main module's go test.
package deploy

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"

	"github.com/wslb/wslb/config"
)

// closeReplyWait is how long a graceful WebSocket close waits for each
// side's Close reply (DESIGN.md, "Graceful WebSocket close").
const closeReplyWait = 5 * time.Second

// manifests are the decoded objects of deploy/kubernetes, by kind.
type manifests struct {
	configMaps  []*corev1.ConfigMap
	deployments []*appsv1.Deployment
	services    []*corev1.Service
	pdbs        []*policyv1.PodDisruptionBudget
	monitors    []*monitoringv1.ServiceMonitor
}

// readManifests decodes every document of every .yaml file under dir,
// strictly: an unknown or misspelt field, a wrong type or an unknown kind
// fails the test with the file and document.
func readManifests(t *testing.T, dir string) manifests {
	t.Helper()
	var m manifests
	files := 0
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || filepath.Ext(path) != ".yaml" {
			return err
		}
		files++
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for i, doc := range bytes.Split(data, []byte("\n---\n")) {
			if err := m.decode(doc); err != nil {
				t.Errorf("%s, document %d: %v", path, i+1, err)
			}
		}
		return nil
	})
	if err != nil || files == 0 {
		t.Fatalf("read %s: %d files, %v", dir, files, err)
	}
	return m
}

func (m *manifests) decode(doc []byte) error {
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		return err
	}
	var obj any
	switch tm.APIVersion + " " + tm.Kind {
	case "v1 ConfigMap":
		obj = appendNew(&m.configMaps)
	case "apps/v1 Deployment":
		obj = appendNew(&m.deployments)
	case "v1 Service":
		obj = appendNew(&m.services)
	case "policy/v1 PodDisruptionBudget":
		obj = appendNew(&m.pdbs)
	case "monitoring.coreos.com/v1 ServiceMonitor":
		obj = appendNew(&m.monitors)
	default:
		return fmt.Errorf("apiVersion %q kind %q: not a kind this test knows; add it", tm.APIVersion, tm.Kind)
	}
	return yaml.UnmarshalStrict(doc, obj)
}

// appendNew appends a new zero T to list and returns it, to decode into.
func appendNew[T any](list *[]*T) *T {
	o := new(T)
	*list = append(*list, o)
	return o
}

// TestKubernetesManifests decodes deploy/kubernetes and checks that the
// Deployment, Services, PodDisruptionBudget and ServiceMonitor agree with
// each other and with the wslb config of the ConfigMap, which wslb's own
// config.Parse must accept.
func TestKubernetesManifests(t *testing.T) {
	m := readManifests(t, "kubernetes")
	if len(m.configMaps) != 1 || len(m.deployments) != 1 || len(m.pdbs) != 1 || len(m.monitors) != 1 || len(m.services) != 3 {
		t.Fatalf("want 1 ConfigMap, 1 Deployment, 3 Services, 1 PodDisruptionBudget, 1 ServiceMonitor; got %d, %d, %d, %d, %d",
			len(m.configMaps), len(m.deployments), len(m.services), len(m.pdbs), len(m.monitors))
	}
	cm, dep := m.configMaps[0], m.deployments[0]
	cfg, err := config.Parse([]byte(cm.Data["config.yaml"]), "configmap.yaml: data.config.yaml")
	if err != nil {
		t.Fatalf("the ConfigMap's config.yaml:\n%v", err)
	}
	pod := dep.Spec.Template.Spec
	if len(pod.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(pod.Containers))
	}
	c := pod.Containers[0]
	checkConfigMount(t, c, pod, cm.Name)

	adminPort := port(t, "admin.listen", cfg.Admin.Listen)
	listenerPorts := map[int32]string{}
	for _, l := range cfg.Listeners {
		for _, a := range l.Listen {
			listenerPorts[port(t, "listeners "+l.Name, a)] = l.Name
		}
	}
	for _, p := range []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{{"readinessProbe", c.ReadinessProbe, "/readyz"}, {"livenessProbe", c.LivenessProbe, "/healthz"}} {
		if p.probe == nil || p.probe.HTTPGet == nil {
			t.Errorf("%s: want an httpGet probe of %s", p.name, p.path)
			continue
		}
		if p.probe.HTTPGet.Path != p.path {
			t.Errorf("%s path %s, want %s", p.name, p.probe.HTTPGet.Path, p.path)
		}
		if got := containerPort(t, c, p.probe.HTTPGet.Port); got != adminPort {
			t.Errorf("%s port %d, but admin.listen is %s", p.name, got, cfg.Admin.Listen)
		}
	}
	for _, cp := range c.Ports {
		if _, ok := listenerPorts[cp.ContainerPort]; !ok && cp.ContainerPort != adminPort {
			t.Errorf("containerPort %s %d: no listener or admin.listen of the config binds it", cp.Name, cp.ContainerPort)
		}
	}
	for p, name := range listenerPorts {
		if !slices.ContainsFunc(c.Ports, func(cp corev1.ContainerPort) bool { return cp.ContainerPort == p }) {
			t.Errorf("listener %s binds port %d, which the container does not declare", name, p)
		}
	}

	podLabels := labels.Set(dep.Spec.Template.Labels)
	if !selects(t, dep.Spec.Selector, podLabels) {
		t.Errorf("the Deployment's selector does not select its own pods")
	}
	if !selects(t, m.pdbs[0].Spec.Selector, podLabels) {
		t.Errorf("the PodDisruptionBudget does not select the wslb pods")
	}
	checkServices(t, m, c, podLabels, listenerPorts, adminPort)
	checkBackendService(t, m, cfg)
	checkShutdown(t, pod, cfg)
	checkSecurity(t, pod, c, listenerPorts)
}

// checkConfigMount: the ConfigMap is mounted where the container's
// -config reads it.
func checkConfigMount(t *testing.T, c corev1.Container, pod corev1.PodSpec, cm string) {
	t.Helper()
	args := append(slices.Clone(c.Command), c.Args...)
	i := slices.Index(args, "-config")
	if i < 0 || i+1 >= len(args) {
		t.Fatalf("container args %q: no -config", args)
	}
	dir, file := filepath.Split(args[i+1])
	for _, vm := range c.VolumeMounts {
		if filepath.Clean(vm.MountPath) != filepath.Clean(dir) {
			continue
		}
		for _, v := range pod.Volumes {
			if v.Name == vm.Name && v.ConfigMap != nil && v.ConfigMap.Name == cm && file == "config.yaml" {
				return
			}
		}
	}
	t.Errorf("-config %s is not the ConfigMap %s's config.yaml mounted at %s", args[i+1], cm, dir)
}

// checkServices: the public Service is a LoadBalancer with
// externalTrafficPolicy Local onto the listeners' ports, and the
// ServiceMonitor scrapes the admin port through the admin Service.
func checkServices(t *testing.T, m manifests, c corev1.Container, pods labels.Set, listenerPorts map[int32]string, adminPort int32) {
	t.Helper()
	var public, admin *corev1.Service
	for _, s := range m.services {
		if s.Spec.ClusterIP == corev1.ClusterIPNone {
			continue // the backends' headless Service
		}
		if !labels.SelectorFromSet(s.Spec.Selector).Matches(pods) {
			t.Errorf("Service %s does not select the wslb pods", s.Name)
		}
		for _, p := range s.Spec.Ports {
			target := containerPort(t, c, p.TargetPort)
			if _, ok := listenerPorts[target]; ok {
				public = s
			} else if target == adminPort {
				admin = s
			} else {
				t.Errorf("Service %s port %s goes to %d, which no listener binds", s.Name, p.Name, target)
			}
		}
	}
	if public == nil || admin == nil {
		t.Fatalf("want a Service onto the listeners and one onto the admin port")
	}
	if public.Spec.Type != corev1.ServiceTypeLoadBalancer || public.Spec.ExternalTrafficPolicy != corev1.ServiceExternalTrafficPolicyLocal {
		t.Errorf("Service %s: type %s, externalTrafficPolicy %s; want LoadBalancer, Local", public.Name, public.Spec.Type, public.Spec.ExternalTrafficPolicy)
	}
	for _, p := range public.Spec.Ports {
		if containerPort(t, c, p.TargetPort) == adminPort {
			t.Errorf("the public Service %s exposes the admin port", public.Name)
		}
	}
	sm := m.monitors[0]
	if !selects(t, &sm.Spec.Selector, labels.Set(admin.Labels)) {
		t.Errorf("ServiceMonitor %s does not select Service %s", sm.Name, admin.Name)
	}
	for _, s := range m.services {
		if s != admin && labels.Set(s.Labels).Has("app.kubernetes.io/component") && selects(t, &sm.Spec.Selector, labels.Set(s.Labels)) {
			t.Errorf("ServiceMonitor %s also selects Service %s", sm.Name, s.Name)
		}
	}
	for _, e := range sm.Spec.Endpoints {
		if e.Path != "/metrics" || !slices.ContainsFunc(admin.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == e.Port }) {
			t.Errorf("ServiceMonitor endpoint port %q path %q: want a port of Service %s and /metrics", e.Port, e.Path, admin.Name)
		}
	}
}

// checkBackendService: the headless Service is the one a discovery entry
// of the config looks up, on its port.
func checkBackendService(t *testing.T, m manifests, cfg *config.Config) {
	t.Helper()
	for _, s := range m.services {
		if s.Spec.ClusterIP != corev1.ClusterIPNone {
			continue
		}
		for _, p := range cfg.Pools {
			for _, d := range p.Discovery {
				short, _, _ := strings.Cut(d.Name, ".")
				if short == s.Name && slices.ContainsFunc(s.Spec.Ports, func(sp corev1.ServicePort) bool { return int(sp.Port) == d.Port }) {
					return
				}
			}
		}
		t.Errorf("headless Service %s: no pools[].discovery entry names it with one of its ports", s.Name)
		return
	}
	t.Error("no headless Service for the backends")
}

// checkShutdown: Kubernetes waits for the whole drain before it kills.
func checkShutdown(t *testing.T, pod corev1.PodSpec, cfg *config.Config) {
	t.Helper()
	c := pod.Containers[0]
	var preStop time.Duration
	if c.Lifecycle == nil || c.Lifecycle.PreStop == nil || c.Lifecycle.PreStop.Sleep == nil {
		t.Error("no preStop sleep: the drain would start before the pod's endpoints are gone")
	} else {
		preStop = time.Duration(c.Lifecycle.PreStop.Sleep.Seconds) * time.Second
	}
	need := preStop + cfg.Shutdown.DrainTimeout + cfg.Shutdown.CloseSpread + closeReplyWait
	if g := pod.TerminationGracePeriodSeconds; g == nil || time.Duration(*g)*time.Second <= need {
		t.Errorf("terminationGracePeriodSeconds %v: want more than preStop %v + drain_timeout + close_spread + %v = %v", g, preStop, closeReplyWait, need)
	}
}

// checkSecurity: non-root, read-only, no capability but the one a port
// under 1024 needs, and resources requested.
func checkSecurity(t *testing.T, pod corev1.PodSpec, c corev1.Container, listenerPorts map[int32]string) {
	t.Helper()
	ps, cs := pod.SecurityContext, c.SecurityContext
	if ps == nil || ps.RunAsNonRoot == nil || !*ps.RunAsNonRoot || ps.RunAsUser == nil || *ps.RunAsUser == 0 {
		t.Error("the pod must run as a non-root user (runAsNonRoot, runAsUser)")
	}
	if cs == nil || cs.ReadOnlyRootFilesystem == nil || !*cs.ReadOnlyRootFilesystem ||
		cs.AllowPrivilegeEscalation == nil || *cs.AllowPrivilegeEscalation || cs.Capabilities == nil ||
		!slices.Contains(cs.Capabilities.Drop, "ALL") {
		t.Fatal("the container must have a read-only root, no privilege escalation, and drop ALL capabilities")
	}
	low := false
	for p := range listenerPorts {
		low = low || p < 1024
	}
	if add := cs.Capabilities.Add; len(add) > 1 || (len(add) == 1 && (!low || add[0] != "NET_BIND_SERVICE")) {
		t.Errorf("capabilities added %q: only NET_BIND_SERVICE, and only for a port under 1024", add)
	}
	r := c.Resources
	if r.Requests.Memory().IsZero() || r.Requests.Cpu().IsZero() || r.Limits.Memory().Cmp(*r.Requests.Memory()) < 0 {
		t.Errorf("resources %v: want cpu and memory requests and a memory limit no lower", r)
	}
}

// containerPort resolves a probe's or Service's port, by name or number,
// to one of the container's ports.
func containerPort(t *testing.T, c corev1.Container, p intstr.IntOrString) int32 {
	t.Helper()
	for _, cp := range c.Ports {
		if (p.Type == intstr.String && cp.Name == p.StrVal) || (p.Type == intstr.Int && cp.ContainerPort == p.IntVal) {
			return cp.ContainerPort
		}
	}
	t.Errorf("port %s is none of the container's ports", p.String())
	return -1
}

func port(t *testing.T, what, addr string) int32 {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	n, err2 := strconv.ParseUint(p, 10, 16)
	if err != nil || err2 != nil || n == 0 {
		t.Fatalf("%s %q: want a fixed port (%v, %v)", what, addr, err, err2)
	}
	return int32(n)
}

func selects(t *testing.T, s *metav1.LabelSelector, set labels.Set) bool {
	t.Helper()
	sel, err := metav1.LabelSelectorAsSelector(s)
	if err != nil {
		t.Fatal(err)
	}
	return !sel.Empty() && sel.Matches(set)
}
