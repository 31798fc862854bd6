// Package testimage builds CCI's own test images without network access,
// from the static busybox binary of Debian's busybox-static package, and
// pushes them to CCI's registry.
//
// Each image is one layer built in memory: busybox, a symlink per applet,
// the few files a container expects (/etc/passwd, /tmp), and what the image
// is for. Builds are reproducible: file times are fixed and entries sorted,
// so the same busybox always gives the same digests.
package testimage

import (
	"archive/tar"
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	ciimage "github.com/cci-project/cci/internal/image"
)

// Images built by Build, by short name.
const (
	// HTTPD runs busybox httpd in the foreground on port 8080, serving /www,
	// whose index.html says "hello from cci".
	HTTPD = "cci-test/httpd:1"
	// Shell runs sh; pods give it shell snippets with `command`/`args`.
	Shell = "cci-test/shell:1"
	// GRPCHealth serves the gRPC health protocol on GRPCHealthPort (the
	// grpchealth command of this repository, on the busybox root). It is
	// built by BuildGRPCHealth, not Build, as it needs the Go toolchain.
	GRPCHealth = "cci-test/grpchealth:1"
	// InCluster runs the incluster command of this repository (on the
	// busybox root): it calls the Kubernetes API with client-go's
	// in-cluster configuration and prints the user it is, then exits.
	// Built by BuildInCluster.
	InCluster = "cci-test/incluster:1"
	// StopSignal runs StopSignalCmd with STOPSIGNAL SIGUSR1 in its config:
	// a graceful stop that sends the image's stop signal ends it with exit
	// code StopSignalExit, one that sends SIGTERM with TermExit.
	StopSignal = "cci-test/stopsignal:1"
	// Netperf runs the netperf command of this repository (on the busybox
	// root): `netperf serve` answers TCP throughput and round-trip tests,
	// `netperf run` measures a path to one (internal/netperf). Built by
	// BuildNetperfProgram and PushNetperf.
	Netperf = "cci-test/netperf:1"
	// Diskperf runs the diskperf command of this repository (on the
	// busybox root): `diskperf run -dir DIR` measures the file system of
	// DIR (internal/diskperf). Built by BuildDiskperfProgram and
	// PushDiskperf.
	Diskperf = "cci-test/diskperf:1"
	// NoShell runs `sleep 3600` and has no shell: its /bin holds busybox
	// and the sleep applet only, so an exec of sh or bash fails with the
	// executable not found (the console's terminal shows that, test/console).
	NoShell = "cci-test/noshell:1"
	// EchoBasic runs echo-basic, the backend of the Gateway API conformance
	// suite (sigs.k8s.io/gateway-api/conformance/echo-basic, the version
	// go.mod requires), on the busybox root: it answers every request with
	// a JSON description of it. Built by BuildEchoBasic.
	EchoBasic = "cci-test/echo-basic:1"
)

// The exit codes of StopSignalCmd: on SIGUSR1 and on SIGTERM.
const (
	StopSignalExit = 10
	TermExit       = 15
)

// StopSignalCmd is the StopSignal image's command. A container of another
// image may run it too, to show what that image's stop signal does.
var StopSignalCmd = []string{"sh", "-c", fmt.Sprintf("trap 'exit %d' USR1; trap 'exit %d' TERM; sleep 3600 & wait", StopSignalExit, TermExit)}

// GRPCHealthPort is the TCP port the GRPCHealth image serves on.
const GRPCHealthPort = 9090

// GRPCHealthDown is the file whose presence makes the GRPCHealth image
// answer NOT_SERVING.
const GRPCHealthDown = "/tmp/grpc-down"

// DefaultBusybox is where Debian's busybox-static package installs busybox.
const DefaultBusybox = "/bin/busybox"

// IndexHTML is the content of /www/index.html in the HTTPD image.
const IndexHTML = "hello from cci\n"

// HTTPDPort is the TCP port the HTTPD image listens on.
const HTTPDPort = 8080

// epoch is every file's and the image's time, for reproducible digests.
var epoch = time.Unix(0, 0).UTC()

// path is PATH in every image, as in Debian's images.
const path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// spec describes one test image on top of the common busybox root.
type spec struct {
	extra []entry
	cmd   []string
	ports []string
	// stopSignal is the config's StopSignal; empty: none (SIGTERM).
	stopSignal string
	// applets, when set, are the only busybox applets linked in /bin;
	// nil: all of them.
	applets []string
}

var httpdCmd = []string{"sh", "-c", fmt.Sprintf("trap 'exit 0' TERM; httpd -f -vv -p %d -h /www & wait", HTTPDPort)}

var specs = map[string]spec{
	HTTPD: {
		extra: []entry{
			dir("www", 0o755),
			file("www/index.html", 0o644, []byte(IndexHTML)),
		},
		// httpd under a shell that exits on SIGTERM: as PID 1 httpd itself
		// would ignore it and every delete would wait out the grace period.
		cmd:   httpdCmd,
		ports: []string{fmt.Sprintf("%d/tcp", HTTPDPort)},
	},
	Shell: {
		cmd: []string{"sh"},
	},
	StopSignal: {
		// The shell waits for sleep in the background: a trapped signal
		// interrupts wait at once, where it would wait for a foreground
		// child to end.
		cmd:        StopSignalCmd,
		stopSignal: "SIGUSR1",
	},
	NoShell: {
		cmd:     []string{"sleep", "3600"},
		applets: []string{"sleep"},
	},
}

// Build builds every test image from busyboxPath (default "/bin/busybox"
// when empty) and pushes it to registry (host:port, plain HTTP). It returns
// the full references keyed by the short names above, e.g.
// {"cci-test/httpd:1": "127.0.0.1:5000/cci-test/httpd:1"}. Building twice
// gives the same digests (deterministic: fixed file times, sorted entries).
func Build(ctx context.Context, registry, busyboxPath string) (map[string]string, error) {
	if _, err := name.NewRegistry(registry, name.Insecure, name.StrictValidation); err != nil {
		return nil, fmt.Errorf("build test images: registry address %q: %w", registry, err)
	}
	bb, err := loadBusybox(ctx, busyboxPath)
	if err != nil {
		return nil, fmt.Errorf("build test images: %w", err)
	}

	shorts := make([]string, 0, len(specs))
	for short := range specs {
		shorts = append(shorts, short)
	}
	sort.Strings(shorts)
	refs := make(map[string]string, len(specs))
	for _, short := range shorts {
		ref, err := bb.push(ctx, registry, short, specs[short])
		if err != nil {
			return nil, err
		}
		refs[short] = ref
	}
	return refs, nil
}

// BuildGRPCHealthServer builds the grpchealth command of the module at
// repoRoot into out: static (CGO_ENABLED=0) and reproducible (-trimpath, no
// VCS stamp, no build id), with modules from the Go module proxy only.
func BuildGRPCHealthServer(ctx context.Context, repoRoot, out string) error {
	return buildCommand(ctx, repoRoot, "./internal/testimage/grpchealth", out)
}

// buildCommand builds a static Go command of the module at repoRoot.
func buildCommand(ctx context.Context, repoRoot, pkg, out string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-buildvcs=false", "-ldflags", "-s -w -buildid=",
		"-o", out, pkg)
	cmd.Dir = repoRoot
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build %s: %w\n%s", pkg, err, b)
	}
	return nil
}

// BuildInCluster builds the incluster command of the module at repoRoot
// into workDir, makes the InCluster image of it on busyboxPath (default
// "/bin/busybox") and pushes it to registry. It returns the full reference.
func BuildInCluster(ctx context.Context, repoRoot, workDir, registry, busyboxPath string) (string, error) {
	bin := filepath.Join(workDir, "incluster")
	if err := buildCommand(ctx, repoRoot, "./internal/testimage/incluster", bin); err != nil {
		return "", fmt.Errorf("build test image %q: %w", InCluster, err)
	}
	binary, err := os.ReadFile(bin)
	if err != nil {
		return "", err
	}
	bb, err := loadBusybox(ctx, busyboxPath)
	if err != nil {
		return "", fmt.Errorf("build test image %q: %w", InCluster, err)
	}
	return bb.push(ctx, registry, InCluster, spec{
		extra: []entry{file("usr/local/bin/incluster", 0o755, binary), dir("usr/local", 0o755), dir("usr/local/bin", 0o755)},
		cmd:   []string{"/usr/local/bin/incluster"},
	})
}

// EchoBasicPackage is the Go package of the EchoBasic image's program.
const EchoBasicPackage = "sigs.k8s.io/gateway-api/conformance/echo-basic"

// BuildEchoBasic builds echo-basic from the Gateway API conformance module
// that the module at repoRoot requires (as upstream's Dockerfile does:
// static, -trimpath) into workDir, makes the EchoBasic image of it on
// busyboxPath (default "/bin/busybox") and pushes it to registry. It
// returns the full reference. Public registries, where upstream publishes
// the image, are out of reach here.
func BuildEchoBasic(ctx context.Context, repoRoot, workDir, registry, busyboxPath string) (string, error) {
	bin := filepath.Join(workDir, "echo-basic")
	if err := buildCommand(ctx, repoRoot, EchoBasicPackage, bin); err != nil {
		return "", fmt.Errorf("build test image %q (does go.mod require sigs.k8s.io/gateway-api/conformance?): %w", EchoBasic, err)
	}
	binary, err := os.ReadFile(bin)
	if err != nil {
		return "", err
	}
	bb, err := loadBusybox(ctx, busyboxPath)
	if err != nil {
		return "", fmt.Errorf("build test image %q: %w", EchoBasic, err)
	}
	// The ports the conformance manifests' Services point at: HTTP, h2c
	// and WebSocket on 3000, the others for TLS and gRPC.
	return bb.push(ctx, registry, EchoBasic, spec{
		extra: []entry{file("echo-basic", 0o755, binary)},
		cmd:   []string{"/echo-basic"},
		ports: []string{"3000/tcp", "3001/tcp", "8443/tcp"},
	})
}

// BuildNetperfProgram builds the netperf command of the module at
// repoRoot into out: static, so that it runs in the Netperf image and
// straight in a host's network namespace alike.
func BuildNetperfProgram(ctx context.Context, repoRoot, out string) error {
	return buildCommand(ctx, repoRoot, "./internal/testimage/netperf", out)
}

// PushNetperf makes the Netperf image of busyboxPath (default
// "/bin/busybox") and program, a static netperf binary (see
// BuildNetperfProgram), and pushes it to registry. It returns the image's
// full reference.
func PushNetperf(ctx context.Context, registry, busyboxPath, program string) (string, error) {
	bb, err := loadBusybox(ctx, busyboxPath)
	if err != nil {
		return "", fmt.Errorf("build test image %q: %w", Netperf, err)
	}
	binary, err := os.ReadFile(program)
	if err != nil {
		return "", fmt.Errorf("build test image %q: read the netperf program: %w", Netperf, err)
	}
	if _, err := staticArch(binary); err != nil {
		return "", fmt.Errorf("build test image %q: netperf program %q: %w", Netperf, program, err)
	}
	return bb.push(ctx, registry, Netperf, spec{
		extra: []entry{file("usr/local/bin/netperf", 0o755, binary), dir("usr/local", 0o755), dir("usr/local/bin", 0o755)},
		cmd:   []string{"/usr/local/bin/netperf", "serve"},
		ports: []string{"5201/tcp"},
	})
}

// BuildDiskperfProgram builds the diskperf command of the module at
// repoRoot into out: static, so that it runs in the Diskperf image and
// straight on a host alike.
func BuildDiskperfProgram(ctx context.Context, repoRoot, out string) error {
	return buildCommand(ctx, repoRoot, "./internal/testimage/diskperf", out)
}

// PushDiskperf makes the Diskperf image of busyboxPath (default
// "/bin/busybox") and program, a static diskperf binary (see
// BuildDiskperfProgram), and pushes it to registry. It returns the
// image's full reference. The image's command only sleeps: pods give
// `diskperf run` with its flags as a shell snippet.
func PushDiskperf(ctx context.Context, registry, busyboxPath, program string) (string, error) {
	bb, err := loadBusybox(ctx, busyboxPath)
	if err != nil {
		return "", fmt.Errorf("build test image %q: %w", Diskperf, err)
	}
	binary, err := os.ReadFile(program)
	if err != nil {
		return "", fmt.Errorf("build test image %q: read the diskperf program: %w", Diskperf, err)
	}
	if _, err := staticArch(binary); err != nil {
		return "", fmt.Errorf("build test image %q: diskperf program %q: %w", Diskperf, program, err)
	}
	return bb.push(ctx, registry, Diskperf, spec{
		extra: []entry{file("usr/local/bin/diskperf", 0o755, binary), dir("usr/local", 0o755), dir("usr/local/bin", 0o755)},
		cmd:   []string{"sleep", "3600"},
	})
}

// BuildGRPCHealth builds the GRPCHealth image from busyboxPath (default
// "/bin/busybox" when empty) and server, a static grpchealth binary (see
// BuildGRPCHealthServer), and pushes it to registry. It returns the image's
// full reference.
func BuildGRPCHealth(ctx context.Context, registry, busyboxPath, server string) (string, error) {
	bb, err := loadBusybox(ctx, busyboxPath)
	if err != nil {
		return "", fmt.Errorf("build test image %q: %w", GRPCHealth, err)
	}
	binary, err := os.ReadFile(server)
	if err != nil {
		return "", fmt.Errorf("build test image %q: read the grpchealth server: %w", GRPCHealth, err)
	}
	if _, err := staticArch(binary); err != nil {
		return "", fmt.Errorf("build test image %q: grpchealth server %q: %w", GRPCHealth, server, err)
	}
	return bb.push(ctx, registry, GRPCHealth, spec{
		extra: []entry{file("usr/local/bin/grpchealth", 0o755, binary), dir("usr/local", 0o755), dir("usr/local/bin", 0o755)},
		cmd:   []string{"/usr/local/bin/grpchealth", "-addr", fmt.Sprintf(":%d", GRPCHealthPort), "-down", GRPCHealthDown},
		ports: []string{fmt.Sprintf("%d/tcp", GRPCHealthPort)},
	})
}

// push builds the test image short from s and pushes it to registry, with
// the credentials of the Docker config ($DOCKER_CONFIG; the operator's
// when run by `cci image` or test/cluster).
func (bb *busybox) push(ctx context.Context, registry, short string, s spec) (string, error) {
	img, err := bb.image(s)
	if err != nil {
		return "", fmt.Errorf("build test image %q: %w", short, err)
	}
	ref, err := name.NewTag(registry+"/"+short, name.Insecure)
	if err != nil {
		return "", fmt.Errorf("build test image %q: %w", short, err)
	}
	if err := remote.Write(ref, img, remote.WithContext(ctx), remote.WithAuthFromKeychain(authn.DefaultKeychain)); err != nil {
		return "", fmt.Errorf("push test image %q to %s: %w", short, registry, err)
	}
	return ref.String(), nil
}

// busybox is the binary every test image is built from.
type busybox struct {
	binary  []byte
	arch    string
	applets []string
}

// loadBusybox reads the busybox binary at p, checks it can run in an empty
// image (static), and lists its applets.
func loadBusybox(ctx context.Context, p string) (*busybox, error) {
	if p == "" {
		p = DefaultBusybox
	}
	binary, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("busybox %q not found: install Debian's busybox-static package (apt-get install -y busybox-static): %w", p, err)
	}
	if err != nil {
		return nil, fmt.Errorf("read busybox %q: %w", p, err)
	}
	arch, err := staticArch(binary)
	if err != nil {
		return nil, fmt.Errorf("busybox %q: %w; test images need the static busybox of Debian's busybox-static package", p, err)
	}

	out, err := exec.CommandContext(ctx, p, "--list").Output()
	if err != nil {
		return nil, fmt.Errorf("list applets with %q --list: %w", p, err)
	}
	seen := map[string]bool{"busybox": true}
	var applets []string
	for _, a := range strings.Fields(string(out)) {
		if seen[a] || strings.Contains(a, "/") {
			continue
		}
		seen[a] = true
		applets = append(applets, a)
	}
	if !seen["sh"] || !seen["env"] {
		return nil, fmt.Errorf("busybox %q lacks the sh or env applet", p)
	}
	return &busybox{binary: binary, arch: arch, applets: applets}, nil
}

// staticArch returns the GOARCH-style architecture of a statically linked
// ELF executable, or an error if it is not one. The image's platform must
// match the binary, or containerd's platform matcher refuses the image.
func staticArch(binary []byte) (string, error) {
	f, err := elf.NewFile(bytes.NewReader(binary))
	if err != nil {
		return "", fmt.Errorf("not an ELF executable: %w", err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return "", errors.New("dynamically linked, so it cannot run in an image without libc")
		}
	}
	return ciimage.GoArch(f.Machine, f.Data)
}

// image builds one test image: a single layer holding the common root plus
// s.extra, and a config running s.cmd.
func (bb *busybox) image(s spec) (v1.Image, error) {
	layerTar, err := tarEntries(append(bb.root(s.applets), s.extra...))
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, fmt.Errorf("make layer: %w", err)
	}
	base := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	base = mutate.ConfigMediaType(base, types.OCIConfigJSON)
	img, err := mutate.Append(base, mutate.Addendum{
		Layer:     layer,
		MediaType: types.OCILayer,
		History: v1.History{
			Created:   v1.Time{Time: epoch},
			CreatedBy: "cci testimage: busybox root filesystem",
		},
	})
	if err != nil {
		return nil, fmt.Errorf("add layer: %w", err)
	}

	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cfg = cfg.DeepCopy()
	cfg.Created = v1.Time{Time: epoch}
	cfg.OS = "linux"
	cfg.Architecture = bb.arch
	cfg.Config.Env = []string{"PATH=" + path}
	cfg.Config.Cmd = s.cmd
	cfg.Config.WorkingDir = "/"
	cfg.Config.StopSignal = s.stopSignal
	if len(s.ports) > 0 {
		cfg.Config.ExposedPorts = map[string]struct{}{}
		for _, p := range s.ports {
			cfg.Config.ExposedPorts[p] = struct{}{}
		}
	}
	img, err = mutate.ConfigFile(img, cfg)
	if err != nil {
		return nil, fmt.Errorf("set config: %w", err)
	}
	return img, nil
}

// root is the file tree every test image shares. /bin holds busybox and its
// applets (only those named, when applets is not nil); /sbin, /usr/bin and
// /usr/sbin point to it, so /bin/sh and /usr/bin/env both exist.
func (bb *busybox) root(applets []string) []entry {
	es := []entry{
		dir("bin", 0o755),
		file("bin/busybox", 0o755, bb.binary),
		dir("dev", 0o755),
		dir("etc", 0o755),
		file("etc/group", 0o644, []byte("root:x:0:\nnobody:x:65534:\n")),
		file("etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")),
		dir("proc", 0o755),
		dir("root", 0o700),
		symlink("sbin", "bin"),
		dir("sys", 0o755),
		dir("tmp", 0o1777),
		dir("usr", 0o755),
		symlink("usr/bin", "../bin"),
		symlink("usr/sbin", "../bin"),
	}
	if applets == nil {
		applets = bb.applets
	}
	for _, a := range applets {
		es = append(es, symlink("bin/"+a, "busybox"))
	}
	return es
}

// entry is one file in a layer.
type entry struct {
	name     string // relative, no trailing slash
	typeflag byte
	mode     int64
	linkname string
	data     []byte
}

func dir(name string, mode int64) entry {
	return entry{name: name, typeflag: tar.TypeDir, mode: mode}
}

func file(name string, mode int64, data []byte) entry {
	return entry{name: name, typeflag: tar.TypeReg, mode: mode, data: data}
}

func symlink(name, target string) entry {
	return entry{name: name, typeflag: tar.TypeSymlink, mode: 0o777, linkname: target}
}

// tarEntries writes es as a tar, sorted by name (so parents come before
// their children) with fixed owners and times.
func tarEntries(es []entry) ([]byte, error) {
	sorted := append([]entry(nil), es...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].name < sorted[j].name })
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for i, e := range sorted {
		if i > 0 && sorted[i-1].name == e.name {
			return nil, fmt.Errorf("two entries for %q", e.name)
		}
		hdr := &tar.Header{
			Typeflag: e.typeflag,
			Name:     e.name,
			Linkname: e.linkname,
			Mode:     e.mode,
			Size:     int64(len(e.data)),
			ModTime:  epoch,
			Format:   tar.FormatPAX,
		}
		if e.typeflag == tar.TypeDir {
			hdr.Name += "/"
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, fmt.Errorf("write %q: %w", e.name, err)
		}
		if _, err := tw.Write(e.data); err != nil {
			return nil, fmt.Errorf("write %q: %w", e.name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
