package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/cci-project/cci/internal/metering"
)

// billingTenant makes a namespace of a new tenant (labelled the way tenant
// creation labels it) and returns the tenant's and the namespace's names.
func billingTenant(t *testing.T) (tenant, ns string) {
	t.Helper()
	tenant = "bill-" + rand.String(5)
	ns = tenant
	_, err := client(t).CoreV1().Namespaces().Create(context.Background(), &v1.Namespace{ObjectMeta: metav1.ObjectMeta{
		Name: ns, Labels: map[string]string{metering.TenantLabel: tenant},
	}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { kubectl(t, "delete", "namespace", ns, "--wait=false") })
	return tenant, ns
}

// sizedPod is a pod that runs script once with the given CPU and memory limits.
func sizedPod(name, cpu, memory, script string) *v1.Pod {
	p := shellPod(name, "", script)
	p.Spec.RestartPolicy = v1.RestartPolicyNever
	if cpu != "" {
		p.Spec.Containers[0].Resources.Limits = v1.ResourceList{v1.ResourceCPU: resource.MustParse(cpu), v1.ResourceMemory: resource.MustParse(memory)}
	}
	return p
}

// waitPodDone waits for a pod to succeed and returns it; a pod that failed
// fails the test at once, with its container states.
func waitPodDone(t *testing.T, ns, name string, timeout time.Duration) *v1.Pod {
	t.Helper()
	var p *v1.Pod
	waitFor(t, timeout, "pod "+name+" to succeed", func() (bool, string) {
		var err error
		p, err = client(t).CoreV1().Pods(ns).Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		return p.Status.Phase == v1.PodSucceeded || p.Status.Phase == v1.PodFailed, string(p.Status.Phase)
	})
	if p.Status.Phase == v1.PodFailed {
		logs, _ := kubectl(t, "-n", ns, "logs", name, "--all-containers")
		t.Fatalf("pod %s failed: %+v\nlogs: %s", name, p.Status.ContainerStatuses, logs)
	}
	return p
}

// cciUsage runs `cci usage -o json` with the admin kubeconfig and parses its output.
func cciUsage(t *testing.T, args ...string) metering.Report {
	t.Helper()
	cmd := exec.Command(cci.Bin, append([]string{"usage", "--kubeconfig", cci.Kubeconfig, "-o", "json"}, args...)...)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("cci usage %v: %v\n%s", args, err, stderrOf(err))
	}
	var rep metering.Report
	if err := json.Unmarshal(out, &rep); err != nil {
		t.Fatalf("cci usage -o json does not parse: %v\n%s", err, out)
	}
	return rep
}

func stderrOf(err error) string {
	if ee, ok := err.(*exec.ExitError); ok {
		return string(ee.Stderr)
	}
	return ""
}

// podUsage finds a pod in a report.
func podUsage(rep metering.Report, tenant, ns, name string) (metering.PodUsage, bool) {
	for _, tu := range rep.Tenants {
		for _, nu := range tu.Namespaces {
			for _, p := range nu.Pods {
				if tu.Tenant == tenant && nu.Namespace == ns && p.Name == name {
					return p, true
				}
			}
		}
	}
	return metering.PodUsage{}, false
}

func near(got, want, tolerance float64) bool { return math.Abs(got-want) <= tolerance }

// recordedSeconds sums the lines the usage records hold for a pod, and
// counts those still open.
func recordedSeconds(t *testing.T, tenant string, uid string) (seconds int64, lines, open int) {
	t.Helper()
	out := mustKubectl(t, "get", "usagerecords", "-l", metering.TenantLabel+"="+tenant, "-o", "json")
	var list struct{ Items []metering.UsageRecord }
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatalf("usage records: %v\n%s", err, out)
	}
	for _, r := range list.Items {
		for _, l := range r.Spec.Pods {
			if l.UID == uid {
				seconds += l.Totals.Seconds
				lines++
				if l.Open {
					open++
				}
			}
		}
	}
	return seconds, lines, open
}

// A 0.5 CPU / 1 GiB pod that sleeps 20 s is billed 0.5 core-seconds and
// 1 GiB-second per second it lived (about 20 s), in the report and in the
// durable records alike.
func TestBillingSleepPod(t *testing.T) {
	tenant, ns := billingTenant(t)
	// The image pull is billed too; have the image on the host first, so
	// that the ± 1 s the test allows is not spent pulling on a busy machine.
	createPod(t, ns, sizedPod("warmup", "250m", "512Mi", "true"))
	waitPodDone(t, ns, "warmup", 60*time.Second)
	createPod(t, ns, sizedPod("sleeper", "500m", "1Gi", "sleep 20"))
	// While it runs it is billed, and shown as running.
	waitRunning(t, ns, "app=sleeper", 1, 60*time.Second)
	if p, ok := podUsage(cciUsage(t, "--tenant", tenant), tenant, ns, "sleeper"); !ok || !p.Running {
		t.Errorf("running pod not in the report as running: %+v (found %v)", p, ok)
	}
	pod := waitPodDone(t, ns, "sleeper", 60*time.Second)
	rep := cciUsage(t, "--tenant", tenant)
	p, ok := podUsage(rep, tenant, ns, "sleeper")
	if !ok {
		t.Fatalf("pod not in the report: %+v", rep)
	}
	var startedAt time.Time
	if s := pod.Status.ContainerStatuses; len(s) == 1 && s[0].State.Terminated != nil {
		startedAt = s[0].State.Terminated.StartedAt.Time
	}
	t.Logf("sleep 20 billed %d s: %.3f core-s, %.3f GiB-s, %.6f %s (startTime %s, container started %s, finished %s)",
		p.Seconds, p.CoreSeconds, p.GiBSeconds, p.Cost, rep.Currency, pod.Status.StartTime.Format(time.TimeOnly), startedAt.Format(time.TimeOnly), lastFinished(pod).Format(time.TimeOnly))
	// Billed from the pod's start to its end, which a loaded machine
	// stretches past the 20 s of sleep.
	lived := lastFinished(pod).Sub(pod.Status.StartTime.Time).Seconds()
	if lived < 20 || !near(p.CoreSeconds, 0.5*lived, 1) || !near(p.GiBSeconds, lived, 1) {
		t.Errorf("billed %.3f core-s and %.3f GiB-s for a pod that lived %.0f s, want 0.5 × and 1 × that, ± 1", p.CoreSeconds, p.GiBSeconds, lived)
	}
	if p.Running || p.CPU != 0.5 || p.MemoryGiB != 1 {
		t.Errorf("pod line %+v: want not running, flavor 0.5 CPU / 1 GiB", p)
	}
	prices := metering.DefaultPrices()
	if want := prices.Cost(p.Usage); math.Abs(p.Cost-want) > 1e-9 || p.Cost <= 0 {
		t.Errorf("cost %v, want %v", p.Cost, want)
	}
	warm, _ := podUsage(rep, tenant, ns, "warmup")
	if len(rep.Tenants) != 1 || rep.Tenants[0].Seconds != p.Seconds+warm.Seconds || rep.Total.Seconds != p.Seconds+warm.Seconds {
		t.Errorf("tenant filter or totals wrong: %+v", rep)
	}
	// The durable records hold the same seconds, closed.
	waitFor(t, 30*time.Second, "the records to hold the closed pod", func() (bool, string) {
		secs, lines, open := recordedSeconds(t, tenant, string(pod.UID))
		return secs == p.Seconds && open == 0, fmt.Sprintf("%d s in %d lines, %d open; report says %d s", secs, lines, open, p.Seconds)
	})

	// The other formats print.
	for _, format := range []string{"table", "csv"} {
		out, err := exec.Command(cci.Bin, "usage", "--kubeconfig", cci.Kubeconfig, "--tenant", tenant, "--since", "1h", "-o", format).Output()
		if err != nil || !strings.Contains(string(out), "sleeper") {
			t.Errorf("cci usage -o %s: %v\n%s%s", format, err, out, stderrOf(err))
		}
		if format == "csv" {
			rows, err := csv.NewReader(strings.NewReader(string(out))).ReadAll()
			if err != nil || len(rows) < 5 {
				t.Errorf("csv does not parse: %v\n%s", err, out)
			}
		}
	}
	// A window after the pod ended holds nothing of it.
	if p, ok := podUsage(cciUsage(t, "--tenant", tenant, "--since", "now"), tenant, ns, "sleeper"); ok {
		t.Errorf("pod billed in a window after it ended: %+v", p)
	}
}

// A Job's pod stops being billed when it completes.
func TestBillingJobStops(t *testing.T) {
	tenant, ns := billingTenant(t)
	one := int32(1)
	job := &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Name: "batch"},
		Spec: batchv1.JobSpec{
			Completions: &one, BackoffLimit: &one,
			Template: v1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "batch"}},
				Spec:       sizedPod("batch", "", "", "sleep 5").Spec, // no resources: the default flavor
			},
		},
	}
	if _, err := client(t).BatchV1().Jobs(ns).Create(context.Background(), job, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 90*time.Second, "the job to complete", func() (bool, string) {
		j, err := client(t).BatchV1().Jobs(ns).Get(context.Background(), "batch", metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		return j.Status.Succeeded == 1, fmt.Sprintf("%+v", j.Status)
	})
	pods := listPods(t, ns, "app=batch")
	if len(pods) != 1 {
		t.Fatalf("want 1 job pod, got %d", len(pods))
	}
	name := pods[0].Name
	var first metering.PodUsage
	waitFor(t, 20*time.Second, "the job pod billed as finished", func() (bool, string) {
		var ok bool
		first, ok = podUsage(cciUsage(t, "--tenant", tenant), tenant, ns, name)
		return ok && !first.Running, fmt.Sprintf("%+v", first)
	})
	if first.Seconds < 5 || first.Seconds > 8 {
		t.Errorf("job pod of `sleep 5` billed %d s", first.Seconds)
	}
	if !near(first.CoreSeconds, float64(first.Seconds)*0.25, 0.001) || !near(first.GiBSeconds, float64(first.Seconds)*0.5, 0.001) {
		t.Errorf("job pod without resources not billed at the default flavor 0.25 CPU / 0.5 GiB: %+v", first)
	}
	time.Sleep(4 * time.Second)
	later, _ := podUsage(cciUsage(t, "--tenant", tenant), tenant, ns, name)
	if later.Seconds != first.Seconds || later.CoreSeconds != first.CoreSeconds {
		t.Errorf("completed job pod still billed: %d s, then %d s", first.Seconds, later.Seconds)
	}
}

// usageClient is an HTTPS client trusting the cluster CA, and the usage
// endpoint's URL (the apiserver's port + 1).
func usageClient(t *testing.T) (*http.Client, string) {
	t.Helper()
	caPEM, err := os.ReadFile(filepath.Join(cci.DataDir, "pki", "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	rc, err := clientcmd.BuildConfigFromFlags("", cci.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(rc.Host)
	if err != nil {
		t.Fatal(err)
	}
	port, _ := strconv.Atoi(u.Port())
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}},
		fmt.Sprintf("https://%s:%d", u.Hostname(), port+1)
}

// getUsage asks the endpoint with a bearer token; it returns the status and body.
func getUsage(t *testing.T, token, query string) (int, string) {
	t.Helper()
	hc, base := usageClient(t)
	req, _ := http.NewRequest(http.MethodGet, base+metering.UsagePath+query, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("usage endpoint: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// tenantToken makes the service account `tenant` in ns and a token for it.
func tenantToken(t *testing.T, ns string) string {
	t.Helper()
	mustKubectl(t, "-n", ns, "create", "serviceaccount", "tenant")
	return strings.TrimSpace(mustKubectl(t, "-n", ns, "create", "token", "tenant"))
}

// The usage endpoint serves a tenant its own usage, with its own
// credentials, and refuses it another tenant's.
func TestUsageEndpointTenants(t *testing.T) {
	tenantA, nsA := billingTenant(t)
	tenantB, nsB := billingTenant(t)
	createPod(t, nsA, sizedPod("a", "250m", "512Mi", "sleep 1"))
	createPod(t, nsB, sizedPod("b", "250m", "512Mi", "sleep 1"))
	waitPodDone(t, nsA, "a", 60*time.Second)
	waitPodDone(t, nsB, "b", 60*time.Second)
	tokenA := tenantToken(t, nsA)

	code, body := getUsage(t, tokenA, "?tenant="+tenantA)
	if code != http.StatusOK {
		t.Fatalf("own usage: %d %s", code, body)
	}
	var rep metering.Report
	if err := json.Unmarshal([]byte(body), &rep); err != nil {
		t.Fatalf("own usage does not parse: %v\n%s", err, body)
	}
	if _, ok := podUsage(rep, tenantA, nsA, "a"); !ok || len(rep.Tenants) != 1 {
		t.Errorf("own usage lacks pod a or shows others: %s", body)
	}
	// No tenant named: the caller's own.
	code, body = getUsage(t, tokenA, "")
	if code != http.StatusOK || strings.Contains(body, tenantB) || !strings.Contains(body, tenantA) {
		t.Errorf("usage without a tenant: %d %s", code, body)
	}
	if code, body := getUsage(t, tokenA, "?tenant="+tenantB); code != http.StatusForbidden {
		t.Errorf("tenant A reading tenant B's usage: %d %s, want 403", code, body)
	}
	if code, body := getUsage(t, "", "?tenant="+tenantA); code != http.StatusUnauthorized {
		t.Errorf("no credentials: %d %s, want 401", code, body)
	}
	if code, body := getUsage(t, "not-a-token", ""); code != http.StatusUnauthorized {
		t.Errorf("bad token: %d %s, want 401", code, body)
	}
	// B's own service account is B, not A.
	tokenB := tenantToken(t, nsB)
	if code, body := getUsage(t, tokenB, "?tenant="+tenantA); code != http.StatusForbidden {
		t.Errorf("tenant B reading tenant A's usage: %d %s, want 403", code, body)
	}

	// `cci usage` with the tenant's own kubeconfig (a bearer token) sees its own usage only.
	admin, err := clientcmd.LoadFromFile(cci.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	cfg := clientcmdapi.NewConfig()
	for name, c := range admin.Clusters {
		cfg.Clusters[name] = c
		cfg.AuthInfos["tenant"] = &clientcmdapi.AuthInfo{Token: tokenA}
		cfg.Contexts["tenant"] = &clientcmdapi.Context{Cluster: name, AuthInfo: "tenant", Namespace: nsA}
	}
	cfg.CurrentContext = "tenant"
	path := filepath.Join(t.TempDir(), "tenant.kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(cci.Bin, "usage", "--kubeconfig", path, "-o", "json").Output()
	if err != nil {
		t.Fatalf("cci usage as tenant: %v\n%s", err, stderrOf(err))
	}
	if err := json.Unmarshal(out, &rep); err != nil || len(rep.Tenants) != 1 || rep.Tenants[0].Tenant != tenantA {
		t.Errorf("cci usage as tenant A: %v\n%s", err, out)
	}
	out, err = exec.Command(cci.Bin, "usage", "--kubeconfig", path, "--tenant", tenantB).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "403") {
		t.Errorf("cci usage as tenant A for tenant B: %v\n%s", err, out)
	}
	// The admin sees both.
	all := cciUsage(t)
	_, okA := podUsage(all, tenantA, nsA, "a")
	_, okB := podUsage(all, tenantB, nsB, "b")
	if !okA || !okB {
		t.Errorf("admin report lacks a tenant: %+v", all)
	}
}

// A pod that runs across a restart of `cci up` is billed once for its whole
// life: no gap while cci was down, nothing counted twice. Last in this file:
// it restarts the instance (and leaves it running).
func TestBillingAcrossRestart(t *testing.T) {
	tenant, ns := billingTenant(t)
	createPod(t, ns, sizedPod("survivor", "500m", "1Gi", "sleep 45"))
	waitRunning(t, ns, "app=survivor", 1, 60*time.Second)
	time.Sleep(5 * time.Second)
	before, ok := podUsage(cciUsage(t, "--tenant", tenant), tenant, ns, "survivor")
	if !ok || !before.Running {
		t.Fatalf("running pod not billed before the restart: %+v", before)
	}
	// Let the meter write the running pod at least once more before stopping.
	time.Sleep(2 * time.Second)
	if err := cci.Stop(syscall.SIGINT); err != nil {
		t.Fatalf("stop: %v", err)
	}
	down := time.Now()
	time.Sleep(8 * time.Second)
	if _, err := cci.Start(); err != nil {
		t.Fatalf("start again: %v", err)
	}
	t.Logf("cci was down %.1fs", time.Since(down).Seconds())
	pod := waitPodDone(t, ns, "survivor", 90*time.Second)
	life := int64(lastFinished(pod).Sub(pod.Status.StartTime.Time) / time.Second)
	var after metering.PodUsage
	waitFor(t, 20*time.Second, "the pod billed as finished", func() (bool, string) {
		after, ok = podUsage(cciUsage(t, "--tenant", tenant), tenant, ns, "survivor")
		return ok && !after.Running, fmt.Sprintf("%+v", after)
	})
	t.Logf("pod lived %d s (startTime to finishedAt), billed %d s: %.3f core-s, %.3f GiB-s", life, after.Seconds, after.CoreSeconds, after.GiBSeconds)
	if after.Seconds < 44 || after.Seconds != life {
		t.Errorf("billed %d s for a life of %d s (sleep 45)", after.Seconds, life)
	}
	if !near(after.CoreSeconds, float64(life)*0.5, 0.001) || !near(after.GiBSeconds, float64(life), 0.001) {
		t.Errorf("billed %.3f core-s, %.3f GiB-s for %d s at 0.5 CPU / 1 GiB", after.CoreSeconds, after.GiBSeconds, life)
	}
	waitFor(t, 30*time.Second, "the records to hold the whole life once, closed", func() (bool, string) {
		secs, lines, open := recordedSeconds(t, tenant, string(pod.UID))
		return secs == life && open == 0, fmt.Sprintf("%d s in %d lines, %d open; life %d s", secs, lines, open, life)
	})
}

func lastFinished(p *v1.Pod) time.Time {
	var end time.Time
	for _, s := range p.Status.ContainerStatuses {
		if s.State.Terminated != nil && s.State.Terminated.FinishedAt.After(end) {
			end = s.State.Terminated.FinishedAt.Time
		}
	}
	return end
}
