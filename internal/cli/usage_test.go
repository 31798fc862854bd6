package cli

import (
	"bytes"
	"encoding/csv"
	"strings"
	"testing"
	"time"

	"github.com/cci-project/cci/internal/metering"
)

func sampleReport() *metering.Report {
	at := time.Date(2026, 11, 25, 2, 0, 0, 0, time.UTC)
	u := metering.Usage{Seconds: 20, CoreSeconds: 10, GiBSeconds: 20, Cost: 0.000137}
	return &metering.Report{
		Since: at, Until: at.Add(time.Hour), Currency: "USD", Prices: metering.DefaultPrices(),
		Tenants: []metering.TenantUsage{{Tenant: "acme", Usage: u, Namespaces: []metering.NamespaceUsage{{
			Namespace: "acme", Usage: u,
			Pods: []metering.PodUsage{{Name: "web", UID: "u1", CPU: 0.5, MemoryGiB: 1, Start: at, End: at.Add(20 * time.Second), Usage: u}},
		}}}},
		Total: u,
	}
}

func TestUsageOutput(t *testing.T) {
	var table bytes.Buffer
	if err := writeUsageTable(&table, sampleReport()); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"TENANT", "acme", "web", "0.5C/1G", "10.000", "20.000", "0.000137", "TOTAL"} {
		if !strings.Contains(table.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, table.String())
		}
	}
	var out bytes.Buffer
	if err := writeUsageCSV(&out, sampleReport()); err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(&out).ReadAll()
	if err != nil {
		t.Fatalf("csv: %v", err)
	}
	levels := []string{}
	for _, r := range rows[1:] {
		levels = append(levels, r[0])
	}
	if got := strings.Join(levels, ","); got != "pod,namespace,tenant,total" {
		t.Errorf("csv rows %q, want pod,namespace,tenant,total", got)
	}
	if rows[1][5] != "10.000" || rows[1][14] != "2026-11-25T02:00:20Z" {
		t.Errorf("csv pod row %q", rows[1])
	}
}

func TestUsageURLFor(t *testing.T) {
	for in, want := range map[string]string{
		"https://127.0.0.1:6443": "https://127.0.0.1:6444",
		"https://cci.example":    "https://cci.example:444",
		"https://[::1]:7000":     "https://[::1]:7001",
	} {
		if got, err := usageURLFor(in); err != nil || got != want {
			t.Errorf("usageURLFor(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

// Storage is printed beside the pods: per volume, per class of the
// namespace, tenant and total, in the table and the CSV.
func TestUsageOutputStorage(t *testing.T) {
	rep := sampleReport()
	at := rep.Since
	evs := metering.StorageUsage{StorageClass: "cci-evs", MiBSeconds: 64 * 3600, GiBHours: 0.0625, PerGiBHour: 0.00010959, Cost: 0.000006849}
	withStorage := func(u metering.Usage) metering.Usage {
		u.Storage = []metering.StorageUsage{evs}
		u.Cost += evs.Cost
		return u
	}
	ns := &rep.Tenants[0].Namespaces[0]
	ns.Volumes = []metering.VolumeUsage{{Name: "pvc-1", UID: "v1", Claim: "data", SizeGiB: 0.0625, Start: at, End: at.Add(time.Hour), Bound: true, Seconds: 3600, StorageUsage: evs}}
	ns.Usage = withStorage(ns.Usage)
	rep.Tenants[0].Usage = withStorage(rep.Tenants[0].Usage)
	rep.Total = withStorage(rep.Total)

	var table bytes.Buffer
	if err := writeUsageTable(&table, rep); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(table.String(), "\n")
	var podTotal, volume, tenantEVS string
	for _, l := range lines {
		f := strings.Fields(l)
		switch {
		case len(f) > 0 && f[0] == "TOTAL" && podTotal == "":
			podTotal = l
		case strings.Contains(l, "data (bound)"):
			volume = l
		case len(f) > 3 && f[0] == "acme" && f[1] == "*" && f[3] == "cci-evs":
			tenantEVS = l
		}
	}
	if !strings.HasSuffix(podTotal, "0.000137") {
		t.Errorf("the pods' total is not the pods' cost alone: %q\n%s", podTotal, table.String())
	}
	for _, want := range []string{"cci-evs", "0.0625Gi", "3600", "0.062500", "0.000007"} {
		if !strings.Contains(volume, want) {
			t.Errorf("volume row lacks %q: %q\n%s", want, volume, table.String())
		}
	}
	if !strings.Contains(tenantEVS, "0.062500") || !strings.Contains(table.String(), "cost: 0.000144 USD (pods 0.000137, storage 0.000007)") {
		t.Errorf("tenant's cci-evs row or the cost line missing:\n%s", table.String())
	}

	var out bytes.Buffer
	if err := writeUsageCSV(&out, rep); err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(&out).ReadAll()
	if err != nil {
		t.Fatalf("csv: %v", err)
	}
	levels := []string{}
	for _, r := range rows[1:] {
		levels = append(levels, r[0])
	}
	if got := strings.Join(levels, ","); got != "pod,volume,storage,namespace,storage,tenant,storage,total" {
		t.Errorf("csv rows %q", got)
	}
	if v := rows[2]; v[3] != "data" || v[16] != "cci-evs" || v[17] != "0.0625" || v[18] != "0.062500" || v[15] != "true" {
		t.Errorf("csv volume row %q", v)
	}
}
