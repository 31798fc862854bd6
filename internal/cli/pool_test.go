package cli

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/cci-project/cci/internal/device"
	"github.com/cci-project/cci/internal/pool"
)

func TestPrintPools(t *testing.T) {
	q := resource.MustParse
	pools := []pool.Summary{
		{Name: "general", Hosts: 2, ReadyHosts: 1,
			Allocatable: corev1.ResourceList{"cpu": q("4"), "memory": q("8Gi"), "pods": q("220")},
			Requested:   corev1.ResourceList{"cpu": q("1250m"), "memory": q("1536Mi"), "pods": q("3")}},
		{Name: "gpu", Hosts: 1, ReadyHosts: 0,
			Allocatable: corev1.ResourceList{"cpu": q("64"), "memory": q("512Gi"), "pods": q("110"), "nvidia.com/gpu": q("8")},
			Requested:   corev1.ResourceList{"memory": q("512Mi")}},
	}
	var b strings.Builder
	if err := printPools(&b, pools); err != nil {
		t.Fatal(err)
	}
	want := `POOL     HOSTS  CPU     MEMORY       PODS   DEVICES
general  1/2    1.25/4  1.5Gi/8.0Gi  3/220  -
gpu      0/1    0/64    512Mi/512Gi  0/110  nvidia.com/gpu=0/8
`
	if b.String() != want {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}
}

func TestPrintGPUs(t *testing.T) {
	node := func(name, poolName, devices string) corev1.Node {
		n := corev1.Node{}
		n.Name = name
		n.Labels = map[string]string{pool.Label: poolName}
		if devices != "" {
			n.Annotations = map[string]string{device.DevicesAnnotation: devices}
		}
		return n
	}
	nodes := []corev1.Node{
		node("h2", "gpu", `[{"index":0,"id":"GPU-b","product":"NVIDIA-H200","memoryBytes":151397597184,"replicas":2,"pods":["t/a","t/b"]},{"index":1,"id":"GPU-c","product":"NVIDIA-H200","memoryBytes":151397597184,"replicas":2,"unhealthy":"XID 79"}]`),
		node("h1", "gpu", `[{"index":0,"id":"GPU-a","product":"CCI-Fake-GPU","memoryBytes":17179869184,"replicas":1,"pods":["t/c"]}]`),
		node("cpu", "general", ""),
		node("h3", "gpu", `{`),
	}
	var b strings.Builder
	if err := printGPUs(&b, nodes); err != nil {
		t.Fatal(err)
	}
	want := `POOL  HOST  INDEX  ID     MODEL         MEMORY  PODS                    HEALTH
gpu   h1    0      GPU-a  CCI-Fake-GPU  16Gi    t/c                     healthy
gpu   h2    0      GPU-b  NVIDIA-H200   141Gi   t/a,t/b (2/2 replicas)  healthy
gpu   h2    1      GPU-c  NVIDIA-H200   141Gi   - (0/2 replicas)        unhealthy: XID 79
`
	if !strings.HasPrefix(b.String(), want) {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}
	if !strings.Contains(b.String(), "gpu   h3    -") || !strings.Contains(b.String(), "unreadable: node annotation cci.io/devices") {
		t.Errorf("a host with a bad annotation is not reported:\n%s", b.String())
	}
}
