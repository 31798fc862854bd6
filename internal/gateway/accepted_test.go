package gateway

import (
	"testing"

	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

func TestListenersAccepted(t *testing.T) {
	st := func(oks ...bool) *gwState {
		s := &gwState{listeners: map[gatewayv1.SectionName]*lstate{}}
		for i, ok := range oks {
			s.listeners[gatewayv1.SectionName(string(rune('a'+i)))] = &lstate{ok: ok}
		}
		return s
	}
	for _, tc := range []struct {
		name   string
		st     *gwState
		ok     bool
		reason gatewayv1.GatewayConditionReason
	}{
		{"all valid", st(true, true), true, gatewayv1.GatewayReasonAccepted},
		{"one invalid", st(true, false), true, gatewayv1.GatewayReasonListenersNotValid},
		{"none valid", st(false, false), false, gatewayv1.GatewayReasonListenersNotValid},
		{"only listener invalid", st(false), false, gatewayv1.GatewayReasonListenersNotValid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ok, reason, msg := listenersAccepted(tc.st)
			if ok != tc.ok || reason != tc.reason {
				t.Errorf("listenersAccepted = %v, %s (%q); want %v, %s", ok, reason, msg, tc.ok, tc.reason)
			}
			if reason == gatewayv1.GatewayReasonListenersNotValid && msg == "" {
				t.Error("ListenersNotValid with no message naming the listeners")
			}
		})
	}
}
