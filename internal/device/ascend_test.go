package device

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestAscendDiscovery(t *testing.T) {
	dev := t.TempDir()
	for _, f := range []string{"davinci0", "davinci1", "davinci3"} {
		if err := os.WriteFile(filepath.Join(dev, f), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	a := &Ascend{DevRoot: dev, DriverPaths: []string{}}
	if _, err := a.Discover(context.Background()); err == nil || !strings.Contains(err.Error(), "davinci_manager") {
		t.Fatalf("NPUs without the driver's management devices: %v", err)
	}
	for _, f := range ascendCommon {
		if err := os.WriteFile(filepath.Join(dev, f), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	devs, err := a.Discover(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if IDs(devs) != "0,1,3" || a.Resource() != "huawei.com/ascend-910" || a.VisibleEnv() != "ASCEND_VISIBLE_DEVICES" {
		t.Fatalf("devices %s of %s", IDs(devs), a.Resource())
	}
	spec, err := a.Spec(devs)
	if err != nil {
		t.Fatal(err)
	}
	if len(spec.Devices) != 3 || spec.Devices[2].Name != "3" || spec.Devices[2].ContainerEdits.DeviceNodes[0].Path != "/dev/davinci3" {
		t.Fatalf("spec devices %+v", spec.Devices)
	}
	var common []string
	for _, n := range spec.ContainerEdits.DeviceNodes {
		common = append(common, n.Path)
	}
	if strings.Join(common, " ") != "/dev/davinci_manager /dev/devmm_svm /dev/hisi_hdc" {
		t.Fatalf("common device nodes %v", common)
	}
	// A host without NPUs has none, and no error.
	if devs, err := (&Ascend{DevRoot: t.TempDir()}).Discover(context.Background()); err != nil || len(devs) != 0 {
		t.Fatalf("empty host: %v %v", devs, err)
	}
}
