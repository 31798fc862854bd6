package hostns

import (
	"net/netip"
	"strings"
	"testing"
)

func TestLayout(t *testing.T) {
	f, err := New(Config{Count: 3, Bridge: "cci0h", CIDR: netip.MustParsePrefix("10.44.0.7/24"), DataDir: "/d", Pools: []string{"", "gpu"}, Binary: "/bin/cci"})
	if err != nil {
		t.Fatal(err)
	}
	want := []Host{
		{Name: "host-1", Netns: "/var/run/netns/host.cci0h.1", IP: netip.MustParseAddr("10.44.0.2"), DataDir: "/d/hosts/host-1"},
		{Name: "host-2", Netns: "/var/run/netns/host.cci0h.2", IP: netip.MustParseAddr("10.44.0.3"), DataDir: "/d/hosts/host-2", Pool: "gpu"},
		{Name: "host-3", Netns: "/var/run/netns/host.cci0h.3", IP: netip.MustParseAddr("10.44.0.4"), DataDir: "/d/hosts/host-3"},
	}
	for i, h := range f.Hosts() {
		if h != want[i] {
			t.Errorf("host %d: %+v, want %+v", i+1, h, want[i])
		}
	}
	if gw := f.cfg.Gateway(); gw != netip.MustParseAddr("10.44.0.1") {
		t.Errorf("gateway %s", gw)
	}
	if lb := f.cfg.LBPool(); lb != netip.MustParsePrefix("10.44.0.240/28") {
		t.Errorf("load-balancer pool %s", lb)
	}
	if h, ok := f.Host("host-2"); !ok || h.Pool != "gpu" {
		t.Errorf("Host(host-2) = %+v %v", h, ok)
	}
}

func TestConfigRefusals(t *testing.T) {
	for _, c := range []struct {
		cfg  Config
		want string
	}{
		{Config{Count: 0, Bridge: "b", CIDR: netip.MustParsePrefix("10.44.0.0/24")}, "choose 1 to 64"},
		{Config{Count: 2, Bridge: "a-very-long-bridge", CIDR: netip.MustParsePrefix("10.44.0.0/24")}, "1 to 13 bytes"},
		{Config{Count: 2, Bridge: "b", CIDR: netip.MustParsePrefix("10.44.0.0/28")}, "/26 or wider"},
		{Config{Count: 60, Bridge: "b", CIDR: netip.MustParsePrefix("10.44.0.0/26")}, "too small for 60 hosts"},
		{Config{Count: 2, Bridge: "b", CIDR: netip.MustParsePrefix("fd00::/64")}, "IPv4"},
		{Config{Count: 1, Bridge: "b", CIDR: netip.MustParsePrefix("10.44.0.0/24"), Pools: []string{"a", "b"}}, "at most one pool per host"},
	} {
		_, err := New(c.cfg)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want an error with %q", c.cfg, err, c.want)
		}
	}
}

func TestLastAddr(t *testing.T) {
	for p, want := range map[string]string{"10.44.0.0/24": "10.44.0.255", "10.0.0.0/16": "10.0.255.255", "192.168.1.64/26": "192.168.1.127"} {
		if got := lastAddr(netip.MustParsePrefix(p)); got.String() != want {
			t.Errorf("lastAddr(%s) = %s, want %s", p, got, want)
		}
	}
}
