package server

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/klog/v2"
	scheduleroptions "k8s.io/kubernetes/cmd/kube-scheduler/app/options"
	"k8s.io/kubernetes/pkg/scheduler/apis/config"
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
		t.Fatalf("profiles = %+v, want the default one", cfg.Profiles)
	}
	var spread *config.PodTopologySpreadArgs
	for _, pc := range cfg.Profiles[0].PluginConfig {
		if a, ok := pc.Args.(*config.PodTopologySpreadArgs); ok {
			spread = a
		}
	}
	if spread == nil {
		t.Fatal("no PodTopologySpread arguments")
	}
	want := []corev1.TopologySpreadConstraint{{MaxSkew: 1, TopologyKey: "kubernetes.io/hostname", WhenUnsatisfiable: corev1.ScheduleAnyway}}
	if spread.DefaultingType != config.ListDefaulting || !reflect.DeepEqual(spread.DefaultConstraints, want) {
		t.Errorf("PodTopologySpread defaults = %s %+v, want List %+v", spread.DefaultingType, spread.DefaultConstraints, want)
	}
}
