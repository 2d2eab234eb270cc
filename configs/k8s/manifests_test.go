// Package k8s checks the Kubernetes manifests in this folder: each file decodes strictly (unknown
// or misspelt fields fail) as the official Kubernetes type its apiVersion and kind name, and says
// what the balancer needs (probe paths, CPU limit = -workers, a grace period that covers the
// shutdown). It is a module of its own so the main module does not carry k8s.io dependencies:
//
//	cd configs/k8s && go test ./...
package k8s

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"
)

// exitMargin is the time the grace period must leave, after the preStop sleep, -shutdown-grace
// and -worker-grace, for the balancer to reap its workers and exit before the kubelet's SIGKILL.
const exitMargin = 5 * time.Second

// scheme knows the API groups the manifests use; it tells which apiVersion/kind a Go type is.
var scheme = func() *runtime.Scheme {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{appsv1.AddToScheme, corev1.AddToScheme, autoscalingv2.AddToScheme} {
		if err := add(s); err != nil {
			panic(err)
		}
	}
	return s
}()

type object interface {
	runtime.Object
	metav1.Object
}

// decode reads one single-document manifest into obj, strictly: an unknown, misspelt or repeated
// field is an error, as it is for `kubectl apply --validate=strict`.
func decode(t *testing.T, file string, obj object) {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.HasPrefix(data, []byte("---")) || bytes.Contains(data, []byte("\n---")) {
		t.Fatalf("%s: got a document separator; want one document per file (a second one would go unchecked)", file)
	}
	if err := yaml.UnmarshalStrict(data, obj); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
}

func loadDeployment(t *testing.T) *appsv1.Deployment {
	t.Helper()
	d := &appsv1.Deployment{}
	decode(t, "deployment.yaml", d)
	return d
}

// balancerContainer is the Deployment's one container, the balancer.
func balancerContainer(t *testing.T, d *appsv1.Deployment) corev1.Container {
	t.Helper()
	cs := d.Spec.Template.Spec.Containers
	if len(cs) != 1 {
		t.Fatalf("containers: got %v; want %v", len(cs), 1)
	}
	return cs[0]
}

var manifests = []struct {
	file string
	obj  func() object
	want schema.GroupVersionKind
}{
	{"deployment.yaml", func() object { return &appsv1.Deployment{} }, appsv1.SchemeGroupVersion.WithKind("Deployment")},
	{"service.yaml", func() object { return &corev1.Service{} }, corev1.SchemeGroupVersion.WithKind("Service")},
	{"hpa.yaml", func() object { return &autoscalingv2.HorizontalPodAutoscaler{} }, autoscalingv2.SchemeGroupVersion.WithKind("HorizontalPodAutoscaler")},
}

func TestManifestKinds(t *testing.T) {
	for _, m := range manifests {
		t.Run(m.file, func(t *testing.T) {
			obj := m.obj()
			decode(t, m.file, obj)
			if got := obj.GetObjectKind().GroupVersionKind(); got != m.want {
				t.Errorf("apiVersion/kind: got %v; want %v", got, m.want)
			}
			// The Go type decoded into is registered under the kind the file claims.
			gvks, _, err := scheme.ObjectKinds(obj)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Contains(gvks, m.want) {
				t.Errorf("scheme kinds of %T: got %v; want %v among them", obj, gvks, m.want)
			}
			if got, want := obj.GetName(), "clusterlb"; got != want {
				t.Errorf("metadata.name: got %v; want %v", got, want)
			}
			if errs := validation.IsDNS1123Label(obj.GetName()); len(errs) > 0 {
				t.Errorf("metadata.name: got %v; want a DNS-1123 label", errs)
			}
		})
	}
}

// TestEveryManifestIsChecked fails when a YAML file is added here without a row in manifests.
func TestEveryManifestIsChecked(t *testing.T) {
	files, err := filepath.Glob("*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var checked []string
	for _, m := range manifests {
		checked = append(checked, m.file)
	}
	slices.Sort(files)
	slices.Sort(checked)
	if !slices.Equal(files, checked) {
		t.Errorf("YAML files: got %v; want %v", files, checked)
	}
}

// TestStrictDecoding shows that decode would catch the mistakes Kubernetes ignores or rejects late.
func TestStrictDecoding(t *testing.T) {
	const head = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: x\n"
	tests := []struct {
		name    string
		yaml    string
		wantErr bool
	}{
		{"valid", head + "spec:\n  replicas: 2\n", false},
		{"misspelt field", head + "spec:\n  replica: 2\n", true},
		{"unknown nested field", head + "spec:\n  template:\n    spec:\n      containers:\n        - name: c\n          readinesProbe: {}\n", true},
		{"duplicate field", head + "spec:\n  replicas: 2\n  replicas: 3\n", true},
		{"wrong type", head + "spec:\n  replicas: two\n", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := yaml.UnmarshalStrict([]byte(tt.yaml), &appsv1.Deployment{})
			if got := err != nil; got != tt.wantErr {
				t.Errorf("error: got %v; want %v", err, map[bool]string{true: "an error", false: "none"}[tt.wantErr])
			}
		})
	}
}

// flagValues reads "-name value" and "-name=value" pairs from container args. A flag followed by
// another flag (not by a negative number) is a boolean set to true.
func flagValues(args []string) map[string]string {
	v := map[string]string{}
	for i := 0; i < len(args); i++ {
		name, ok := strings.CutPrefix(args[i], "-")
		if !ok {
			continue
		}
		name = strings.TrimPrefix(name, "-")
		if n, val, ok := strings.Cut(name, "="); ok {
			v[n] = val
			continue
		}
		if i+1 < len(args) {
			next := args[i+1]
			if _, err := strconv.ParseFloat(next, 64); err == nil || !strings.HasPrefix(next, "-") {
				v[name] = next
				i++
				continue
			}
		}
		v[name] = "true"
	}
	return v
}

// balancerFlags is what the Deployment's args set.
type balancerFlags struct {
	listenPort    int32
	workers       int64
	shutdownGrace time.Duration
	workerGrace   time.Duration
}

func parseBalancerFlags(t *testing.T, args []string) balancerFlags {
	t.Helper()
	v := flagValues(args)
	for _, name := range []string{"listen", "workers", "shutdown-grace", "worker-grace"} {
		if _, ok := v[name]; !ok {
			t.Fatalf("args %q: got no -%s; want it set (the checks below depend on it)", args, name)
		}
	}
	var f balancerFlags
	_, port, err := net.SplitHostPort(v["listen"])
	if err != nil {
		t.Fatalf("-listen: %v", err)
	}
	p, err := strconv.ParseInt(port, 10, 32)
	if err != nil {
		t.Fatalf("-listen port: %v", err)
	}
	f.listenPort = int32(p)
	if f.workers, err = strconv.ParseInt(v["workers"], 10, 64); err != nil {
		t.Fatalf("-workers: %v", err)
	}
	if f.shutdownGrace, err = time.ParseDuration(v["shutdown-grace"]); err != nil {
		t.Fatalf("-shutdown-grace: %v", err)
	}
	if f.workerGrace, err = time.ParseDuration(v["worker-grace"]); err != nil {
		t.Fatalf("-worker-grace: %v", err)
	}
	return f
}

func TestFlagValues(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want map[string]string
	}{
		{"pairs", []string{"-workers", "2", "-listen", ":8080"}, map[string]string{"workers": "2", "listen": ":8080"}},
		{"equals and double dash", []string{"--workers=2", "-worker-grace=5s"}, map[string]string{"workers": "2", "worker-grace": "5s"}},
		{"boolean then flag", []string{"-access-log", "-workers", "2"}, map[string]string{"access-log": "true", "workers": "2"}},
		{"negative value", []string{"-max-retries", "-1"}, map[string]string{"max-retries": "-1"}},
		{"trailing boolean", []string{"-workers", "2", "-access-log"}, map[string]string{"workers": "2", "access-log": "true"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := flagValues(tt.args)
			if !equalMaps(got, tt.want) {
				t.Errorf("flagValues(%q): got %v; want %v", tt.args, got, tt.want)
			}
		})
	}
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func deref[T any](p *T) T {
	if p == nil {
		var zero T
		return zero
	}
	return *p
}

func httpGet(p *corev1.Probe) (path, port string) {
	if p == nil || p.HTTPGet == nil {
		return "", ""
	}
	return p.HTTPGet.Path, p.HTTPGet.Port.String()
}

// fact is one table row: got must equal want, or be no less than it when want is an atLeast.
type fact struct {
	name      string
	got, want any
}

// atLeast is a want that is a lower bound on a duration.
type atLeast time.Duration

func checkFacts(t *testing.T, facts []fact) {
	t.Helper()
	for _, f := range facts {
		t.Run(f.name, func(t *testing.T) {
			if want, ok := f.want.(atLeast); ok {
				if got := f.got.(time.Duration); got < time.Duration(want) {
					t.Errorf("got %v; want at least %v", got, time.Duration(want))
				}
				return
			}
			if f.got != f.want {
				t.Errorf("got %v; want %v", f.got, f.want)
			}
		})
	}
}

func TestDeployment(t *testing.T) {
	d := loadDeployment(t)
	pod := d.Spec.Template.Spec
	c := balancerContainer(t, d)
	flags := parseBalancerFlags(t, c.Args)

	selector, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
	if err != nil {
		t.Fatalf("spec.selector: %v", err)
	}
	var port corev1.ContainerPort
	if len(c.Ports) > 0 {
		port = c.Ports[0]
	}
	readyPath, readyPort := httpGet(c.ReadinessProbe)
	livePath, livePort := httpGet(c.LivenessProbe)
	cpuLimit, cpuRequest := c.Resources.Limits[corev1.ResourceCPU], c.Resources.Requests[corev1.ResourceCPU]
	memLimit, memRequest := c.Resources.Limits[corev1.ResourceMemory], c.Resources.Requests[corev1.ResourceMemory]
	sc := deref(c.SecurityContext)
	var drops []corev1.Capability
	if sc.Capabilities != nil {
		drops = sc.Capabilities.Drop
	}
	var preStop corev1.LifecycleHandler
	if c.Lifecycle != nil && c.Lifecycle.PreStop != nil {
		preStop = *c.Lifecycle.PreStop
	}
	var preStopSleep time.Duration
	if preStop.Sleep != nil {
		preStopSleep = time.Duration(preStop.Sleep.Seconds) * time.Second
	}
	grace := time.Duration(deref(pod.TerminationGracePeriodSeconds)) * time.Second

	checkFacts(t, []fact{
		{"replicas", deref(d.Spec.Replicas), int32(2)},
		{"selector matches the pod labels", selector.Matches(labels.Set(d.Spec.Template.Labels)), true},
		{"image", c.Image, "clusterlb:latest"},
		{"one container port", len(c.Ports), 1},
		{"port name", port.Name, "http"},
		{"port name is valid (IANA_SVC_NAME)", len(validation.IsValidPortName(port.Name)), 0},
		{"containerPort", port.ContainerPort, int32(8080)},
		{"-listen port = containerPort", flags.listenPort, port.ContainerPort},
		{"readiness path", readyPath, "/readyz"},
		{"readiness port", readyPort, port.Name},
		{"liveness path", livePath, "/livez"},
		{"liveness port", livePort, port.Name},
		{"CPU limit (millicores) = -workers × 1000", cpuLimit.MilliValue(), flags.workers * 1000},
		{"-workers is set (not 0)", flags.workers > 0, true},
		{"CPU request = limit", cpuRequest.String(), cpuLimit.String()},
		{"memory limit set", memLimit.IsZero(), false},
		{"memory request = limit", memRequest.String(), memLimit.String()},
		{"runAsNonRoot", deref(sc.RunAsNonRoot), true},
		{"runAsUser", deref(sc.RunAsUser), int64(65532)},
		{"readOnlyRootFilesystem", deref(sc.ReadOnlyRootFilesystem), true},
		{"allowPrivilegeEscalation", deref(sc.AllowPrivilegeEscalation), false},
		{"capabilities drop ALL", slices.Contains(drops, "ALL"), true},
		{"preStop is a sleep handler", preStop.Sleep != nil, true},
		{"preStop has no exec (distroless: no shell, no sleep binary)", preStop.Exec == nil, true},
		{"preStop sleep > 0", preStopSleep > 0, true},
		{"terminationGracePeriodSeconds ≥ preStop + shutdown-grace + worker-grace + margin",
			grace, atLeast(preStopSleep + flags.shutdownGrace + flags.workerGrace + exitMargin)},
	})
}

func TestService(t *testing.T) {
	d := loadDeployment(t)
	c := balancerContainer(t, d)
	s := &corev1.Service{}
	decode(t, "service.yaml", s)

	var sp corev1.ServicePort
	if len(s.Spec.Ports) > 0 {
		sp = s.Spec.Ports[0]
	}
	var containerPortName string
	if len(c.Ports) > 0 {
		containerPortName = c.Ports[0].Name
	}
	checkFacts(t, []fact{
		{"type", s.Spec.Type, corev1.ServiceTypeClusterIP},
		{"one port", len(s.Spec.Ports), 1},
		{"port", sp.Port, int32(80)},
		{"targetPort is a name", sp.TargetPort.Type, intstr.String},
		{"targetPort = the container port's name", sp.TargetPort.StrVal, containerPortName},
		{"selector is set", len(s.Spec.Selector) > 0, true},
		{"selector matches the Deployment's pods", labels.SelectorFromSet(s.Spec.Selector).Matches(labels.Set(d.Spec.Template.Labels)), true},
	})
}

func TestHPA(t *testing.T) {
	d := loadDeployment(t)
	h := &autoscalingv2.HorizontalPodAutoscaler{}
	decode(t, "hpa.yaml", h)

	var m autoscalingv2.MetricSpec
	if len(h.Spec.Metrics) > 0 {
		m = h.Spec.Metrics[0]
	}
	r := deref(m.Resource)
	cpuRequest := balancerContainer(t, d).Resources.Requests[corev1.ResourceCPU]
	checkFacts(t, []fact{
		{"scaleTargetRef.apiVersion", h.Spec.ScaleTargetRef.APIVersion, d.APIVersion},
		{"scaleTargetRef.kind", h.Spec.ScaleTargetRef.Kind, d.Kind},
		{"scaleTargetRef.name", h.Spec.ScaleTargetRef.Name, d.Name},
		{"minReplicas", deref(h.Spec.MinReplicas), int32(2)},
		{"maxReplicas", h.Spec.MaxReplicas, int32(10)},
		{"minReplicas = the Deployment's replicas", deref(h.Spec.MinReplicas), deref(d.Spec.Replicas)},
		{"one metric", len(h.Spec.Metrics), 1},
		{"metric type", m.Type, autoscalingv2.ResourceMetricSourceType},
		{"resource", r.Name, corev1.ResourceCPU},
		{"target type", r.Target.Type, autoscalingv2.UtilizationMetricType},
		{"averageUtilization", deref(r.Target.AverageUtilization), int32(70)},
		// Utilization is a percentage of the request: without a CPU request the HPA cannot act.
		{"the Deployment requests CPU", cpuRequest.IsZero(), false},
	})
}
