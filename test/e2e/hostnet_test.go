package e2e

import (
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cci-project/cci/test/cluster"
	v1 "k8s.io/api/core/v1"
)

// A hostNetwork pod of the operator's (a namespace of no tenant) runs as on
// a kubelet: in the host's network namespace, with the node's IP and
// hostname, the node's hosts file under the kubelet's host-network header
// (what the conformance spec KubeletManagedEtcHosts checks) and DNS per its
// dnsPolicy. Under gvisor it gets a clear status instead.
func TestHostNetworkPod(t *testing.T) {
	port := cluster.FreePorts(1)[0]
	pod := probePod("hostnet", "", "mkdir -p /tmp/w && echo hostnet-ok > /tmp/w/index.html && httpd -p "+strconv.Itoa(port)+" -h /tmp/w && "+idle)
	pod.Spec.HostNetwork = true
	pod.Spec.DNSPolicy = v1.DNSClusterFirstWithHostNet
	p := createProbePod(t, pod)
	got := waitPod(t, p.Name, 90*time.Second, "running", func(p *v1.Pod) (bool, string) {
		return mainStatus(p).State.Running != nil && p.Status.PodIP != "", describe(p)
	})
	if got.Status.PodIP != got.Status.HostIP {
		t.Errorf("pod IP %s, want the node's %s", got.Status.PodIP, got.Status.HostIP)
	}

	hosts := execOut(t, "default", p.Name, "cat", "/etc/hosts")
	node, err := os.ReadFile("/etc/hosts")
	if err != nil {
		t.Fatal(err)
	}
	if want := "# Kubernetes-managed hosts file (host network).\n" + string(node); hosts != want {
		t.Errorf("/etc/hosts:\n%s\nwant\n%s", hosts, want)
	}
	hostname, _ := os.Hostname()
	if out := strings.TrimSpace(execOut(t, "default", p.Name, "hostname")); out != hostname {
		t.Errorf("hostname %q, want the node's %q", out, hostname)
	}
	if out := execOut(t, "default", p.Name, "cat", "/etc/resolv.conf"); !strings.Contains(out, "default.svc.cluster.local") {
		t.Errorf("ClusterFirstWithHostNet resolv.conf:\n%s", out)
	}
	// The host's interfaces (pods' veths and bridges come and go with
	// other tests), and a port the pod listens on reached from the host.
	hostDev, _ := os.ReadFile("/proc/net/dev")
	if out := execOut(t, "default", p.Name, "cat", "/proc/net/dev"); devNames(out) != devNames(string(hostDev)) {
		t.Errorf("pod interfaces %s, host's %s", devNames(out), devNames(string(hostDev)))
	}
	waitFor(t, 30*time.Second, "pod's port on the host", func() (bool, string) {
		c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), time.Second)
		if err != nil {
			return false, err.Error()
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		_, _ = c.Write([]byte("GET /index.html HTTP/1.0\r\n\r\n"))
		out, _ := io.ReadAll(c)
		return strings.Contains(string(out), "hostnet-ok"), string(out)
	})

	t.Run("gvisor", func(t *testing.T) {
		pod := probePod("hostnet-gvisor", "gvisor", idle)
		pod.Spec.HostNetwork = true
		p := createProbePod(t, pod)
		waitEvent(t, p, "FailedCreatePodSandBox", "hostNetwork pods cannot run under the \"gvisor\" runtime handler")
		got := waitPod(t, p.Name, 30*time.Second, "clear status", func(p *v1.Pod) (bool, string) {
			return strings.Contains(p.Status.Message, "hostNetwork pods cannot run"), describe(p)
		})
		if got.Status.Phase != v1.PodPending {
			t.Errorf("phase %s", got.Status.Phase)
		}
	})
}

// devNames lists the interfaces in /proc/net/dev other than pods' veths
// and bridges.
func devNames(dev string) string {
	var names []string
	for _, line := range strings.Split(dev, "\n") {
		if name, _, ok := strings.Cut(line, ":"); ok {
			name = strings.TrimSpace(name)
			if !strings.HasPrefix(name, "veth") && !strings.HasPrefix(name, "cci") {
				names = append(names, name)
			}
		}
	}
	slices.Sort(names)
	return strings.Join(names, ",")
}
