package image

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/cci-project/cci/internal/registry"
)

const reg = "127.0.0.1:5000"

func TestTargetRef(t *testing.T) {
	tests := []struct{ in, want string }{
		{"docker.io/library/nginx:1.27", reg + "/library/nginx:1.27"},
		{"nginx", reg + "/library/nginx:latest"},
		{"team/app:v2", reg + "/team/app:v2"},
		{"quay.io/team/app:v2", reg + "/team/app:v2"},
		{"localhost/podman-built:latest", reg + "/podman-built:latest"},
		{"127.0.0.1:9999/x/y:1", reg + "/x/y:1"},
		{"ghcr.io/a/b/c@sha256:" + strings.Repeat("a", 64), reg + "/a/b/c@sha256:" + strings.Repeat("a", 64)},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := targetRef(reg, tt.in)
			if err != nil {
				t.Fatal(err)
			}
			if got.String() != tt.want {
				t.Errorf("targetRef(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestLayoutName(t *testing.T) {
	tests := []struct {
		name        string
		annotations map[string]string
		defaultName string
		want        string
		wantErr     string
	}{
		{name: "full ref.name", annotations: map[string]string{annotationRefName: "docker.io/library/nginx:1.27"}, want: "docker.io/library/nginx:1.27"},
		{name: "short ref.name with tag", annotations: map[string]string{annotationRefName: "nginx:1.27"}, want: "nginx:1.27"},
		{name: "tag-only ref.name", annotations: map[string]string{annotationRefName: "v2"}, defaultName: "team/app:ignored", want: "index.docker.io/team/app:v2"},
		{name: "tag-only ref.name without default", annotations: map[string]string{annotationRefName: "v2"}, wantErr: `named only by tag "v2"`},
		{name: "containerd name wins", annotations: map[string]string{annotationRefName: "1", annotationContainerdName: "docker.io/library/busybox:1"}, want: "docker.io/library/busybox:1"},
		{name: "no annotations", defaultName: "web:1", want: "web:1"},
		{name: "no annotations without default", wantErr: "has no name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := layoutName(tt.annotations, tt.defaultName)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("layoutName() error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("layoutName() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestImportDockerArchive(t *testing.T) {
	addr := startRegistry(t)
	web := randomImage(t)
	api := randomImage(t)
	file := filepath.Join(t.TempDir(), "images.tar")
	if err := tarball.MultiRefWriteToFile(file, map[name.Reference]v1.Image{
		mustTag(t, "docker.io/library/web:1"):      web,
		mustTag(t, "docker.io/library/web:latest"): web,
		mustTag(t, "quay.io/team/api:2"):           api,
	}); err != nil {
		t.Fatal(err)
	}

	for _, tt := range []struct {
		name string
		file string
	}{
		{"plain", file},
		{"gzipped", gzipFile(t, file)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Import(context.Background(), tt.file, addr, "")
			if err != nil {
				t.Fatal(err)
			}
			want := map[string]v1.Image{
				addr + "/library/web:1":      web,
				addr + "/library/web:latest": web,
				addr + "/team/api:2":         api,
			}
			assertPushed(t, got, want)
		})
	}
}

func TestImportUntaggedDockerArchive(t *testing.T) {
	addr := startRegistry(t)
	img := randomImage(t)
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	// A digest reference makes the tarball package write no RepoTags, like
	// `docker save IMAGE-ID`.
	ref, err := name.NewDigest("example.com/untagged@" + d.String())
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "untagged.tar")
	if err := tarball.MultiRefWriteToFile(file, map[name.Reference]v1.Image{ref: img}); err != nil {
		t.Fatal(err)
	}

	if _, err := Import(context.Background(), file, addr, ""); err == nil || !strings.Contains(err.Error(), "has no tag; give a name") {
		t.Fatalf("Import() without a default name: error = %v, want one asking for a name", err)
	}
	got, err := Import(context.Background(), file, addr, "web:1")
	if err != nil {
		t.Fatal(err)
	}
	assertPushed(t, got, map[string]v1.Image{addr + "/library/web:1": img})
}

func TestImportOCILayout(t *testing.T) {
	addr := startRegistry(t)
	dir := t.TempDir()
	lp, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	nginx := randomImage(t)
	app := randomImage(t)
	if err := lp.AppendImage(nginx, layout.WithAnnotations(map[string]string{annotationRefName: "docker.io/library/nginx:1.27"})); err != nil {
		t.Fatal(err)
	}
	if err := lp.AppendImage(app, layout.WithAnnotations(map[string]string{annotationRefName: "v2"})); err != nil {
		t.Fatal(err)
	}
	multi, err := random.Index(256, 1, 2)
	if err != nil {
		t.Fatal(err)
	}
	if err := lp.AppendIndex(multi, layout.WithAnnotations(map[string]string{annotationRefName: "multi:1"})); err != nil {
		t.Fatal(err)
	}
	// An index with one of its two images left out, as single-platform
	// exports write it: the pushed index lists only the image present.
	partial, err := random.Index(256, 1, 2)
	if err != nil {
		t.Fatal(err)
	}
	if err := lp.AppendIndex(partial, layout.WithAnnotations(map[string]string{
		annotationRefName:        "1",
		annotationContainerdName: "docker.io/library/partial:1",
	})); err != nil {
		t.Fatal(err)
	}
	pm, err := partial.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if err := lp.RemoveBlob(pm.Manifests[1].Digest); err != nil {
		t.Fatal(err)
	}

	file := tarDir(t, dir)
	got, err := Import(context.Background(), file, addr, "team/app")
	if err != nil {
		t.Fatal(err)
	}
	assertPushed(t, got, map[string]v1.Image{
		addr + "/library/nginx:1.27": nginx,
		addr + "/team/app:v2":        app,
	}, addr+"/library/multi:1", addr+"/library/partial:1")

	idx, err := remote.Index(mustRef(t, addr+"/library/multi:1"))
	if err != nil {
		t.Fatal(err)
	}
	assertSameDigest(t, "multi:1", idx, multi)
	idx, err = remote.Index(mustRef(t, addr+"/library/partial:1"))
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 1 || im.Manifests[0].Digest != pm.Manifests[0].Digest {
		t.Errorf("pushed partial index lists %v, want only %s", im.Manifests, pm.Manifests[0].Digest)
	}
}

func TestImportRejectsNonArchives(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	textFile := write("notes.txt", []byte(strings.Repeat("not an image\n", 100)))
	emptyFile := write("empty.tar", nil)
	otherTar := tarFiles(t, filepath.Join(dir, "other.tar"), map[string]string{"hello.txt": "hi"})
	noConfig := tarFiles(t, filepath.Join(dir, "noconfig.tar"), map[string]string{
		"manifest.json": `[{"Config":"missing.json","RepoTags":["web:1"],"Layers":["layer.tar"]}]`,
	})
	badManifest := tarFiles(t, filepath.Join(dir, "badmanifest.tar"), map[string]string{"manifest.json": "{"})
	emptyIndex := tarFiles(t, filepath.Join(dir, "emptyindex.tar"), map[string]string{
		"oci-layout": `{"imageLayoutVersion":"1.0.0"}`,
		"index.json": `{"schemaVersion":2,"manifests":[]}`,
	})
	badGzip := write("bad.tar.gz", []byte{0x1f, 0x8b, 0, 0, 1, 2, 3})

	tests := []struct {
		name    string
		path    string
		wantErr string
	}{
		{"missing file", filepath.Join(dir, "nope.tar"), "no such file"},
		{"directory", dir, "is a directory; expected a docker-archive tar"},
		{"text file", textFile, "not a tar archive"},
		{"gzipped text file", gzipFile(t, textFile), "not a tar archive"},
		{"broken gzip", badGzip, "not a valid gzip file"},
		{"empty file", emptyFile, "empty or not a tar archive"},
		{"tar of something else", otherTar, "neither manifest.json (docker-archive) nor index.json (OCI image layout)"},
		{"docker-archive missing its config", noConfig, "docker-archive: read image"},
		{"docker-archive with broken manifest.json", badManifest, "docker-archive: read manifest.json"},
		{"OCI layout without images", emptyIndex, "index.json lists no images"},
		// Hand-made (archive/tar cannot write sparse entries): one data
		// byte and 100 TB of holes, as index.json (PAX sparse 1.0) and as
		// a layer (old GNU sparse). Before the check, extracting the
		// first filled the disk and hashing the second never ended.
		{"OCI layout with a sparse index.json", filepath.Join("testdata", "import", "sparse-index-oci-layout.tar"), `tar entry "index.json" is a sparse file`},
		{"docker-archive with a sparse layer", filepath.Join("testdata", "import", "sparse-layer-docker-archive.tar"), `tar entry "layer.tar" is a sparse file`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// No registry is needed: every case fails before pushing.
			_, err := Import(context.Background(), tt.path, reg, "fallback:1")
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Import() error = %v, want one containing %q", err, tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.path) {
				t.Errorf("Import() error = %v, want it to name the file", err)
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

// assertPushed checks that Import returned exactly the images in want plus
// the references in others, and that each image pulls back unchanged.
func assertPushed(t *testing.T, got []string, want map[string]v1.Image, others ...string) {
	t.Helper()
	wantRefs := append([]string(nil), others...)
	for ref := range want {
		wantRefs = append(wantRefs, ref)
	}
	slices.Sort(wantRefs)
	if !slices.Equal(got, wantRefs) {
		t.Fatalf("Import() = %q, want %q", got, wantRefs)
	}
	for ref, img := range want {
		pulled, err := remote.Image(mustRef(t, ref))
		if err != nil {
			t.Fatalf("pull %s: %v", ref, err)
		}
		assertSameDigest(t, ref, pulled, img)
	}
}

type digester interface{ Digest() (v1.Hash, error) }

func assertSameDigest(t *testing.T, what string, got, want digester) {
	t.Helper()
	g, err := got.Digest()
	if err != nil {
		t.Fatal(err)
	}
	w, err := want.Digest()
	if err != nil {
		t.Fatal(err)
	}
	if g != w {
		t.Errorf("%s: pulled digest %s, want %s", what, g, w)
	}
}

func randomImage(t *testing.T) v1.Image {
	t.Helper()
	img, err := random.Image(512, 2)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func mustTag(t *testing.T, s string) name.Tag {
	t.Helper()
	tag, err := name.NewTag(s)
	if err != nil {
		t.Fatal(err)
	}
	return tag
}

func mustRef(t *testing.T, s string) name.Reference {
	t.Helper()
	ref, err := name.ParseReference(s, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	return ref
}

// gzipFile writes a gzipped copy of src beside it.
func gzipFile(t *testing.T, src string) string {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	dst := src + ".gz"
	out, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	zw := gzip.NewWriter(out)
	if _, err := io.Copy(zw, in); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	return dst
}

// tarDir tars the folder dir the way `skopeo copy oci-archive:` does:
// entries relative to the layout's root.
func tarDir(t *testing.T, dir string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "layout.tar")
	out, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	tw := tar.NewWriter(out)
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		hdr, err := tar.FileInfoHeader(info, "")
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		hdr.Name = filepath.ToSlash(rel)
		if d.IsDir() {
			hdr.Name += "/"
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.Copy(tw, f)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return dst
}

// tarFiles writes a tar at dst holding files (name to content).
func tarFiles(t *testing.T, dst string, files map[string]string) string {
	t.Helper()
	out, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	tw := tar.NewWriter(out)
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		if err := tw.WriteHeader(&tar.Header{Name: n, Mode: 0o644, Size: int64(len(files[n])), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(tw, files[n]); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return dst
}

// TestExtractLayoutBoundedByArchiveSize bypasses openArchive's refusal of
// sparse entries: extraction itself must stop once it has written as much
// as the archive holds, whatever an entry claims.
func TestExtractLayoutBoundedByArchiveSize(t *testing.T) {
	src := filepath.Join("testdata", "import", "sparse-index-oci-layout.tar")
	fi, err := os.Stat(src)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	err = extractLayout(context.Background(), src, dir)
	if err == nil || !strings.Contains(err.Error(), "entries hold more data than its") {
		t.Fatalf("extractLayout() error = %v, want the archive-size bound", err)
	}
	written, err := os.Stat(filepath.Join(dir, "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	if written.Size() > fi.Size()+1 {
		t.Errorf("extracted index.json has %d bytes, more than the %d-byte archive", written.Size(), fi.Size())
	}
}
