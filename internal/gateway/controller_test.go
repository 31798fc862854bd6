package gateway

import (
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/utils/ptr"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// TestConflicts: of two Gateways asking for one address on a shared port,
// the one that holds it keeps it and the other says AddressNotUsable
// naming it; without a holder the older one wins; another port or
// another address is no conflict.
func TestConflicts(t *testing.T) {
	gw := func(name string, created int64, addr string, ports ...int32) *gwState {
		g := &gatewayv1.Gateway{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, Generation: 1, CreationTimestamp: metav1.NewTime(time.Unix(created, 0))}}
		if addr != "" {
			g.Spec.Addresses = []gatewayv1.GatewaySpecAddress{{Value: addr}}
		}
		st := &gwState{gw: g, accepted: true, proxy: map[int32]int{}, listeners: map[gatewayv1.SectionName]*lstate{}}
		for _, p := range ports {
			st.proxy[p] = 0
		}
		return st
	}
	for _, tc := range []struct {
		name string
		gws  []*gwState
		held map[string]string // Gateway → the address its Service holds
		want map[string]string // Gateway → a part of its conflict ("" none)
	}{
		{
			name: "the older one wins when neither holds the address",
			gws:  []*gwState{gw("old", 1, "10.0.0.5", 80, 443), gw("new", 2, "10.0.0.5", 443)},
			want: map[string]string{"old": "", "new": "address 10.0.0.5 is asked for with port 443 by Gateway ns/old"},
		},
		{
			name: "creation time ties go by name",
			gws:  []*gwState{gw("b", 1, "10.0.0.5", 80), gw("a", 1, "10.0.0.5", 80)},
			want: map[string]string{"a": "", "b": "by Gateway ns/a"},
		},
		{
			name: "the holder keeps it, even when younger",
			gws:  []*gwState{gw("old", 1, "10.0.0.5", 80), gw("new", 2, "10.0.0.5", 80)},
			held: map[string]string{"new": "10.0.0.5"},
			want: map[string]string{"new": "", "old": "address 10.0.0.5 is held with port 80 by Gateway ns/new"},
		},
		{
			name: "a Gateway without spec.addresses that the pool gave the address holds it",
			gws:  []*gwState{gw("pool", 2, "", 80), gw("asks", 1, "10.0.0.5", 80)},
			held: map[string]string{"pool": "10.0.0.5"},
			want: map[string]string{"pool": "", "asks": "by Gateway ns/pool"},
		},
		{
			name: "other ports",
			gws:  []*gwState{gw("a", 1, "10.0.0.5", 80), gw("b", 2, "10.0.0.5", 8080)},
			want: map[string]string{"a": "", "b": ""},
		},
		{
			name: "other addresses",
			gws:  []*gwState{gw("a", 1, "10.0.0.5", 80), gw("b", 2, "10.0.0.6", 80)},
			want: map[string]string{"a": "", "b": ""},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			gws := map[string]*gwState{}
			for _, st := range tc.gws {
				st.address = tc.held[st.gw.Name]
				gws[gwKey("ns", st.gw.Name)] = st
			}
			markConflicts(gws)
			for name, want := range tc.want {
				got := gws[gwKey("ns", name)].conflict
				if want == "" && got != "" || want != "" && !strings.Contains(got, want) {
					t.Errorf("Gateway %s: conflict %q, want %q", name, got, want)
				}
			}
		})
	}

	// The status says so.
	c := testController(t)
	st := gw("new", 2, "10.0.0.5", 80)
	st.conflict = "address 10.0.0.5 is held with port 80 by Gateway ns/old"
	st.conflictPorts = map[int32]bool{80: true}
	for _, l := range []gatewayv1.Listener{{Name: "web", Port: 80, Protocol: gatewayv1.HTTPProtocolType}, {Name: "alt", Port: 8080, Protocol: gatewayv1.HTTPProtocolType}} {
		st.gw.Spec.Listeners = append(st.gw.Spec.Listeners, l)
		st.listeners[l.Name] = &lstate{l: l, ok: true, refsOK: true, status: &gatewayv1.ListenerStatus{Name: l.Name, Conditions: []metav1.Condition{
			{Type: string(gatewayv1.ListenerConditionConflicted), Status: metav1.ConditionFalse, Reason: string(gatewayv1.ListenerReasonNoConflicts)}}}}
	}
	c.svcs.Add(&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: Namespace, Name: ServiceName("ns", "new")}})
	s := c.gatewayStatus(st)
	p := meta.FindStatusCondition(s.Conditions, string(gatewayv1.GatewayConditionProgrammed))
	if p == nil || p.Status != metav1.ConditionFalse || p.Reason != string(gatewayv1.GatewayReasonAddressNotUsable) || !strings.Contains(p.Message, "ns/old") {
		t.Errorf("Programmed of the Gateway in conflict: %+v, want False AddressNotUsable naming ns/old", p)
	}
	// The listener of the shared port is Conflicted, the other is not.
	for _, ls := range s.Listeners {
		c := meta.FindStatusCondition(ls.Conditions, string(gatewayv1.ListenerConditionConflicted))
		want := ls.Name == "web"
		if c == nil || (c.Status == metav1.ConditionTrue) != want || want && (c.Reason != ListenerReasonAddressConflict || !strings.Contains(c.Message, "ns/old")) {
			t.Errorf("listener %s: Conflicted %+v, want %v", ls.Name, c, want)
		}
	}
	if len(s.Listeners) != 2 {
		t.Errorf("%d listener statuses, want 2", len(s.Listeners))
	}
}

// An HTTPRoute rule's retry becomes the data plane's policy, with the
// defaults for what it leaves out.
func TestRouteSpecRetry(t *testing.T) {
	r := &gatewayv1.HTTPRoute{Spec: gatewayv1.HTTPRouteSpec{Rules: []gatewayv1.HTTPRouteRule{
		{Retry: &gatewayv1.HTTPRouteRetry{Codes: []gatewayv1.HTTPRouteRetryStatusCode{502, 503}, Attempts: ptr.To(3), Backoff: ptr.To(gatewayv1.Duration("100ms"))}},
		{Retry: &gatewayv1.HTTPRouteRetry{}},
		{},
	}}}
	s := routeSpec(r, make([][]*Backend, 3))
	if p := s.Rules[0].Retry; p == nil || !slices.Equal(p.Codes, []int{502, 503}) || p.Attempts != 3 || p.Backoff != 100*time.Millisecond {
		t.Errorf("rule 0: %+v", p)
	}
	if p := s.Rules[1].Retry; p == nil || len(p.Codes) != 0 || p.Attempts != 1 || p.Backoff != 25*time.Millisecond {
		t.Errorf("rule 1 (defaults): %+v", p)
	}
	if p := s.Rules[2].Retry; p != nil {
		t.Errorf("rule 2 (no retry): %+v", p)
	}
}
