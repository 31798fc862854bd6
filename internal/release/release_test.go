package release

import (
	"testing"

	"k8s.io/utils/ptr"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

func TestCandidateName(t *testing.T) {
	for stable, want := range map[string]string{"web-blue": "web-green", "web-green": "web-blue", "web": "web-green"} {
		if got := candidateName(stable); got != want {
			t.Errorf("candidate of %s: %s, want %s", stable, got, want)
		}
	}
}

func TestSetWeight(t *testing.T) {
	rt := &gatewayv1.HTTPRoute{Spec: gatewayv1.HTTPRouteSpec{Rules: []gatewayv1.HTTPRouteRule{{BackendRefs: []gatewayv1.HTTPBackendRef{
		{BackendRef: gatewayv1.BackendRef{BackendObjectReference: gatewayv1.BackendObjectReference{Name: "web-blue", Port: ptr.To(gatewayv1.PortNumber(80))}}},
	}}}}}
	setWeight(rt, "web-blue", -1) // present: left as it is
	setWeight(rt, "web-green", 0) // missing: added with the first one's port
	setWeight(rt, "web-green", 30)
	refs := rt.Spec.Rules[0].BackendRefs
	if len(refs) != 2 || refs[0].Weight != nil || refs[1].Name != "web-green" || ptr.Deref(refs[1].Weight, -1) != 30 || ptr.Deref(refs[1].Port, 0) != 80 {
		t.Errorf("backendRefs: %+v", refs)
	}
}
