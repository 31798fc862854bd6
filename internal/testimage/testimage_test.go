package testimage

import (
	"archive/tar"
	"context"
	"errors"
	"io"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/cci-project/cci/internal/registry"
)

func TestBuild(t *testing.T) {
	addr := startRegistry(t)
	refs, err := Build(context.Background(), addr, "")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{HTTPD: addr + "/" + HTTPD, Shell: addr + "/" + Shell, StopSignal: addr + "/" + StopSignal, NoShell: addr + "/" + NoShell}
	if !maps.Equal(refs, want) {
		t.Fatalf("Build() = %v, want %v", refs, want)
	}

	httpd := pull(t, refs[HTTPD])
	cfg, err := httpd.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	// Debian's busybox-static is built for the machine it is installed on.
	if cfg.OS != "linux" || cfg.Architecture != runtime.GOARCH {
		t.Errorf("platform = %s/%s, want linux/%s", cfg.OS, cfg.Architecture, runtime.GOARCH)
	}
	if got, want := cfg.Config.Cmd, []string{"sh", "-c", "trap 'exit 0' TERM; httpd -f -vv -p 8080 -h /www & wait"}; !slices.Equal(got, want) {
		t.Errorf("Cmd = %q, want %q", got, want)
	}
	if _, ok := cfg.Config.ExposedPorts["8080/tcp"]; !ok {
		t.Errorf("ExposedPorts = %v, want 8080/tcp", cfg.Config.ExposedPorts)
	}
	if got, want := cfg.Config.Env, []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}; !slices.Equal(got, want) {
		t.Errorf("Env = %q, want %q", got, want)
	}
	if cfg.Config.WorkingDir != "/" {
		t.Errorf("WorkingDir = %q, want /", cfg.Config.WorkingDir)
	}

	files := layerFiles(t, httpd)
	for _, tt := range []struct {
		name     string
		typeflag byte
		mode     int64
		linkname string
		content  string
	}{
		{name: "bin/busybox", typeflag: tar.TypeReg, mode: 0o755},
		{name: "bin/sh", typeflag: tar.TypeSymlink, mode: 0o777, linkname: "busybox"},
		{name: "bin/httpd", typeflag: tar.TypeSymlink, mode: 0o777, linkname: "busybox"},
		{name: "usr/bin", typeflag: tar.TypeSymlink, mode: 0o777, linkname: "../bin"},
		{name: "sbin", typeflag: tar.TypeSymlink, mode: 0o777, linkname: "bin"},
		{name: "tmp/", typeflag: tar.TypeDir, mode: 0o1777},
		{name: "root/", typeflag: tar.TypeDir, mode: 0o700},
		{name: "etc/passwd", typeflag: tar.TypeReg, mode: 0o644, content: "nobody:x:65534:65534:"},
		{name: "www/index.html", typeflag: tar.TypeReg, mode: 0o644, content: "hello from cci"},
	} {
		f, ok := files[tt.name]
		if !ok {
			t.Errorf("layer lacks %s", tt.name)
			continue
		}
		if f.hdr.Typeflag != tt.typeflag || f.hdr.Mode != tt.mode || f.hdr.Linkname != tt.linkname {
			t.Errorf("%s: type %q mode %o link %q, want type %q mode %o link %q",
				tt.name, f.hdr.Typeflag, f.hdr.Mode, f.hdr.Linkname, tt.typeflag, tt.mode, tt.linkname)
		}
		if !strings.Contains(f.content, tt.content) {
			t.Errorf("%s = %q, want it to contain %q", tt.name, f.content, tt.content)
		}
	}

	shell := pull(t, refs[Shell])
	cfg, err = shell.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cfg.Config.Cmd, []string{"sh"}) {
		t.Errorf("shell Cmd = %q, want [sh]", cfg.Config.Cmd)
	}
	if _, ok := layerFiles(t, shell)["www/index.html"]; ok {
		t.Errorf("shell image has /www/index.html, want it only in %s", HTTPD)
	}
	if cfg.Config.StopSignal != "" {
		t.Errorf("shell StopSignal = %q, want none", cfg.Config.StopSignal)
	}

	cfg, err = pull(t, refs[StopSignal]).ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Config.StopSignal != "SIGUSR1" || !slices.Equal(cfg.Config.Cmd, StopSignalCmd) {
		t.Errorf("stopsignal StopSignal %q Cmd %q, want SIGUSR1 and %q", cfg.Config.StopSignal, cfg.Config.Cmd, StopSignalCmd)
	}

	// No shell in NoShell: only busybox and sleep.
	noShell := pull(t, refs[NoShell])
	files = layerFiles(t, noShell)
	if _, ok := files["bin/sleep"]; !ok {
		t.Errorf("noshell image lacks bin/sleep")
	}
	for _, sh := range []string{"bin/sh", "bin/ash", "bin/bash"} {
		if _, ok := files[sh]; ok {
			t.Errorf("noshell image has %s, want no shell", sh)
		}
	}
	if cfg, err = noShell.ConfigFile(); err != nil || !slices.Equal(cfg.Config.Cmd, []string{"sleep", "3600"}) {
		t.Errorf("noshell Cmd: %v %v, want [sleep 3600]", cfg, err)
	}

	// Building again gives the same digests.
	first := digests(t, refs)
	if _, err := Build(context.Background(), addr, DefaultBusybox); err != nil {
		t.Fatal(err)
	}
	if second := digests(t, refs); !maps.Equal(first, second) {
		t.Errorf("digests changed between builds: %v then %v", first, second)
	}
}

func TestBuildErrors(t *testing.T) {
	dir := t.TempDir()
	text := filepath.Join(dir, "busybox")
	if err := os.WriteFile(text, []byte("#!/bin/sh\necho not busybox\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	// Debian's /bin/ls needs libc, like a busybox from the busybox package.
	dynamic := "/bin/ls"

	tests := []struct {
		name     string
		registry string
		busybox  string
		wantErr  string
	}{
		{"missing busybox", "127.0.0.1:5000", filepath.Join(dir, "nope"), "install Debian's busybox-static package (apt-get install -y busybox-static)"},
		{"not an executable", "127.0.0.1:5000", text, "not an ELF executable"},
		{"dynamically linked", "127.0.0.1:5000", dynamic, "dynamically linked"},
		{"no registry", "", "", "registry address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Build(context.Background(), tt.registry, tt.busybox)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Build() error = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

// startRegistry runs a real registry on a temp dir until the test ends.
func startRegistry(t *testing.T) string {
	t.Helper()
	r, err := registry.New(context.Background(), registry.Config{Addr: "127.0.0.1:0", RootDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("registry Run() = %v", err)
		}
	})
	return r.Addr()
}

func pull(t *testing.T, ref string) v1.Image {
	t.Helper()
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(r)
	if err != nil {
		t.Fatalf("pull %s: %v", ref, err)
	}
	return img
}

func digests(t *testing.T, refs map[string]string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for short, ref := range refs {
		d, err := pull(t, ref).Digest()
		if err != nil {
			t.Fatal(err)
		}
		out[short] = d.String()
	}
	return out
}

type layerFile struct {
	hdr     *tar.Header
	content string
}

// layerFiles reads the image's single layer, keyed by entry name.
func layerFiles(t *testing.T, img v1.Image) map[string]layerFile {
	t.Helper()
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	if len(layers) != 1 {
		t.Fatalf("image has %d layers, want 1", len(layers))
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	files := map[string]layerFile{}
	tr := tar.NewReader(rc)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return files
		}
		if err != nil {
			t.Fatal(err)
		}
		var content string
		if hdr.Typeflag == tar.TypeReg && hdr.Size < 4096 {
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			content = string(b)
		}
		files[hdr.Name] = layerFile{hdr: hdr, content: content}
	}
}

// The grpchealth image is the busybox root plus the server binary it is
// given (here busybox itself stands in: any static binary will do), and
// builds reproducibly. A dynamically linked server is refused.
func TestBuildGRPCHealth(t *testing.T) {
	addr := startRegistry(t)
	ctx := context.Background()
	ref, err := BuildGRPCHealth(ctx, addr, "", DefaultBusybox)
	if err != nil {
		t.Fatal(err)
	}
	if ref != addr+"/"+GRPCHealth {
		t.Fatalf("ref %q", ref)
	}
	img := pull(t, ref)
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if got, want := cfg.Config.Cmd, []string{"/usr/local/bin/grpchealth", "-addr", ":9090", "-down", GRPCHealthDown}; !slices.Equal(got, want) {
		t.Errorf("Cmd = %q, want %q", got, want)
	}
	if _, ok := cfg.Config.ExposedPorts["9090/tcp"]; !ok {
		t.Errorf("ExposedPorts = %v, want 9090/tcp", cfg.Config.ExposedPorts)
	}
	files := layerFiles(t, img)
	if f, ok := files["usr/local/bin/grpchealth"]; !ok || f.hdr.Mode != 0o755 {
		t.Errorf("usr/local/bin/grpchealth: %+v (present %v)", f.hdr, ok)
	}
	if _, ok := files["bin/sh"]; !ok {
		t.Error("no busybox root (bin/sh) under the server")
	}
	first, _ := img.Digest()
	if _, err := BuildGRPCHealth(ctx, addr, "", DefaultBusybox); err != nil {
		t.Fatal(err)
	}
	second, _ := pull(t, ref).Digest()
	if first != second {
		t.Errorf("second build gave %s, first %s", second, first)
	}

	if _, err := BuildGRPCHealth(ctx, addr, "", "/bin/ls"); err == nil || !strings.Contains(err.Error(), "dynamically linked") {
		t.Errorf("dynamically linked server: err %v", err)
	}
}
