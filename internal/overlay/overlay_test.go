package overlay

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestBuildNetConf(t *testing.T) {
	for _, c := range []struct {
		cidr, backend string
		vni, port     int
		want          string // JSON of the Backend block, or an error fragment
		err           bool
	}{
		{"10.42.0.0/16", "vxlan", 0, 0, `{"Type":"vxlan"}`, false},
		{"10.42.0.0/16", "vxlan", 42, 4789, `{"Port":4789,"Type":"vxlan","VNI":42}`, false},
		{"10.42.0.0/16", "host-gw", 42, 0, `{"Type":"host-gw"}`, false},
		{"10.42.0.0/16", "none", 0, 0, `{"Type":"none"}`, false},
		{"10.42.0.0/16", "udp", 0, 0, "choose one of", true},
		{"10.42.0.0", "vxlan", 0, 0, "cluster CIDR", true},
	} {
		raw, err := BuildNetConf(c.cidr, c.backend, c.vni, c.port)
		if c.err {
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("%s %s: %v, want an error with %q", c.cidr, c.backend, err, c.want)
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		var nc struct {
			Network string
			Backend json.RawMessage
		}
		if err := json.Unmarshal(raw, &nc); err != nil {
			t.Fatal(err)
		}
		var be map[string]any
		_ = json.Unmarshal(nc.Backend, &be)
		got, _ := json.Marshal(be)
		if nc.Network != c.cidr || string(got) != c.want {
			t.Errorf("%s %s: Network %q Backend %s, want %s", c.cidr, c.backend, nc.Network, got, c.want)
		}
		if bt, _ := BackendType(raw); bt != c.backend {
			t.Errorf("BackendType = %q, want %q", bt, c.backend)
		}
	}
}
