package device

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	v1 "k8s.io/api/core/v1"
	cdispec "tags.cncf.io/container-device-interface/specs-go"
)

// Ascend are the host's Huawei Ascend NPUs, found by their device files
// (/dev/davinci<N>) as Huawei's device plugin finds them. Every container
// given one also gets the driver's management devices and, read-only, its
// files; ASCEND_VISIBLE_DEVICES lists the NPUs' numbers.
type Ascend struct {
	// DevRoot is where the device nodes are. Default "/dev".
	DevRoot string
	// Model names the resource: huawei.com/ascend-<Model>. Default "910".
	Model string
	// DriverPaths are the driver's host folders and files containers see
	// read-only, where present. Default AscendDriverPaths.
	DriverPaths []string
}

// AscendDriverPaths are the driver files Huawei's runtime mounts.
var AscendDriverPaths = []string{"/usr/local/Ascend/driver", "/usr/local/sbin/npu-smi", "/usr/local/dcmi", "/etc/ascend_install.info"}

// ascendCommon are the driver's management devices every NPU needs.
var ascendCommon = []string{"davinci_manager", "devmm_svm", "hisi_hdc"}

const AscendCDIKind = "huawei.com/npu"

func (a *Ascend) Name() string { return "ascend" }
func (a *Ascend) Resource() v1.ResourceName {
	model := a.Model
	if model == "" {
		model = "910"
	}
	return v1.ResourceName("huawei.com/ascend-" + model)
}
func (a *Ascend) VisibleEnv() string { return "ASCEND_VISIBLE_DEVICES" }
func (a *Ascend) Close()             {}

func (a *Ascend) devRoot() string {
	if a.DevRoot == "" {
		return "/dev"
	}
	return a.DevRoot
}

// Discover lists /dev/davinci<N>; the management devices must be there too.
func (a *Ascend) Discover(context.Context) ([]Device, error) {
	matches, err := filepath.Glob(filepath.Join(a.devRoot(), "davinci[0-9]*"))
	if err != nil {
		return nil, err
	}
	var devs []Device
	for _, m := range matches {
		n, err := strconv.Atoi(strings.TrimPrefix(filepath.Base(m), "davinci"))
		if err != nil {
			continue
		}
		devs = append(devs, Device{ID: strconv.Itoa(n), Index: n, CDIName: AscendCDIKind + "=" + strconv.Itoa(n), Product: "Ascend-" + a.modelOr910()})
	}
	if len(devs) == 0 {
		return nil, nil
	}
	for _, c := range ascendCommon {
		if _, err := os.Stat(filepath.Join(a.devRoot(), c)); err != nil {
			return nil, fmt.Errorf("found %d /dev/davinci devices but not the driver's %s (is the Ascend driver loaded?): %w", len(devs), c, err)
		}
	}
	sort.Slice(devs, func(i, j int) bool { return devs[i].Index < devs[j].Index })
	return devs, nil
}

func (a *Ascend) modelOr910() string {
	if a.Model == "" {
		return "910"
	}
	return a.Model
}

func (a *Ascend) Spec(devs []Device) (*cdispec.Spec, error) {
	spec := &cdispec.Spec{Version: cdispec.CurrentVersion, Kind: AscendCDIKind}
	for _, d := range devs {
		name := "davinci" + strconv.Itoa(d.Index)
		spec.Devices = append(spec.Devices, cdispec.Device{Name: strconv.Itoa(d.Index), ContainerEdits: cdispec.ContainerEdits{
			DeviceNodes: []*cdispec.DeviceNode{{Path: "/dev/" + name, HostPath: filepath.Join(a.devRoot(), name), Permissions: "rw"}},
		}})
	}
	for _, c := range ascendCommon {
		spec.ContainerEdits.DeviceNodes = append(spec.ContainerEdits.DeviceNodes, &cdispec.DeviceNode{Path: "/dev/" + c, HostPath: filepath.Join(a.devRoot(), c), Permissions: "rw"})
	}
	paths := a.DriverPaths
	if paths == nil {
		paths = AscendDriverPaths
	}
	for _, p := range paths {
		if exists(p) {
			spec.ContainerEdits.Mounts = append(spec.ContainerEdits.Mounts, &cdispec.Mount{HostPath: p, ContainerPath: p, Options: []string{"ro", "nosuid", "nodev", "rbind"}})
		}
	}
	return spec, nil
}

func (a *Ascend) Labels(devs []Device) map[string]string {
	if len(devs) == 0 {
		return nil
	}
	return map[string]string{"huawei.com/npu.product": labelValue(devs[0].Product), "huawei.com/npu.count": strconv.Itoa(len(devs))}
}

// WatchHealth: the device files give no health events (Huawei's DCMI
// library does); an Ascend device leaves only when told.
func (a *Ascend) WatchHealth(context.Context, []Device, func(id, reason string)) {}

func (a *Ascend) Usage([]Device) map[string]Usage { return nil }

func exists(p string) bool { _, err := os.Stat(p); return err == nil }
