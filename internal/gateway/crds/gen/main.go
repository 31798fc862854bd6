// Command gen copies the standard-channel Gateway API CRDs from the
// sigs.k8s.io/gateway-api module that go.mod requires into ../standard,
// where package crds embeds them. The YAML is the module's own (the files
// its release publishes as standard-install.yaml), so the CRDs the control
// plane installs always match the Go types it is built with; gen refuses
// files whose bundle version differs from the module's consts.BundleVersion.
//
// Run it with `go generate ./internal/gateway/crds` (make build and the
// test clusters' build do).
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"sigs.k8s.io/gateway-api/pkg/consts"
)

const module = "sigs.k8s.io/gateway-api"

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "gateway CRDs:", err)
		os.Exit(1)
	}
}

func run() error {
	// go mod download puts the module in the module cache if it is not
	// there yet and says where; the version is go.mod's.
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
	src := filepath.Join(m.Dir, "config", "crd", "standard")
	files, err := filepath.Glob(filepath.Join(src, "gateway.networking.k8s.io_*.yaml"))
	if err != nil || len(files) == 0 {
		return fmt.Errorf("no CRDs under %s: %v", src, err)
	}
	dst := "standard"
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	old, _ := filepath.Glob(filepath.Join(dst, "*.yaml"))
	for _, f := range old {
		os.Remove(f)
	}
	n := 0
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		// Only CustomResourceDefinitions: the folder also holds a
		// ValidatingAdmissionPolicy for upgrades of other installs.
		if !bytes.Contains(b, []byte("\nkind: CustomResourceDefinition\n")) {
			continue
		}
		if !bytes.Contains(b, []byte(consts.BundleVersionAnnotation+": "+consts.BundleVersion)) {
			return fmt.Errorf("%s is not bundle version %s of the Go types", f, consts.BundleVersion)
		}
		if err := os.WriteFile(filepath.Join(dst, filepath.Base(f)), b, 0o644); err != nil {
			return err
		}
		n++
	}
	fmt.Printf("gateway CRDs: %d from %s@%s\n", n, module, strings.TrimSpace(m.Version))
	return nil
}
