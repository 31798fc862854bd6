package e2e

// Storage metering: the provisioned size of a tenant's bound volumes,
// billed by the GiB-hour per StorageClass (internal/metering/volume.go),
// as `cci usage` shows it to the operator and to the tenant.

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/cci-project/cci/internal/metering"
)

// tenantKubeconfig writes a kubeconfig of the admin's cluster with a
// tenant's bearer token.
func tenantKubeconfig(t *testing.T, ns, token string) string {
	t.Helper()
	admin, err := clientcmd.LoadFromFile(cci.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	cfg := clientcmdapi.NewConfig()
	for name, c := range admin.Clusters {
		cfg.Clusters[name] = c
		cfg.AuthInfos["tenant"] = &clientcmdapi.AuthInfo{Token: token}
		cfg.Contexts["tenant"] = &clientcmdapi.Context{Cluster: name, AuthInfo: "tenant", Namespace: ns}
	}
	cfg.CurrentContext = "tenant"
	path := filepath.Join(t.TempDir(), "tenant.kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// cciUsageAs runs `cci usage -o json` with a kubeconfig.
func cciUsageAs(t *testing.T, kubeconfig string, args ...string) metering.Report {
	t.Helper()
	out, err := exec.Command(cci.Bin, append([]string{"usage", "--kubeconfig", kubeconfig, "-o", "json"}, args...)...).Output()
	if err != nil {
		t.Fatalf("cci usage %v: %v\n%s", args, err, stderrOf(err))
	}
	var rep metering.Report
	if err := json.Unmarshal(out, &rep); err != nil {
		t.Fatalf("cci usage -o json does not parse: %v\n%s", err, out)
	}
	return rep
}

// volumeUsage finds a claim's volume and the tenant's usage in a report.
func volumeUsage(rep metering.Report, tenant, ns, claim string) (metering.VolumeUsage, metering.Usage, bool) {
	for _, tu := range rep.Tenants {
		for _, nu := range tu.Namespaces {
			for _, v := range nu.Volumes {
				if tu.Tenant == tenant && nu.Namespace == ns && v.Claim == claim {
					return v, tu.Usage, true
				}
			}
		}
	}
	return metering.VolumeUsage{}, metering.Usage{}, false
}

// A tenant's 64Mi cci-evs claim is billed 64 MiB for every second it is
// bound, as GiB-hours of cci-evs, growing while it is and stopping when the
// claim is deleted; the operator and the tenant see the same figures.
func TestStorageUsage(t *testing.T) {
	tenant, ns := billingTenant(t)
	createClaim(t, ns, evsClaim("data", "64Mi", "cci-evs"))
	createPod(t, ns, claimPod("user", "", "data", "sleep 3600"))
	waitPodRunningIn(t, ns, "user", 3*time.Minute)

	// Billed as soon as it is bound, by its provisioned size.
	var first metering.VolumeUsage
	waitFor(t, 60*time.Second, "the claim's volume billed", func() (bool, string) {
		var ok bool
		first, _, ok = volumeUsage(cciUsage(t, "--tenant", tenant), tenant, ns, "data")
		return ok && first.MiBSeconds > 0, fmt.Sprintf("%+v (found %v)", first, ok)
	})
	if first.StorageClass != "cci-evs" || first.SizeGiB != 0.0625 || !first.Bound || first.MiBSeconds != 64*first.Seconds {
		t.Errorf("volume line %+v: want cci-evs, 0.0625 GiB, bound, 64 MiB × its seconds", first)
	}
	pvc, err := client(t).CoreV1().PersistentVolumeClaims(ns).Get(context.Background(), "data", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if first.Name != pvc.Spec.VolumeName {
		t.Errorf("billed volume %q, the claim is bound to %q", first.Name, pvc.Spec.VolumeName)
	}

	// It grows while the claim is bound, in the tenant's cci-evs GiB-hours.
	var grown metering.VolumeUsage
	var tenantUsage metering.Usage
	waitFor(t, 60*time.Second, "the volume's GiB-hours to grow", func() (bool, string) {
		grown, tenantUsage, _ = volumeUsage(cciUsage(t, "--tenant", tenant), tenant, ns, "data")
		return grown.GiBHours > first.GiBHours, fmt.Sprintf("%v GiB-h, first %v", grown.GiBHours, first.GiBHours)
	})
	evs := tenantUsage.StorageOf("cci-evs")
	if evs.GiBHours < grown.GiBHours || evs.PerGiBHour != metering.DefaultPrices().StoragePrice("cci-evs") || evs.Cost <= 0 {
		t.Errorf("tenant's cci-evs %+v: want at least the volume's %v GiB-h, priced at the default", evs, grown.GiBHours)
	}
	t.Logf("cci-evs 64Mi: %d s, %v GiB-h, then %d s, %v GiB-h (%.9f %s)", first.Seconds, first.GiBHours, grown.Seconds, grown.GiBHours, evs.Cost, "USD")

	// The tenant reads its own storage with its own credentials.
	asTenant := tenantKubeconfig(t, ns, tenantToken(t, ns))
	mine, tu, ok := volumeUsage(cciUsageAs(t, asTenant), tenant, ns, "data")
	if !ok || mine.MiBSeconds < grown.MiBSeconds || tu.StorageOf("cci-evs").GiBHours <= 0 {
		t.Errorf("the tenant's own report: %+v, %+v (found %v); want at least %d MiB-s of cci-evs", mine, tu.Storage, ok, grown.MiBSeconds)
	}
	// The table shows it beside the pods.
	out, err := exec.Command(cci.Bin, "usage", "--kubeconfig", asTenant).Output()
	if err != nil || !strings.Contains(string(out), "data (bound)") || !strings.Contains(string(out), "cci-evs") || !strings.Contains(string(out), "user (running)") {
		t.Errorf("cci usage table as the tenant: %v\n%s%s", err, out, stderrOf(err))
	}

	// Deleting the claim stops the billing.
	mustKubectl(t, "-n", ns, "delete", "pod", "user", "--wait=true", "--timeout=120s")
	mustKubectl(t, "-n", ns, "delete", "pvc", "data", "--wait=true", "--timeout=120s")
	waitFor(t, 2*time.Minute, "the volume deleted", func() (bool, string) {
		_, err := client(t).CoreV1().PersistentVolumes().Get(context.Background(), pvc.Spec.VolumeName, metav1.GetOptions{})
		return apierrors.IsNotFound(err), fmt.Sprint(err)
	})
	var last metering.VolumeUsage
	waitFor(t, 30*time.Second, "the volume billed as gone", func() (bool, string) {
		last, _, _ = volumeUsage(cciUsage(t, "--tenant", tenant), tenant, ns, "data")
		return !last.Bound && last.MiBSeconds > 0, fmt.Sprintf("%+v", last)
	})
	if last.MiBSeconds < grown.MiBSeconds || last.MiBSeconds != 64*last.Seconds {
		t.Errorf("after deletion %+v: want at least the %d MiB-s billed before, 64 MiB × its seconds", last, grown.MiBSeconds)
	}
	t.Logf("deleted: billed %d s, %d MiB-s, %v GiB-h", last.Seconds, last.MiBSeconds, last.GiBHours)
	time.Sleep(4 * time.Second)
	later, _, _ := volumeUsage(cciUsage(t, "--tenant", tenant), tenant, ns, "data")
	if later.MiBSeconds != last.MiBSeconds {
		t.Errorf("deleted claim still billed: %d MiB-s, then %d", last.MiBSeconds, later.MiBSeconds)
	}
	mineLater, _, _ := volumeUsage(cciUsageAs(t, asTenant), tenant, ns, "data")
	if mineLater.MiBSeconds != last.MiBSeconds {
		t.Errorf("the tenant sees %d MiB-s, the operator %d", mineLater.MiBSeconds, last.MiBSeconds)
	}

	// The durable records hold the same, closed.
	waitFor(t, 30*time.Second, "the records to hold the closed volume", func() (bool, string) {
		out := mustKubectl(t, "get", "usagerecords", "-l", metering.TenantLabel+"="+tenant, "-o", "json")
		var list struct{ Items []metering.UsageRecord }
		if err := json.Unmarshal([]byte(out), &list); err != nil {
			return false, err.Error()
		}
		var mibs int64
		open := 0
		for _, r := range list.Items {
			for _, l := range r.Spec.Volumes {
				if l.Name == pvc.Spec.VolumeName {
					mibs += l.Totals.MiBSeconds
					if l.Open {
						open++
					}
				}
			}
		}
		return mibs == last.MiBSeconds && open == 0, fmt.Sprintf("records %d MiB-s, %d open; report %d", mibs, open, last.MiBSeconds)
	})
}
