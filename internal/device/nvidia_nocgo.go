//go:build !cgo

package device

import (
	"context"
	"errors"
	"fmt"

	v1 "k8s.io/api/core/v1"
	cdispec "tags.cncf.io/container-device-interface/specs-go"
)

// NVIDIA needs cgo (go-nvml loads the driver's library with dlopen); a
// binary built without it finds no NVIDIA GPUs and says why.
type NVIDIA struct {
	DevRoot, HostRoot string
}

func (n *NVIDIA) Name() string              { return "nvidia" }
func (n *NVIDIA) Resource() v1.ResourceName { return NVIDIAGPU }
func (n *NVIDIA) VisibleEnv() string        { return "NVIDIA_VISIBLE_DEVICES" }
func (n *NVIDIA) Discover(context.Context) ([]Device, error) {
	return nil, fmt.Errorf("this cci was built without cgo, which NVML needs (build it with CGO_ENABLED=1): %w", ErrNoDriver)
}
func (n *NVIDIA) Spec([]Device) (*cdispec.Spec, error)                        { return nil, errors.New("no NVML") }
func (n *NVIDIA) Labels([]Device) map[string]string                           { return nil }
func (n *NVIDIA) WatchHealth(context.Context, []Device, func(string, string)) {}
func (n *NVIDIA) Usage([]Device) map[string]Usage                             { return nil }
func (n *NVIDIA) Close()                                                      {}
