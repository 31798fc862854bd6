package cli

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

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
