package image

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"regexp"
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
)

// SelfBinary is where the program lies in an image of BuildSelf, and the
// image's entrypoint.
const SelfBinary = "/usr/local/bin/cci"

// caBundle is the CA bundle of Debian (and of Go's crypto/x509 first
// guess). `cci connect` trusts the CAs its kubeconfigs carry; the bundle
// is there for a kubeconfig that names none (a server with a certificate
// of a public CA).
const caBundle = "/etc/ssl/certs/ca-certificates.crt"

// selfPath is PATH in the image, as in Debian's images.
const selfPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// selfEpoch is every file's and the image's time: the same binary gives
// the same digests.
var selfEpoch = time.Unix(0, 0).UTC()

// SelfOptions says what BuildSelf builds and where it goes.
type SelfOptions struct {
	// Binary is the program to put in the image. Default: this process's
	// executable.
	Binary string
	// Name is the image's repository:tag, e.g. cci/cci:v1.2.
	Name string
	// Registry (host:port, plain HTTP) is where the image is pushed, under
	// Name's repository path. Ignored when Output is set.
	Registry string
	// Output, when set, is a docker-archive tar file to write the image to
	// instead of pushing it (`docker load`, `cci image import`, `skopeo copy
	// docker-archive:` read it).
	Output string
	// LibraryDirs are searched for the libraries the program needs.
	// Default: LibraryDirs of the program's machine.
	LibraryDirs []string
}

// SelfImage is what BuildSelf built.
type SelfImage struct {
	// Ref is the reference pushed (registry/repository:tag), or with
	// Output the name in the archive.
	Ref string
	// Digest is the image manifest's digest.
	Digest string
	// Loader lists the files the dynamic loader needs, by their path in
	// the image: the interpreter and every library, recursively. Empty for
	// a static program.
	Loader []string
	// Size is the layer's size, uncompressed; CompressedSize gzipped, what
	// a pull fetches.
	Size, CompressedSize int64
}

// SelfName is the default name of the image of cci: cci/cci:<version>,
// the version made a valid tag.
func SelfName(version string) string {
	tag := regexp.MustCompile(`[^A-Za-z0-9_.-]`).ReplaceAllString(version, "-")
	if tag == "" || strings.ContainsAny(tag[:1], ".-") {
		tag = "v" + tag
	}
	if len(tag) > 128 {
		tag = tag[:128]
	}
	return "cci/cci:" + tag
}

// BuildSelf builds an OCI image of a dynamically linked program (cci
// itself by default) with no base image: one layer holding the program at
// SelfBinary, its program interpreter and shared libraries taken from this
// machine (found as the dynamic loader finds them), /tmp, /etc/passwd and
// /etc/group, and this machine's CA bundle where it has one. The image runs
// the program as its entrypoint. It is pushed to o.Registry with the
// credentials of the Docker config ($DOCKER_CONFIG; `cci image` sets the
// operator's), or written to o.Output.
func BuildSelf(ctx context.Context, o SelfOptions) (*SelfImage, error) {
	if o.Binary == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("build image: find this program's executable: %w", err)
		}
		o.Binary = exe
	}
	if o.Name == "" {
		return nil, errors.New("build image: no name given")
	}
	var ref name.Reference
	var err error
	if o.Output == "" {
		if _, err := name.NewRegistry(o.Registry, name.Insecure, name.StrictValidation); err != nil {
			return nil, fmt.Errorf("build image: registry address %q: %w", o.Registry, err)
		}
		ref, err = targetRef(o.Registry, o.Name)
	} else {
		ref, err = name.NewTag(o.Name)
	}
	if err != nil {
		return nil, fmt.Errorf("build image: name %q (want repository:tag, e.g. cci/cci:v1): %w", o.Name, err)
	}
	if _, ok := ref.(name.Tag); !ok {
		return nil, fmt.Errorf("build image: name %q is a digest; give repository:tag", o.Name)
	}

	img, built, cleanup, err := selfImage(ctx, o)
	if err != nil {
		return nil, fmt.Errorf("build image of %q: %w", o.Binary, err)
	}
	defer cleanup()
	d, err := img.Digest()
	if err != nil {
		return nil, fmt.Errorf("build image of %q: %w", o.Binary, err)
	}
	built.Digest = d.String()
	built.Ref = ref.String()
	if o.Output != "" {
		if err := tarball.WriteToFile(o.Output, ref, img); err != nil {
			return nil, fmt.Errorf("write image %q to %q: %w", ref, o.Output, err)
		}
		return built, nil
	}
	if err := remote.Write(ref, img, remote.WithContext(ctx), remote.WithAuthFromKeychain(authn.DefaultKeychain)); err != nil {
		return nil, fmt.Errorf("push image %q to %s: %w", ref, o.Registry, err)
	}
	return built, nil
}

// selfImage builds the image. Its layer is a gzipped tar in a temporary
// file (the program is hundreds of MiB: it is compressed once, and read
// from there to hash and to push) that cleanup removes.
func selfImage(ctx context.Context, o SelfOptions) (v1.Image, *SelfImage, func(), error) {
	f, err := elf.Open(o.Binary)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("not an ELF program: %w", err)
	}
	arch, err := GoArch(f.Machine, f.Data)
	f.Close()
	if err != nil {
		return nil, nil, nil, err
	}
	libs, err := runtimeFiles(o.Binary, o.LibraryDirs)
	if err != nil {
		return nil, nil, nil, err
	}
	built := &SelfImage{}
	es := []selfEntry{
		{name: "dev", mode: fs.ModeDir | 0o755},
		{name: "etc", mode: fs.ModeDir | 0o755},
		{name: "etc/group", mode: 0o644, data: []byte("root:x:0:\nnobody:x:65534:\n")},
		{name: "etc/passwd", mode: 0o644, data: []byte("root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n")},
		{name: "proc", mode: fs.ModeDir | 0o755},
		{name: "root", mode: fs.ModeDir | 0o700},
		{name: "sys", mode: fs.ModeDir | 0o755},
		{name: "tmp", mode: fs.ModeDir | fs.ModeSticky | 0o777},
		{name: strings.TrimPrefix(SelfBinary, "/"), mode: 0o755, source: o.Binary},
	}
	if fi, err := os.Stat(caBundle); err == nil && fi.Mode().IsRegular() {
		es = append(es, selfEntry{name: strings.TrimPrefix(caBundle, "/"), mode: 0o644, source: caBundle})
	}
	for _, l := range libs {
		es = append(es, selfEntry{name: strings.TrimPrefix(l.name, "/"), mode: 0o755, source: l.source})
		built.Loader = append(built.Loader, l.name)
	}

	tmp, err := os.CreateTemp("", "cci-image-layer-*.tar.gz")
	if err != nil {
		return nil, nil, nil, err
	}
	cleanup := func() { os.Remove(tmp.Name()) }
	built.Size, err = writeLayer(ctx, tmp, es)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		cleanup()
		return nil, nil, nil, fmt.Errorf("write the layer: %w", err)
	}
	layer, err := tarball.LayerFromFile(tmp.Name(), tarball.WithMediaType(types.OCILayer))
	if err == nil {
		built.CompressedSize, err = layer.Size()
	}
	if err != nil {
		cleanup()
		return nil, nil, nil, fmt.Errorf("read the layer back: %w", err)
	}

	base := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	base = mutate.ConfigMediaType(base, types.OCIConfigJSON)
	img, err := mutate.Append(base, mutate.Addendum{
		Layer:     layer,
		MediaType: types.OCILayer,
		History:   v1.History{Created: v1.Time{Time: selfEpoch}, CreatedBy: "cci image build-self: " + path.Base(o.Binary) + " and its shared libraries"},
	})
	if err == nil {
		var cfg *v1.ConfigFile
		if cfg, err = img.ConfigFile(); err == nil {
			cfg = cfg.DeepCopy()
			cfg.Created = v1.Time{Time: selfEpoch}
			cfg.OS = "linux"
			cfg.Architecture = arch
			cfg.Config.Entrypoint = []string{SelfBinary}
			cfg.Config.Env = []string{"PATH=" + selfPath}
			cfg.Config.WorkingDir = "/"
			img, err = mutate.ConfigFile(img, cfg)
		}
	}
	if err != nil {
		cleanup()
		return nil, nil, nil, err
	}
	return img, built, cleanup, nil
}

// selfEntry is one file of the layer: data, or the file source of this
// machine, or (mode with fs.ModeDir) a directory.
type selfEntry struct {
	name   string // relative, no trailing slash
	mode   fs.FileMode
	data   []byte
	source string
}

// writeLayer writes es and the directories above them as a gzipped tar to
// w, sorted by name, owned by root and dated selfEpoch. It returns the
// size of the tar, uncompressed.
func writeLayer(ctx context.Context, w io.Writer, es []selfEntry) (int64, error) {
	byName := map[string]selfEntry{}
	for _, e := range es {
		if _, dup := byName[e.name]; dup {
			return 0, fmt.Errorf("two files for %q", e.name)
		}
		byName[e.name] = e
		for d := path.Dir(e.name); d != "."; d = path.Dir(d) {
			if _, ok := byName[d]; !ok {
				byName[d] = selfEntry{name: d, mode: fs.ModeDir | 0o755}
			}
		}
	}
	names := make([]string, 0, len(byName))
	for n := range byName {
		names = append(names, n)
	}
	// Parents sort before their children.
	sort.Strings(names)

	zw, err := gzip.NewWriterLevel(w, gzip.BestSpeed)
	if err != nil {
		return 0, err
	}
	counter := &countWriter{w: zw}
	tw := tar.NewWriter(counter)
	for _, n := range names {
		e := byName[n]
		hdr := &tar.Header{Name: n, Mode: int64(e.mode.Perm()), ModTime: selfEpoch, Format: tar.FormatPAX}
		if e.mode&fs.ModeSticky != 0 {
			hdr.Mode |= 0o1000
		}
		var src *os.File
		switch {
		case e.mode.IsDir():
			hdr.Typeflag, hdr.Name = tar.TypeDir, n+"/"
		case e.source != "":
			if src, err = os.Open(e.source); err != nil {
				return 0, err
			}
			fi, err := src.Stat()
			if err != nil {
				src.Close()
				return 0, err
			}
			if !fi.Mode().IsRegular() {
				src.Close()
				return 0, fmt.Errorf("%q (for /%s) is not a regular file", e.source, n)
			}
			hdr.Typeflag, hdr.Size = tar.TypeReg, fi.Size()
		default:
			hdr.Typeflag, hdr.Size = tar.TypeReg, int64(len(e.data))
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return 0, fmt.Errorf("/%s: %w", n, err)
		}
		if src != nil {
			_, err = io.Copy(tw, ctxReader{ctx, src})
			src.Close()
		} else {
			_, err = tw.Write(e.data)
		}
		if err != nil {
			return 0, fmt.Errorf("/%s: %w", n, err)
		}
	}
	if err := tw.Close(); err != nil {
		return 0, err
	}
	if err := zw.Close(); err != nil {
		return 0, err
	}
	return counter.n, nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
