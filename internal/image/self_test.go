package image

import (
	"archive/tar"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

func TestSelfName(t *testing.T) {
	for _, tt := range []struct{ version, want string }{
		{"dev", "cci/cci:dev"},
		{"v0.3.1", "cci/cci:v0.3.1"},
		{"4138bca-dirty", "cci/cci:4138bca-dirty"},
		{"v1.0.0+meta/x", "cci/cci:v1.0.0-meta-x"},
		{".hidden", "cci/cci:v.hidden"},
		{"", "cci/cci:v"},
	} {
		got := SelfName(tt.version)
		if got != tt.want {
			t.Errorf("SelfName(%q) = %q, want %q", tt.version, got, tt.want)
		}
		if _, err := name.NewTag(got); err != nil {
			t.Errorf("SelfName(%q) = %q, not a valid tag: %v", tt.version, got, err)
		}
	}
}

// dynamicProgram returns p when it is a dynamically linked ELF program,
// and skips the test otherwise.
func dynamicProgram(t *testing.T, p string) string {
	t.Helper()
	info, err := readELF(p)
	if err != nil {
		t.Skipf("%s: %v", p, err)
	}
	if info.interp == "" {
		t.Skipf("%s is statically linked", p)
	}
	return p
}

func TestRuntimeFilesStatic(t *testing.T) {
	const busybox = "/bin/busybox" // Debian's busybox-static, which test images need anyway
	info, err := readELF(busybox)
	if err != nil || info.interp != "" {
		t.Skipf("no static %s here", busybox)
	}
	files, err := runtimeFiles(busybox, nil)
	if err != nil || len(files) != 0 {
		t.Fatalf("runtimeFiles(%s) = %v, %v; want nothing for a static program", busybox, files, err)
	}
}

func TestRuntimeFilesNotFound(t *testing.T) {
	prog := dynamicProgram(t, "/bin/ls")
	info, err := readELF(prog)
	if err != nil || len(info.needed) == 0 {
		t.Fatalf("readELF(%s) = %+v, %v; want DT_NEEDED entries", prog, info, err)
	}
	empty := t.TempDir()
	_, err = runtimeFiles(prog, []string{empty})
	if err == nil {
		t.Fatal("runtimeFiles with an empty library dir succeeded")
	}
	for _, want := range []string{info.needed[0], empty, prog} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %q", err, want)
		}
	}
}

// TestBuildSelf builds the image of dynamically linked programs, pushes it
// to a real registry and checks what a pull gives: the entrypoint, a layer
// with the interpreter and every DT_NEEDED library (checked again from the
// extracted files, not from what BuildSelf says), and, as root, that the
// program runs chrooted in the extracted layer: nothing is missing.
func TestBuildSelf(t *testing.T) {
	addr := startRegistry(t)
	testBinary, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name, program string
		args          []string
		want          string // in the output of the program run in the image
	}{
		// ls needs libselinux, which needs libpcre2: libraries of libraries.
		{"ls", "/bin/ls", []string{"-d", "/tmp"}, "/tmp\n"},
		// A Go program linked against glibc, as cci is.
		{"go-test-binary", testBinary, []string{"-test.run=^$"}, "PASS"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			prog := dynamicProgram(t, tt.program)
			ctx := context.Background()
			built, err := BuildSelf(ctx, SelfOptions{Binary: prog, Name: "test/" + tt.name + ":1", Registry: addr})
			if err != nil {
				t.Fatal(err)
			}
			if want := addr + "/test/" + tt.name + ":1"; built.Ref != want {
				t.Errorf("Ref = %q, want %q", built.Ref, want)
			}
			ref, err := name.NewTag(built.Ref, name.Insecure)
			if err != nil {
				t.Fatal(err)
			}
			img, err := remote.Image(ref)
			if err != nil {
				t.Fatalf("pull %s: %v", ref, err)
			}
			if d, _ := img.Digest(); d.String() != built.Digest {
				t.Errorf("pulled digest %s, BuildSelf said %s", d, built.Digest)
			}
			cfg, err := img.ConfigFile()
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(cfg.Config.Entrypoint, []string{SelfBinary}) || cfg.OS != "linux" || cfg.Architecture != runtime.GOARCH {
				t.Errorf("config: entrypoint %q, platform %s/%s; want [%s] on linux/%s", cfg.Config.Entrypoint, cfg.OS, cfg.Architecture, SelfBinary, runtime.GOARCH)
			}

			root := t.TempDir()
			extractImage(t, img, root)
			fi, err := os.Stat(filepath.Join(root, "tmp"))
			if err != nil || !fi.IsDir() || fi.Mode()&os.ModeSticky == 0 {
				t.Errorf("/tmp in the image: %v, %v; want a sticky directory", fi, err)
			}
			checkLoadable(t, root)
			if len(built.Loader) < 2 {
				t.Errorf("Loader = %q, want the interpreter and libc at least", built.Loader)
			}

			// The same program gives the same image: an archive written
			// with --output holds the pushed image's config and layer (a
			// docker-archive's manifest is Docker's, so its digest differs).
			out := filepath.Join(t.TempDir(), "image.tar")
			again, err := BuildSelf(ctx, SelfOptions{Binary: prog, Name: "test/" + tt.name + ":1", Output: out})
			if err != nil {
				t.Fatal(err)
			}
			fromFile, err := tarball.ImageFromPath(out, nil)
			if err != nil {
				t.Fatalf("read the --output archive: %v", err)
			}
			if again.Digest != built.Digest {
				t.Errorf("built twice: digests %s and %s, want one", built.Digest, again.Digest)
			}
			if got, want := imageIDs(t, fromFile), imageIDs(t, img); !slices.Equal(got, want) {
				t.Errorf("archive's config and layer %q, pushed %q", got, want)
			}

			if os.Geteuid() != 0 {
				t.Skip("running the image's program chrooted needs root")
			}
			cmd := exec.Command(SelfBinary, tt.args...)
			cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: root}
			cmd.Dir = "/"
			cmd.Env = []string{"PATH=" + selfPath}
			b, err := cmd.CombinedOutput()
			if err != nil || !strings.Contains(string(b), tt.want) {
				t.Fatalf("%s %q chrooted in the image: %v\n%s\nwant %q in the output", SelfBinary, tt.args, err, b, tt.want)
			}
		})
	}
}

// imageIDs are the digests of img's config and layers.
func imageIDs(t *testing.T, img v1.Image) []string {
	t.Helper()
	c, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	ids := []string{c.String()}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range layers {
		d, err := l.Digest()
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, d.String())
	}
	return ids
}

// extractImage writes the directories and regular files of img's layers
// under root.
func extractImage(t *testing.T, img v1.Image, root string) {
	t.Helper()
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range layers {
		rc, err := l.Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		tr := tar.NewReader(rc)
		for {
			hdr, err := tr.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			dst := filepath.Join(root, filepath.FromSlash(path.Clean("/"+hdr.Name)))
			switch hdr.Typeflag {
			case tar.TypeDir:
				if err := os.MkdirAll(dst, 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.Chmod(dst, os.FileMode(hdr.Mode&0o777)|modeBits(hdr.Mode)); err != nil {
					t.Fatal(err)
				}
			case tar.TypeReg:
				f, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_EXCL, os.FileMode(hdr.Mode&0o777))
				if err != nil {
					t.Fatal(err)
				}
				_, err = io.Copy(f, tr)
				if cerr := f.Close(); err == nil {
					err = cerr
				}
				if err != nil {
					t.Fatal(err)
				}
			default:
				t.Errorf("layer entry %q has type %q; the image holds only directories and regular files", hdr.Name, hdr.Typeflag)
			}
		}
		rc.Close()
	}
}

func modeBits(m int64) os.FileMode {
	if m&0o1000 != 0 {
		return os.ModeSticky
	}
	return 0
}

// checkLoadable checks, from the files under root alone, that the program
// at SelfBinary has its interpreter and that every DT_NEEDED entry of it
// and of every library it loads is a file in one of the loader's
// directories, or the interpreter's own soname.
func checkLoadable(t *testing.T, root string) {
	t.Helper()
	prog, err := readELF(filepath.Join(root, SelfBinary))
	if err != nil {
		t.Fatalf("%s in the image: %v", SelfBinary, err)
	}
	interp, err := readELF(filepath.Join(root, prog.interp))
	if err != nil {
		t.Fatalf("interpreter %s in the image: %v", prog.interp, err)
	}
	dirs := LibraryDirs(prog.machine)
	seen := map[string]bool{}
	queue := []string{SelfBinary}
	for len(queue) > 0 {
		file := queue[0]
		queue = queue[1:]
		info, err := readELF(filepath.Join(root, file))
		if err != nil {
			t.Fatalf("%s in the image: %v", file, err)
		}
		for _, lib := range info.needed {
			if lib == interp.soname || seen[lib] {
				continue
			}
			found := ""
			for _, d := range dirs {
				if fi, err := os.Stat(filepath.Join(root, d, lib)); err == nil && fi.Mode().IsRegular() {
					found = path.Join(d, lib)
					break
				}
			}
			if found == "" {
				t.Errorf("%s needs %s: not in the image's %v", file, lib, dirs)
				continue
			}
			seen[lib] = true
			queue = append(queue, found)
		}
	}
	if len(seen) == 0 {
		t.Errorf("%s in the image needs no library: want a dynamically linked test program", SelfBinary)
	}
}
