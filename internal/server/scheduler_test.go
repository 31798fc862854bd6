package server

import (
	"os"
	"path/filepath"
	"testing"

	"k8s.io/klog/v2"
	scheduleroptions "k8s.io/kubernetes/cmd/kube-scheduler/app/options"
	"k8s.io/kubernetes/pkg/scheduler/apis/config/validation"
)

// TestSchedulerConfig loads the scheduler's configuration as kube-scheduler
// does (defaults, conversion, validation) and checks the tuned values.
func TestSchedulerConfig(t *testing.T) {
	kubeconfig := filepath.Join(t.TempDir(), "odd \"dir\"", "scheduler.kubeconfig")
	path := filepath.Join(t.TempDir(), "scheduler-config.yaml")
	if err := os.WriteFile(path, schedulerConfig(kubeconfig), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := scheduleroptions.LoadConfigFromFile(klog.Background(), path)
	if err != nil {
		t.Fatalf("kube-scheduler refuses the configuration: %v\n%s", err, schedulerConfig(kubeconfig))
	}
	if err := validation.ValidateKubeSchedulerConfiguration(cfg); err != nil {
		t.Fatalf("invalid configuration: %v", err)
	}
	if got := cfg.ClientConnection.Kubeconfig; got != kubeconfig {
		t.Errorf("kubeconfig = %q, want %q", got, kubeconfig)
	}
	if cfg.ClientConnection.QPS != 500 || cfg.ClientConnection.Burst != 1000 {
		t.Errorf("client QPS/burst = %v/%v, want 500/1000", cfg.ClientConnection.QPS, cfg.ClientConnection.Burst)
	}
	if cfg.LeaderElection.LeaderElect {
		t.Error("leader election is on")
	}
	if p := cfg.PercentageOfNodesToScore; p == nil || *p != 10 {
		t.Errorf("percentageOfNodesToScore = %v, want 10", p)
	}
	if len(cfg.Profiles) != 1 || cfg.Profiles[0].SchedulerName != "default-scheduler" {
		t.Errorf("profiles = %+v, want the default one", cfg.Profiles)
	}
}
