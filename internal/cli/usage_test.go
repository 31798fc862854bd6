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
