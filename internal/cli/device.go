package cli

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	ocispec "github.com/opencontainers/runtime-spec/specs-go"
	"github.com/spf13/cobra"
	"tags.cncf.io/container-device-interface/pkg/cdi"

	"github.com/cci-project/cci/internal/agent"
	"github.com/cci-project/cci/internal/device"
)

// deviceCmd shows what an agent on this host would find and inject,
// without joining a cluster: the devices, their node labels and the CDI
// spec, and what chosen CDI names resolve to. Read-only on the devices.
func deviceCmd() *cobra.Command {
	var cfg agent.Config
	var specDir string
	var resolve []string
	cmd := &cobra.Command{
		Use:   "device",
		Short: "Show the accelerators an agent on this host finds, and what their CDI devices inject (admin)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if specDir == "" {
				dir, err := os.MkdirTemp("", "cci-cdi-")
				if err != nil {
					return err
				}
				defer os.RemoveAll(dir)
				specDir = dir
			}
			if cfg.DataDir == "" {
				cfg.DataDir = specDir
			}
			backend, err := cfg.DeviceBackend()
			if err != nil {
				return err
			}
			m, err := device.New(cmd.Context(), device.Config{Backend: backend, SpecDir: specDir, Replicas: cfg.GPUSharing})
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			printDevices(out, m)
			if m.Capacity() == 0 {
				return nil
			}
			fmt.Fprintf(out, "\nCDI spec: %s\n", filepath.Join(specDir, device.SpecFileName(backend.Name())))
			cache, err := cdi.NewCache(cdi.WithSpecDirs(specDir), cdi.WithAutoRefresh(false))
			if err != nil {
				return err
			}
			for _, name := range resolve {
				spec := &ocispec.Spec{Process: &ocispec.Process{}, Linux: &ocispec.Linux{}}
				if _, err := cache.InjectDevices(spec, name); err != nil {
					return fmt.Errorf("resolve %q: %w", name, err)
				}
				var nodes, mounts []string
				for _, d := range spec.Linux.Devices {
					nodes = append(nodes, fmt.Sprintf("%s(%s %d:%d)", d.Path, d.Type, d.Major, d.Minor))
				}
				for _, mt := range spec.Mounts {
					mounts = append(mounts, mt.Destination)
				}
				fmt.Fprintf(out, "%s -> devices %s; mounts %s\n", name, strings.Join(nodes, " "), strings.Join(mounts, " "))
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Accelerators, "accelerators", "auto", "auto, nvidia, ascend or none (as cci agent's)")
	f.IntVar(&cfg.FakeGPUs, "fake-gpus", 0, "fake GPUs instead (as cci agent's)")
	f.IntVar(&cfg.GPUSharing, "gpu-sharing", 0, "time-slicing replicas of each GPU (as cci agent's)")
	f.StringVar(&specDir, "spec-dir", "", "folder to write the CDI spec to (default: a temporary one, removed after)")
	f.StringSliceVar(&resolve, "resolve", nil, "CDI device names to resolve, e.g. nvidia.com/gpu=0,nvidia.com/gpu=all")
	return cmd
}

func printDevices(out io.Writer, m *device.Manager) {
	fmt.Fprintf(out, "%s: %d advertised, %d allocatable (%d replicas of each device); labels %v\n", m.Resource(), m.Capacity(), m.Allocatable(), m.Replicas(), m.Labels())
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "INDEX\tID\tCDI\tPRODUCT\tMEMORY\tUTIL\tMEMORY USED")
	for _, s := range m.Statuses() {
		util, used := "-", "-"
		if s.Usage != nil {
			util, used = fmt.Sprintf("%d%%", s.Usage.UtilPercent), fmt.Sprintf("%d MiB", s.Usage.MemoryUsedBytes>>20)
			if s.Usage.Fake {
				util += " (fake)"
			}
		}
		fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%d MiB\t%s\t%s\n", s.Index, s.ID, s.CDIName, s.Product, s.MemoryBytes>>20, util, used)
	}
	w.Flush()
}
