// Command gen copies the VolumeSnapshot CRDs (snapshot.storage.k8s.io/v1:
// VolumeSnapshot, VolumeSnapshotContent, VolumeSnapshotClass) from the
// github.com/kubernetes-csi/external-snapshotter/client/v8 module that
// go.mod requires into ../v1, where package crds embeds them. The YAML is
// the module's own (what the external-snapshotter's release installs), so
// the CRDs the control plane installs match the Go types the
// snapshot-controller and the agents' snapshotter are built with. The
// VolumeGroupSnapshot CRDs of the same folder are left out: CCI does not
// offer group snapshots.
//
// Run it with `go generate ./internal/snapshot/crds` (make build and the
// test clusters' build do).
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

const module = "github.com/kubernetes-csi/external-snapshotter/client/v8"

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "snapshot CRDs:", err)
		os.Exit(1)
	}
}

func run() error {
	out, err := exec.Command("go", "mod", "download", "-json", module).Output()
	if err != nil {
		return fmt.Errorf("go mod download %s: %w", module, err)
	}
	var m struct{ Dir, Version, Error string }
	if err := json.Unmarshal(out, &m); err != nil {
		return fmt.Errorf("read go mod download's answer: %w", err)
	}
	if m.Error != "" || m.Dir == "" {
		return fmt.Errorf("go mod download %s: %s", module, m.Error)
	}
	src := filepath.Join(m.Dir, "config", "crd")
	files, err := filepath.Glob(filepath.Join(src, "snapshot.storage.k8s.io_*.yaml"))
	if err != nil || len(files) != 3 {
		return fmt.Errorf("want the 3 snapshot.storage.k8s.io CRDs under %s, found %d (%v)", src, len(files), err)
	}
	dst := "v1"
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	old, _ := filepath.Glob(filepath.Join(dst, "*.yaml"))
	for _, f := range old {
		os.Remove(f)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dst, filepath.Base(f)), b, 0o644); err != nil {
			return err
		}
	}
	fmt.Printf("snapshot CRDs: %d from %s@%s\n", len(files), module, m.Version)
	return nil
}
