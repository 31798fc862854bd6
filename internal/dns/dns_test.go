package dns

import (
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func TestCorefile(t *testing.T) {
	for _, tc := range []struct {
		name    string
		opts    CorefileOptions
		want    string
		wantErr string
	}{
		{
			name: "with upstreams",
			opts: CorefileOptions{IP: "192.0.2.2", Port: 53, Kubeconfig: "/data/pki/coredns.kubeconfig", Upstreams: []string{"127.0.0.53", "[2001:db8::1]:53"}},
			want: `.:53 {
    bind 192.0.2.2
    errors
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        kubeconfig /data/pki/coredns.kubeconfig
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 30
    }
    forward . 127.0.0.53 [2001:db8::1]:53
    cache 30
}
`,
		},
		{
			name: "no upstreams: no forward",
			opts: CorefileOptions{IP: "10.0.0.5", Port: 5353, Kubeconfig: "/k"},
			want: `.:5353 {
    bind 10.0.0.5
    errors
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        kubeconfig /k
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 30
    }
    cache 30
}
`,
		},
		{
			name: "the server itself is no upstream",
			opts: CorefileOptions{IP: "10.0.0.5", Port: 53, Kubeconfig: "/k", Upstreams: []string{"10.0.0.5", "10.0.0.5:5353", "10.0.0.6"}},
			want: `.:53 {
    bind 10.0.0.5
    errors
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        kubeconfig /k
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 30
    }
    forward . 10.0.0.5:5353 10.0.0.6
    cache 30
}
`,
		},
		{name: "host name", opts: CorefileOptions{IP: "dns.example", Port: 53, Kubeconfig: "/k"}, wantErr: "not an IP address"},
		{name: "port zero", opts: CorefileOptions{IP: "10.0.0.5", Port: 0, Kubeconfig: "/k"}, wantErr: "out of range"},
		{name: "port too big", opts: CorefileOptions{IP: "10.0.0.5", Port: 70000, Kubeconfig: "/k"}, wantErr: "out of range"},
		{name: "no kubeconfig", opts: CorefileOptions{IP: "10.0.0.5", Port: 53}, wantErr: "no kubeconfig"},
		{name: "kubeconfig with a brace", opts: CorefileOptions{IP: "10.0.0.5", Port: 53, Kubeconfig: "/a}b"}, wantErr: "cannot hold"},
		{name: "kubeconfig with a space", opts: CorefileOptions{IP: "10.0.0.5", Port: 53, Kubeconfig: "/a b"}, wantErr: "cannot hold"},
		{name: "upstream not an IP", opts: CorefileOptions{IP: "10.0.0.5", Port: 53, Kubeconfig: "/k", Upstreams: []string{"dns.google"}}, wantErr: `upstream "dns.google"`},
		{name: "upstream bad port", opts: CorefileOptions{IP: "10.0.0.5", Port: 53, Kubeconfig: "/k", Upstreams: []string{"1.1.1.1:x"}}, wantErr: "bad port"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Corefile(tc.opts)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("Corefile:\n%s\nwant:\n%s", got, tc.want)
			}
		})
	}
}

func TestNameservers(t *testing.T) {
	for _, tc := range []struct {
		name, conf string
		want       []string
	}{
		{name: "systemd stub", conf: "# This is /run/systemd/resolve/stub-resolv.conf\nnameserver 127.0.0.53\noptions edns0 trust-ad\nsearch example.com\n", want: []string{"127.0.0.53"}},
		{name: "several, in order", conf: "nameserver 10.0.0.2\nnameserver 8.8.8.8\n  nameserver   1.1.1.1  \n", want: []string{"10.0.0.2", "8.8.8.8", "1.1.1.1"}},
		{name: "IPv6", conf: "nameserver 2001:db8::53\n", want: []string{"[2001:db8::53]:53"}},
		{name: "comments and names are skipped", conf: "; nameserver 9.9.9.9\n# nameserver 9.9.9.9\nnameserver resolver.example\nnameserver 10.1.1.1\n", want: []string{"10.1.1.1"}},
		{name: "none", conf: "search example.com\noptions ndots:2\n", want: nil},
		{name: "empty", conf: "", want: nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Nameservers(strings.NewReader(tc.conf))
			if err != nil {
				t.Fatal(err)
			}
			if strings.Join(got, ",") != strings.Join(tc.want, ",") {
				t.Errorf("Nameservers = %q, want %q", got, tc.want)
			}
		})
	}
	got, err := HostNameservers(filepath.Join(t.TempDir(), "missing"))
	if err != nil || got != nil {
		t.Errorf("a missing resolv.conf: got %q, %v; want none and no error", got, err)
	}
}

func TestClusterIP(t *testing.T) {
	for _, tc := range []struct{ cidr, want, wantErr string }{
		{cidr: "10.43.0.0/16", want: "10.43.0.10"},
		{cidr: "10.96.0.0/12", want: "10.96.0.10"},
		{cidr: "10.43.7.5/16", want: "10.43.0.10"},
		{cidr: "192.168.0.0/28", want: "192.168.0.10"},
		{cidr: "fd00:10:96::/108", want: "fd00:10:96::a"},
		{cidr: "10.0.0.0/29", wantErr: "too small"},
		{cidr: "10.43.0.0", wantErr: "service CIDR"},
	} {
		got, err := ClusterIP(tc.cidr)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("ClusterIP(%q) error = %v, want %q", tc.cidr, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got.String() != tc.want {
			t.Errorf("ClusterIP(%q) = %v, %v; want %s", tc.cidr, got, err, tc.want)
		}
	}
}

// A taken port is a clear error that names the flag, and nothing is left
// bound.
func TestStartPortTaken(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	addr := pc.LocalAddr().String()
	_, err = Start(Config{Address: addr, Kubeconfig: "/k", Upstreams: []string{}})
	if err == nil {
		t.Fatal("Start on a taken port succeeded")
	}
	for _, want := range []string{"listen udp " + addr, "address already in use", "--dns-address"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
}

func TestStartBadAddress(t *testing.T) {
	for _, addr := range []string{"", "127.0.0.1", "dns.example:53", "127.0.0.1:99999", "127.0.0.1:x"} {
		if _, err := Start(Config{Address: addr, Kubeconfig: "/k"}); err == nil || !strings.Contains(err.Error(), "--dns-address") {
			t.Errorf("Start(%q) error = %v, want one naming --dns-address", addr, err)
		}
	}
}

// A kubeconfig CoreDNS cannot load fails Start and releases the port.
func TestStartBadKubeconfig(t *testing.T) {
	port, err := FreePort("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	_, err = Start(Config{Address: addr, Kubeconfig: filepath.Join(t.TempDir(), "missing.kubeconfig"), Upstreams: []string{}})
	if err == nil {
		t.Fatal("Start with a missing kubeconfig succeeded")
	}
	t.Log(err)
	if err := checkListen("127.0.0.1", port); err != nil {
		t.Errorf("port still bound after a failed start: %v", err)
	}
}
