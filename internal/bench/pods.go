package bench

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/cci-project/cci/internal/hostns"
	"github.com/cci-project/cci/internal/simulate"
)

// Container scripts. The test images are busybox: `ts '%.s'` stamps a line
// with the clock to the microsecond (busybox `date` has no %N), under runc
// and under gVisor alike, and the container shares the host's clock, so the
// line the container writes first says when its first instruction ran.
const (
	t0Marker = "cci-bench-t0 "
	t0Script = `echo | ts 'cci-bench-t0 %.s'`
	// idleScript stamps, then idles until SIGTERM, on which it exits at
	// once (a plain `sh` as PID 1 ignores SIGTERM and would sit out the
	// grace period). The trap comes first, a builtin, so that a pod deleted
	// the moment it runs still stops at once.
	idleScript = `trap 'exit 0' TERM; ` + t0Script + `; sleep 86400 & wait`
	// exitScript stamps and exits 0 (Job pods).
	exitScript = t0Script
)

// Labels on everything the bench creates.
const (
	labelRun = "cci-bench/run"
	labelApp = "app"
	appName  = "cci-bench"
)

// agentNamespace is the containerd namespace of the host agent's containers.
const agentNamespace = "cci"

// parseT0 finds the stamp in a container's output.
func parseT0(out string) (time.Time, error) {
	for _, line := range strings.Split(out, "\n") {
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), strings.TrimSpace(t0Marker))
		if !ok {
			continue
		}
		secStr, usecStr, ok := strings.Cut(strings.TrimSpace(rest), ".")
		if !ok {
			break
		}
		sec, err1 := strconv.ParseInt(secStr, 10, 64)
		usec, err2 := strconv.ParseInt(usecStr, 10, 64)
		if err1 != nil || err2 != nil {
			break
		}
		return time.Unix(sec, usec*1000), nil
	}
	return time.Time{}, fmt.Errorf("no %q line in the container's output %q", strings.TrimSpace(t0Marker), truncate(out, 200))
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

func randomID() string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// podOpts shapes the bench's pods.
type podOpts struct {
	Image        string
	Script       string
	RuntimeClass string // "" or "runc": the node's default runtime
	Restart      v1.RestartPolicy
	Simulated    bool // for simulated nodes: toleration and node selector, no script
}

// podTemplate is the bench's pod, minimal so that nothing but starting
// it is measured: one container, no volumes, no service-account token.
func (b *bench) podTemplate(o podOpts) v1.PodTemplateSpec {
	f := false
	grace := int64(5)
	restart := o.Restart
	if restart == "" {
		restart = v1.RestartPolicyAlways
	}
	t := v1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{labelRun: b.runID, labelApp: appName}},
		Spec: v1.PodSpec{
			Containers: []v1.Container{{
				Name:            "c",
				Image:           o.Image,
				ImagePullPolicy: v1.PullIfNotPresent,
				Command:         []string{"sh", "-c", o.Script},
			}},
			RestartPolicy:                 restart,
			AutomountServiceAccountToken:  &f,
			EnableServiceLinks:            &f,
			TerminationGracePeriodSeconds: &grace,
		},
	}
	if o.RuntimeClass != "" && o.RuntimeClass != "runc" {
		rc := o.RuntimeClass
		t.Spec.RuntimeClassName = &rc
	}
	if o.Simulated {
		t.Spec.NodeSelector = map[string]string{simulate.LabelSimulated: "true"}
		t.Spec.Tolerations = []v1.Toleration{{Key: simulate.TaintSimulated, Operator: v1.TolerationOpEqual, Value: "true", Effect: v1.TaintEffectNoSchedule}}
	} else {
		// Keep ordinary bench pods off simulated nodes even where those
		// carry no taint.
		t.Spec.Affinity = &v1.Affinity{NodeAffinity: &v1.NodeAffinity{
			RequiredDuringSchedulingIgnoredDuringExecution: &v1.NodeSelector{NodeSelectorTerms: []v1.NodeSelectorTerm{{
				MatchExpressions: []v1.NodeSelectorRequirement{{Key: simulate.LabelSimulated, Operator: v1.NodeSelectorOpDoesNotExist}},
			}}},
		}}
	}
	return t
}

func (b *bench) pod(name string, o podOpts) *v1.Pod {
	t := b.podTemplate(o)
	t.ObjectMeta.Name = name
	t.ObjectMeta.Namespace = b.ns
	return &v1.Pod{ObjectMeta: t.ObjectMeta, Spec: t.Spec}
}

// createNamespace makes the run's namespace and waits for its default
// service account (pods are refused until it exists).
func (b *bench) createNamespace(ctx context.Context) error {
	ns := &v1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: b.ns, Labels: map[string]string{labelRun: b.runID, labelApp: appName}}}
	if _, err := b.kube.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create namespace %q: %w", b.ns, err)
	}
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		_, err := b.kube.CoreV1().ServiceAccounts(b.ns).Get(ctx, "default", metav1.GetOptions{})
		return err == nil, nil
	})
	if err != nil {
		return fmt.Errorf("namespace %q got no default service account: %w", b.ns, err)
	}
	return nil
}

// deleteNamespace removes the run's namespace and waits until it is gone.
func (b *bench) deleteNamespace(ctx context.Context, timeout time.Duration) error {
	err := b.kube.CoreV1().Namespaces().Delete(ctx, b.ns, metav1.DeleteOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("delete namespace %q: %w", b.ns, err)
	}
	err = wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		_, err := b.kube.CoreV1().Namespaces().Get(ctx, b.ns, metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	})
	if err != nil {
		return fmt.Errorf("namespace %q still there after %s", b.ns, timeout)
	}
	return nil
}

// deletePods deletes the run's pods and waits until the API has none left.
func (b *bench) deletePods(ctx context.Context, timeout time.Duration) error {
	sel := metav1.ListOptions{LabelSelector: labelRun + "=" + b.runID}
	if err := b.deletePodCollection(ctx, sel); err != nil {
		return err
	}
	var left int
	err := wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		l, err := b.kube.CoreV1().Pods(b.ns).List(ctx, sel)
		if err != nil {
			return false, nil
		}
		left = len(l.Items)
		return left == 0, nil
	})
	if err != nil {
		return fmt.Errorf("%d pods still in the API %s after deleting them", left, timeout)
	}
	return nil
}

// deletePodCollection deletes the pods sel picks. A loaded apiserver may
// end a large DeleteCollection at its request timeout, part done: asking
// again deletes the rest.
func (b *bench) deletePodCollection(ctx context.Context, sel metav1.ListOptions) error {
	for try := 1; ; try++ {
		err := b.kube.CoreV1().Pods(b.ns).DeleteCollection(ctx, metav1.DeleteOptions{}, sel)
		if err == nil {
			return nil
		}
		if try == 5 || ctx.Err() != nil {
			return fmt.Errorf("delete pods %s (%d tries): %w", sel.LabelSelector, try, err)
		}
		b.logf("delete pods %s: %v; asking again", sel.LabelSelector, err)
		if !sleepCtx(ctx, 2*time.Second) {
			return ctx.Err()
		}
	}
}

// stamps reads each running pod's first-instruction stamp through the API
// (kubectl logs' path), by pod name.
func (b *bench) stamps(ctx context.Context, pods []podTimes) (map[string]time.Time, error) {
	var (
		mu      sync.Mutex
		out     = map[string]time.Time{}
		lastErr error
		failed  int
	)
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for _, p := range pods {
		if p.Running.IsZero() {
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			var stamp time.Time
			var err error
			for try := 0; try < 5; try++ {
				var raw []byte
				raw, err = b.kube.CoreV1().Pods(b.ns).GetLogs(p.Name, &v1.PodLogOptions{Container: "c"}).DoRaw(ctx)
				if err == nil {
					if stamp, err = parseT0(string(raw)); err == nil {
						break
					}
				}
				time.Sleep(200 * time.Millisecond)
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failed++
				lastErr = fmt.Errorf("pod %s: %w", p.Name, err)
				return
			}
			out[p.Name] = stamp
		}()
	}
	wg.Wait()
	if failed > 0 {
		return out, fmt.Errorf("%d pods gave no first-instruction stamp; last: %w", failed, lastErr)
	}
	return out, nil
}

// Leftovers counts what the host still holds for pods that are gone from
// the API: it should all be zero once the agent has cleaned up.
type Leftovers struct {
	Containers int `json:"containers"` // containerd containers of the pods
	Shims      int `json:"shims"`      // shim processes of the pods' containers
	Netns      int `json:"netns"`      // /var/run/netns/cci-<uid>
	IPs        int `json:"ips"`        // host-local IP leases held for the pods
	Mounts     int `json:"mounts"`     // mounts naming a pod (rootfs, netns, volumes)
	Iptables   int `json:"iptables"`   // NAT rules naming a pod (CNI bridge / portmap)
	PodDirs    int `json:"podDirs"`    // the agent's per-pod state folders
	Cgroups    int `json:"cgroups"`    // cgroups of the pods' containers, in any hierarchy
	// IPRules are iptables/nftables rules naming an address that a gone
	// pod had and no live pod has (service endpoints, policy sets).
	IPRules int `json:"ipRules"`
	// Conntrack are connection-tracking entries that a gone pod's address
	// answered in (not UNREPLIED ones: a client may still knock at it):
	// left, they would hand its NAT mappings to the next pod given it.
	Conntrack int `json:"conntrack"`
}

// Total is the sum of every count.
func (l Leftovers) Total() int {
	return l.Containers + l.Shims + l.Netns + l.IPs + l.Mounts + l.Iptables + l.PodDirs + l.Cgroups + l.IPRules + l.Conntrack
}

func (l Leftovers) add(o Leftovers) Leftovers {
	return Leftovers{
		Containers: l.Containers + o.Containers, Shims: l.Shims + o.Shims, Netns: l.Netns + o.Netns,
		IPs: l.IPs + o.IPs, Mounts: l.Mounts + o.Mounts, Iptables: l.Iptables + o.Iptables,
		PodDirs: l.PodDirs + o.PodDirs, Cgroups: l.Cgroups + o.Cgroups, IPRules: l.IPRules + o.IPRules,
		Conntrack: l.Conntrack + o.Conntrack,
	}
}

func (l Leftovers) String() string {
	return fmt.Sprintf("containers %d, shims %d, netns %d, IP leases %d, mounts %d, iptables rules %d, pod folders %d, cgroups %d, rules naming their IPs %d, conntrack entries %d",
		l.Containers, l.Shims, l.Netns, l.IPs, l.Mounts, l.Iptables, l.PodDirs, l.Cgroups, l.IPRules, l.Conntrack)
}

// site is one host agent of the cluster as the bench sees it from the
// machine: its data folder, containerd socket and network namespace.
type site struct {
	Name    string
	DataDir string
	Socket  string
	// Netns is the host's network namespace ("" for the machine's own),
	// where its iptables rules live.
	Netns string
}

// sites lists the cluster's host agents: the hosts of `cci up --hosts`,
// or the one agent of `cci up`.
func (b *bench) sites() []site {
	if b.c.DataDir == "" {
		return nil
	}
	if hosts, err := hostns.LoadHosts(b.c.DataDir); err == nil && len(hosts) > 0 && b.cfg.Hosts > 0 {
		var out []site
		for _, h := range hosts {
			out = append(out, site{Name: h.Name, DataDir: h.DataDir, Socket: filepath.Join(h.DataDir, "containerd", "state", "containerd.sock"), Netns: h.Netns})
		}
		return out
	}
	return []site{{Name: "host", DataDir: b.c.DataDir, Socket: b.c.ContainerdSocket}}
}

// leftovers looks on this host for anything still held for the pods uids.
func (b *bench) leftovers(ctx context.Context, uids []types.UID) (Leftovers, error) {
	return b.leftoversOf(ctx, uids, nil)
}

// leftoversOf looks on every host agent for anything still held for the
// pods uids, and for rules naming the addresses ips (those gone pods had
// and no live pod has).
func (b *bench) leftoversOf(ctx context.Context, uids []types.UID, ips []string) (Leftovers, error) {
	var total Leftovers
	if b.c.DataDir == "" {
		return total, errors.New("the cluster's data folder is unknown (pass --data-dir)")
	}
	set := map[string]bool{}
	for _, u := range uids {
		set[string(u)] = true
	}
	names := func(s string) bool {
		for u := range set {
			if strings.Contains(s, u) {
				return true
			}
		}
		return false
	}
	if len(set) > 0 {
		if f, err := os.Open("/proc/self/mountinfo"); err == nil {
			sc := bufio.NewScanner(f)
			sc.Buffer(make([]byte, 64*1024), 1024*1024)
			for sc.Scan() {
				if names(sc.Text()) {
					total.Mounts++
				}
			}
			f.Close()
		}
		for u := range set {
			if _, err := os.Lstat(filepath.Join("/var/run/netns", "cci-"+u)); err == nil {
				total.Netns++
			}
		}
		total.Cgroups = countCgroups(names)
	}
	for _, st := range b.sites() {
		var l Leftovers
		if st.Socket != "" && len(set) > 0 {
			client, err := containerd.New(st.Socket, containerd.WithDefaultNamespace(agentNamespace), containerd.WithTimeout(10*time.Second))
			if err == nil {
				ctrs, err := client.Containers(ctx)
				if err == nil {
					for _, c := range ctrs {
						if names(c.ID()) {
							l.Containers++
						}
					}
				}
				client.Close()
			}
			for _, pid := range shimPids(st.Socket) {
				if raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err == nil && names(string(raw)) {
					l.Shims++
				}
			}
		}
		for u := range set {
			if _, err := os.Stat(filepath.Join(st.DataDir, "agent", "pods", u)); err == nil {
				l.PodDirs++
			}
		}
		if len(set) > 0 {
			_ = filepath.WalkDir(filepath.Join(st.DataDir, "cni", "ipam"), func(path string, d fs.DirEntry, err error) error {
				if err != nil || d.IsDir() {
					return nil
				}
				if raw, err := os.ReadFile(path); err == nil && names(string(raw)) {
					l.IPs++
				}
				return nil
			})
		}
		nat, all := rulesIn(ctx, st.Netns)
		for _, line := range strings.Split(nat, "\n") {
			if len(set) > 0 && names(line) {
				l.Iptables++
			}
		}
		l.IPRules = countIPRules(all, ips)
		l.Conntrack = countConntrack(readIn(ctx, st.Netns, "cat", "/proc/net/nf_conntrack"), ips)
		total = total.add(l)
	}
	return total, nil
}

// readIn runs a command in the network namespace netns ("" for the
// machine's own) and returns its output, "" when it failed.
func readIn(ctx context.Context, netns string, args ...string) string {
	if netns != "" {
		args = append([]string{"nsenter", "--net=" + netns, "--"}, args...)
	}
	out, err := exec.CommandContext(ctx, args[0], args[1:]...).Output()
	if err != nil {
		return ""
	}
	return string(out)
}

// countConntrack counts the entries of /proc/net/nf_conntrack that name
// one of ips and were answered (not [UNREPLIED]).
func countConntrack(table string, ips []string) int {
	var answered []string
	for _, line := range strings.Split(table, "\n") {
		if line != "" && !strings.Contains(line, "[UNREPLIED]") {
			answered = append(answered, line)
		}
	}
	return countIPRules(strings.Join(answered, "\n"), ips)
}

// rulesIn returns the NAT table (iptables-save) and every rule of every
// table, iptables and nftables alike (nft list ruleset, else iptables-save),
// of the network namespace netns ("" for the machine's own).
func rulesIn(ctx context.Context, netns string) (nat, all string) {
	run := func(args ...string) string { return readIn(ctx, netns, args...) }
	nat = run("iptables-save", "-t", "nat")
	all = run("nft", "list", "ruleset")
	if all == "" {
		all = run("iptables-save")
	}
	return nat, all
}

// countIPRules counts the rule lines that name one of ips as a whole
// address (10.79.0.5 and not 10.79.0.50).
func countIPRules(rules string, ips []string) int {
	if len(ips) == 0 || rules == "" {
		return 0
	}
	n := 0
	for _, line := range strings.Split(rules, "\n") {
		for _, ip := range ips {
			if containsAddr(line, ip) {
				n++
				break
			}
		}
	}
	return n
}

// containsAddr tells whether line holds ip not followed by another digit
// or preceded by one, so that one address does not match a longer one.
func containsAddr(line, ip string) bool {
	for i := 0; ; {
		j := strings.Index(line[i:], ip)
		if j < 0 {
			return false
		}
		at := i + j
		end := at + len(ip)
		before := at == 0 || !isAddrChar(line[at-1])
		after := end == len(line) || !isAddrChar(line[end])
		if before && after {
			return true
		}
		i = at + 1
	}
}

func isAddrChar(c byte) bool { return c >= '0' && c <= '9' || c == '.' }

// cgroupRoot is where the cgroup hierarchies are mounted.
var cgroupRoot = "/sys/fs/cgroup"

// countCgroups counts the cgroups below <hierarchy>/<agentNamespace>/ (the
// agent's containers' cgroups, "/cci/<container id>") whose name matches,
// in every hierarchy: a cgroup left in one controller is a leak too.
func countCgroups(match func(string) bool) int {
	n := 0
	dirs := []string{filepath.Join(cgroupRoot, agentNamespace)}
	if hs, err := os.ReadDir(cgroupRoot); err == nil {
		for _, h := range hs {
			if h.IsDir() {
				dirs = append(dirs, filepath.Join(cgroupRoot, h.Name(), agentNamespace))
			}
		}
	}
	for _, d := range dirs {
		es, err := os.ReadDir(d)
		if err != nil {
			continue
		}
		for _, e := range es {
			if e.IsDir() && match(e.Name()) {
				n++
			}
		}
	}
	return n
}

// waitNoLeftovers polls until the host holds nothing for uids or timeout
// passes, and returns the last count.
func (b *bench) waitNoLeftovers(ctx context.Context, uids []types.UID, timeout time.Duration) (Leftovers, time.Duration, error) {
	start := time.Now()
	var last Leftovers
	for {
		l, err := b.leftovers(ctx, uids)
		if err != nil {
			return l, 0, err
		}
		last = l
		if l.Total() == 0 || time.Since(start) > timeout {
			return last, time.Since(start), nil
		}
		select {
		case <-ctx.Done():
			return last, time.Since(start), ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}
