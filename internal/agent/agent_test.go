package agent

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/cci-project/cci/internal/device"
	"github.com/cci-project/cci/internal/pool"
)

// TestRegisterNodeKeepsPool: a host that registers again after changing
// pools gets the new pool's label and taint; the label of CCI before
// pools and the old pool's taint go, other taints stay.
func TestRegisterNodeKeepsPool(t *testing.T) {
	unreachable := v1.Taint{Key: "node.kubernetes.io/unreachable", Effect: v1.TaintEffectNoExecute}
	existing := &v1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "h", Labels: map[string]string{"node.cci.io/pool": "x86", pool.Label: "gpu", "team": "a"}},
		Spec:       v1.NodeSpec{PodCIDR: "10.42.1.0/24", Taints: []v1.Taint{unreachable, *pool.Taint("gpu")}},
	}
	kube := fake.NewClientset(existing)
	for _, c := range []struct {
		pool   string
		taints []v1.Taint
	}{
		{"ascend", []v1.Taint{unreachable, *pool.Taint("ascend")}},
		{"general", []v1.Taint{unreachable}},
	} {
		n := buildNode(Config{NodeName: "h", Pool: c.pool, MaxPods: 10, DataDir: t.TempDir()}, "test")
		reg, err := registerNode(context.Background(), kube, n)
		if err != nil || reg.Spec.PodCIDR != "10.42.1.0/24" {
			t.Fatalf("%s: register: %v %v", c.pool, reg, err)
		}
		got, err := kube.CoreV1().Nodes().Get(context.Background(), "h", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got.Labels[pool.Label] != c.pool || got.Labels["team"] != "a" {
			t.Errorf("%s: labels %v", c.pool, got.Labels)
		}
		if _, ok := got.Labels["node.cci.io/pool"]; ok {
			t.Errorf("%s: the label node.cci.io/pool is left", c.pool)
		}
		if len(got.Spec.Taints) != len(c.taints) {
			t.Fatalf("%s: taints %+v, want %+v", c.pool, got.Spec.Taints, c.taints)
		}
		for i := range c.taints {
			if got.Spec.Taints[i] != c.taints[i] {
				t.Errorf("%s: taints %+v, want %+v", c.pool, got.Spec.Taints, c.taints)
			}
		}
	}
	// A new host of a pool registers with the taint.
	n := buildNode(Config{NodeName: "new", Pool: "gpu", MaxPods: 10, DataDir: t.TempDir()}, "test")
	if len(n.Spec.Taints) != 1 || n.Spec.Taints[0] != *pool.Taint("gpu") || n.Labels[pool.Label] != "gpu" {
		t.Errorf("new gpu node: labels %v taints %v", n.Labels, n.Spec.Taints)
	}
}

func TestPoolFlagValidated(t *testing.T) {
	c := Config{Pool: "GPU_1", Server: "https://x:6443", Token: "t", NodeName: "h"}
	if err := c.defaults(); err == nil || !strings.Contains(err.Error(), `--pool: pool name "GPU_1": a lowercase RFC 1123 label`) {
		t.Errorf("defaults: %v", err)
	}
	c = Config{Server: "https://x:6443", Token: "t", NodeName: "h"}
	if err := c.defaults(); err != nil || c.Pool != "general" {
		t.Errorf("default pool %q, %v", c.Pool, err)
	}
}

// TestComponents: containerd is listed first (so that it stops last) only
// when the agent runs its own, and the service proxy last; with "off", a
// step that removes the refusal rules an earlier proxy left.
func TestComponents(t *testing.T) {
	middle := []string{"containerd client", "devices", "node registration", "network settings", "overlay", "pod network",
		"network policy enforcer", "tenant containment", "events", "pod certificates", "cci-evs provisioner", "cci-evs snapshotter", "node controller", "republish", "pod status watch", "node deletion watch"}
	for _, tc := range []struct {
		name string
		cfg  Config
		want []string
	}{
		{"own containerd", Config{ServiceProxy: "iptables"}, slices.Concat([]string{"containerd"}, middle, []string{"kube-proxy"})},
		{"containerd socket", Config{ContainerdSocket: "/run/containerd/containerd.sock", ServiceProxy: "nftables"}, slices.Concat(middle, []string{"kube-proxy"})},
		{"no service proxy", Config{ServiceProxy: "off"}, slices.Concat([]string{"containerd"}, middle, []string{"service refusal removal"})},
	} {
		a := &hostAgent{cfg: tc.cfg}
		var got []string
		for _, c := range a.components() {
			got = append(got, c.Name())
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s: components\n%q\nwant\n%q", tc.name, got, tc.want)
		}
	}
}

// The node advertises the devices: every one in capacity, the healthy
// ones in allocatable, and the model's labels.
func TestWithDevices(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("fake device nodes are made with mknod, which needs root")
	}
	dir := t.TempDir()
	m, err := device.New(context.Background(), device.Config{Backend: &device.Fake{Count: 2, Dir: filepath.Join(dir, "devices")}, SpecDir: filepath.Join(dir, "cdi")})
	if err != nil {
		t.Fatal(err)
	}
	n := buildNode(Config{NodeName: "h", MaxPods: 10, DataDir: dir}, "test")
	m.MarkUnhealthy(device.FakeID(1), "test")
	withDevices(n, m)
	c, a := n.Status.Capacity[device.NVIDIAGPU], n.Status.Allocatable[device.NVIDIAGPU]
	if c.Value() != 2 || a.Value() != 1 {
		t.Fatalf("capacity %s allocatable %s, want 2 and 1", c.String(), a.String())
	}
	if n.Labels[device.ProductLabel] != device.FakeProduct || n.Labels[device.CountLabel] != "2" || n.Labels[device.SharingLabel] != device.SharingNone {
		t.Fatalf("labels %v", n.Labels)
	}
	pub, err := device.ParsePublished(n.Annotations[device.DevicesAnnotation])
	if err != nil || len(pub) != 2 || pub[1].Unhealthy != "test" || pub[0].Unhealthy != "" {
		t.Fatalf("published devices %+v (%v), want two with the second unhealthy", pub, err)
	}
	if _, ok := n.Status.Capacity[v1.ResourceCPU]; !ok {
		t.Fatal("the node lost its CPU")
	}
}

func TestDeviceBackend(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{FakeGPUs: 2}, "fake"},
		{Config{Accelerators: "nvidia"}, "nvidia"},
		{Config{Accelerators: "ascend"}, "ascend"},
		{Config{Accelerators: "none"}, ""},
		{Config{Accelerators: "tpu"}, `--accelerators "tpu": choose auto, nvidia, ascend or none`},
		{Config{FakeGPUs: -1}, "--fake-gpus -1: want 0 or more"},
	} {
		b, err := tc.cfg.DeviceBackend()
		got := ""
		switch {
		case err != nil:
			got = err.Error()
		case b != nil:
			got = b.Name()
		}
		if got != tc.want {
			t.Errorf("%+v: %q, want %q", tc.cfg, got, tc.want)
		}
	}
}
