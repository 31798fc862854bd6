package gateway

import (
	"fmt"
	"slices"
	"strings"

	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// listenersAccepted is the Gateway's Accepted condition as its listeners
// decide it, for a Gateway whose addresses are acceptable. The spec (and
// the conformance test GatewayListenerUnsupportedProtocol) asks for
// ListenersNotValid whenever a listener is invalid: with status True
// while at least one listener is valid (the Gateway serves those), False
// when none is.
func listenersAccepted(st *gwState) (bool, gatewayv1.GatewayConditionReason, string) {
	var invalid []string
	for name, ls := range st.listeners {
		if !ls.ok {
			invalid = append(invalid, string(name))
		}
	}
	if len(invalid) == 0 {
		return true, gatewayv1.GatewayReasonAccepted, ""
	}
	slices.Sort(invalid)
	msg := fmt.Sprintf("listeners not valid (see their conditions): %s", strings.Join(invalid, ", "))
	if len(invalid) == len(st.listeners) {
		return false, gatewayv1.GatewayReasonListenersNotValid, msg + "; the Gateway has no valid listener"
	}
	return true, gatewayv1.GatewayReasonListenersNotValid, msg
}
