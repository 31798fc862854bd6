package runtime

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
)

// The /etc files of a pod, as the kubelet writes them: a hostNetwork pod
// gets the node's hosts file under its own header (which the conformance
// spec KubeletManagedEtcHosts tells from the managed one) and the node's
// hostname; any other pod a managed hosts file of its own IPs.
func TestWriteEtcFiles(t *testing.T) {
	nodeHosts := "127.0.0.1\tlocalhost\n192.0.2.7\tnode-a\n"
	node, _ := os.Hostname()
	aliases := []v1.HostAlias{{IP: "10.9.9.9", Hostnames: []string{"foo", "bar"}}}
	for _, tc := range []struct {
		name         string
		hostNetwork  bool
		aliases      []v1.HostAlias
		wantHosts    string
		wantHostname string
	}{
		{name: "pod network", wantHosts: "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n10.1.0.5\tp\n", wantHostname: "p\n"},
		{name: "pod network with aliases", aliases: aliases, wantHosts: "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n10.1.0.5\tp\n\n# Entries added by HostAliases.\n10.9.9.9\tfoo\tbar\n", wantHostname: "p\n"},
		{name: "host network", hostNetwork: true, wantHosts: "# Kubernetes-managed hosts file (host network).\n" + nodeHosts, wantHostname: node + "\n"},
		{name: "host network with aliases", hostNetwork: true, aliases: aliases, wantHosts: "# Kubernetes-managed hosts file (host network).\n" + nodeHosts + "\n# Entries added by HostAliases.\n10.9.9.9\tfoo\tbar\n", wantHostname: node + "\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			hostsFile := filepath.Join(dir, "node-hosts")
			resolv := filepath.Join(dir, "resolv.conf")
			if err := os.WriteFile(hostsFile, []byte(nodeHosts), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(resolv, []byte("nameserver 192.0.2.53\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			r := &Runtime{cfg: Config{StateDir: dir, HostEtcHosts: hostsFile, HostResolvConf: resolv, ClusterDomain: "cluster.local"}}
			pod := testPod()
			pod.Spec.HostNetwork = tc.hostNetwork
			pod.Spec.HostAliases = tc.aliases
			if err := r.writeEtcFiles(pod, []string{"10.1.0.5"}); err != nil {
				t.Fatal(err)
			}
			for file, want := range map[string]string{"hosts": tc.wantHosts, "hostname": tc.wantHostname} {
				got, err := os.ReadFile(filepath.Join(r.etcDir(pod), file))
				if err != nil {
					t.Fatal(err)
				}
				if string(got) != want {
					t.Errorf("%s:\n%q\nwant\n%q", file, got, want)
				}
			}
			managed := "# Kubernetes-managed hosts file."
			got, _ := os.ReadFile(filepath.Join(r.etcDir(pod), "hosts"))
			if strings.HasPrefix(string(got), managed) == tc.hostNetwork {
				t.Errorf("hosts file managed = %v for hostNetwork %v", !tc.hostNetwork, tc.hostNetwork)
			}
		})
	}
}
