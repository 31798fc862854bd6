package loadbalancer

import (
	"net/netip"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
)

func TestParsePool(t *testing.T) {
	for _, tc := range []struct {
		in      []string
		want    string
		wantErr string
	}{
		{[]string{"192.0.2.10"}, "192.0.2.10", ""},
		{[]string{"192.0.2.10", " 192.0.2.10 ", "192.0.2.11"}, "192.0.2.10 192.0.2.11", ""},
		{[]string{"192.0.2.16/30"}, "192.0.2.17 192.0.2.18", ""},
		{[]string{"192.0.2.16/31"}, "192.0.2.16 192.0.2.17", ""},
		{[]string{"192.0.2.7/32"}, "192.0.2.7", ""},
		{[]string{"2001:db8::/126"}, "2001:db8:: 2001:db8::1 2001:db8::2 2001:db8::3", ""},
		{[]string{"10.0.0.0/8"}, "", "more than 65536 addresses"},
		{[]string{"example.org"}, "", `"example.org": not an IP address or prefix`},
		{[]string{"192.0.2.0/33"}, "", "not an IP address or prefix"},
		{[]string{""}, "", "pool is empty"},
	} {
		got, err := ParsePool(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("ParsePool(%q) error %v, want %q", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParsePool(%q): %v", tc.in, err)
			continue
		}
		var s []string
		for _, a := range got {
			s = append(s, a.String())
		}
		if strings.Join(s, " ") != tc.want {
			t.Errorf("ParsePool(%q) = %v, want %s", tc.in, s, tc.want)
		}
	}
}

// Ports are held per address: two Services share an address on different
// ports, a taken port, a NodePort or a port a host process listens on
// refuses, and a release frees the ports again.
func TestPortBookkeeping(t *testing.T) {
	a := netip.MustParseAddr("192.0.2.10")
	busy := portKey{v1.ProtocolTCP, 22}
	c := &Controller{
		cfg: Config{PortInUse: func(_ netip.Addr, proto v1.Protocol, port int32) bool {
			return portKey{proto, port} == busy
		}},
		owner: map[netip.Addr]map[portKey]string{},
		addr:  map[string]netip.Addr{},
	}
	http := []portKey{{v1.ProtocolTCP, 80}}
	if why := c.free(a, "ns/a", http, nil); why != "" {
		t.Fatalf("80 on an empty address: %s", why)
	}
	c.take("ns/a", a, http)
	if why := c.free(a, "ns/a", http, nil); why != "" {
		t.Errorf("a Service's own port refused: %s", why)
	}
	if why := c.free(a, "ns/b", http, nil); !strings.Contains(why, "port 80/TCP is taken on 192.0.2.10 by Service ns/a") {
		t.Errorf("taken port: %q", why)
	}
	if why := c.free(a, "ns/b", []portKey{{v1.ProtocolUDP, 80}}, nil); why != "" {
		t.Errorf("80/UDP next to 80/TCP refused: %s", why)
	}
	if why := c.free(a, "ns/b", []portKey{busy}, nil); !strings.Contains(why, "in use on 192.0.2.10 by a process of the host") {
		t.Errorf("host port: %q", why)
	}
	np := map[portKey]string{{v1.ProtocolTCP, 30080}: "ns/np"}
	if why := c.free(a, "ns/b", []portKey{{v1.ProtocolTCP, 30080}}, np); !strings.Contains(why, "NodePort of Service ns/np") {
		t.Errorf("NodePort: %q", why)
	}
	if got, ok := c.release("ns/a"); !ok || got != a {
		t.Errorf("release: %v %v", got, ok)
	}
	if why := c.free(a, "ns/b", http, nil); why != "" {
		t.Errorf("after release: %s", why)
	}
}
