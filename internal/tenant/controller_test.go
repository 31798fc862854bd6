package tenant

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

func TestQuotaHard(t *testing.T) {
	perClass := corev1.ResourceName("cci-evs.storageclass.storage.k8s.io/requests.storage")
	hard := quotaHard(corev1.ResourceList{
		corev1.ResourceCPU:                    resource.MustParse("2"),
		corev1.ResourcePods:                   resource.MustParse("5"),
		corev1.ResourceStorage:                resource.MustParse("10Gi"),
		corev1.ResourcePersistentVolumeClaims: resource.MustParse("3"),
		perClass:                              resource.MustParse("4Gi"),
		"nvidia.com/gpu":                      resource.MustParse("1"),
		corev1.ResourceServicesLoadBalancers:  resource.MustParse("2"),
	})
	want := map[corev1.ResourceName]string{
		corev1.ResourceRequestsCPU:            "2",
		corev1.ResourcePods:                   "5",
		corev1.ResourceRequestsStorage:        "10Gi",
		corev1.ResourcePersistentVolumeClaims: "3",
		perClass:                              "4Gi",
		"requests.nvidia.com/gpu":             "1",
		corev1.ResourceServicesLoadBalancers:  "2",
		GatewayCount:                          "2",
	}
	if len(hard) != len(want) {
		t.Fatalf("hard: %v, want %v", hard, want)
	}
	for k, v := range want {
		if q, ok := hard[k]; !ok || q.Cmp(resource.MustParse(v)) != 0 {
			t.Errorf("hard[%s] = %v, want %s", k, hard[k], v)
		}
	}
}
