package claimcheck

import (
	"strings"
	"testing"

	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestMessage(t *testing.T) {
	class := func(name string, def bool) *storagev1.StorageClass {
		sc := &storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: name}}
		if def {
			sc.Annotations = map[string]string{"storageclass.kubernetes.io/is-default-class": "true"}
		}
		return sc
	}
	for _, tc := range []struct {
		name    string
		classes []*storagev1.StorageClass
		want    string
	}{
		{"sorted, default marked", []*storagev1.StorageClass{class("cci-sfs", false), class("cci-evs", true), class("cci-obs", false)}, "are: cci-evs (default), cci-obs, cci-sfs ("},
		{"no class at all", nil, "are: none ("},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Message("fast-ssd", tc.classes)
			if !strings.Contains(got, `StorageClass "fast-ssd" does not exist`) || !strings.Contains(got, tc.want) {
				t.Errorf("Message = %q, want it to name fast-ssd and contain %q", got, tc.want)
			}
		})
	}
}
