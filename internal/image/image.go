// Package image puts images into CCI's registry: it is the backend of
// `cci image import FILE`, which imports image archives, and of `cci image
// build-self`, which builds the image of cci itself (self.go: the binary
// and the shared libraries the dynamic loader needs, elf.go).
//
// Two archive formats are read, plain or gzipped:
//
//   - docker-archive, as written by `docker save` and `podman save`: a tar
//     with manifest.json naming each image's tags. Docker 25 and later write
//     an OCI layout alongside manifest.json; manifest.json wins, as it
//     carries full names.
//   - OCI image layout, as written by `skopeo copy oci-archive:` and
//     `podman save --format oci-archive`: a tar with oci-layout and
//     index.json, each image named by its org.opencontainers.image.ref.name
//     annotation (a full reference or just a tag) or containerd's
//     io.containerd.image.name.
//
// Every image keeps the repository path of its name and is pushed to the
// given registry instead of its original host, so docker.io/library/nginx:1.27
// becomes <registry>/library/nginx:1.27.
package image

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/match"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// Annotations naming an image in an OCI layout's index.json.
const (
	// annotationRefName is the OCI annotation: a full reference (skopeo,
	// podman) or just a tag (containerd, Docker).
	annotationRefName = "org.opencontainers.image.ref.name"
	// annotationContainerdName is containerd's full image name; `ctr export`
	// and Docker write it beside a tag-only ref.name.
	annotationContainerdName = "io.containerd.image.name"
)

// expectedFormats ends the errors for files that are not image archives.
const expectedFormats = "expected a docker-archive tar (`docker save`, `podman save`) or an OCI image-layout tar (`skopeo copy oci-archive:`, `podman save --format oci-archive`), optionally gzipped"

// Import reads a docker-archive tar (as written by `docker save`/`podman
// save`, possibly several tags) or an OCI image-layout tar (as written by
// `skopeo copy oci-archive:` / `podman save --format oci-archive`; the tag
// comes from the `org.opencontainers.image.ref.name` annotation in
// index.json, a full reference or just a tag) and pushes every image in it to
// the registry at host:port `registry` (plain HTTP). Images without a usable
// name get the name given by `defaultName` (error if empty). It returns the
// references pushed, e.g. "127.0.0.1:5000/library/web:1". It authenticates
// with the credentials of the Docker config ($DOCKER_CONFIG), as `cci
// image` sets it to the operator's.
func Import(ctx context.Context, path, registry, defaultName string) ([]string, error) {
	if _, err := name.NewRegistry(registry, name.Insecure, name.StrictValidation); err != nil {
		return nil, fmt.Errorf("import %q: registry address %q: %w", path, registry, err)
	}
	// Holds a decompressed copy of a gzipped archive and the extracted OCI
	// layout, which the images read from until they are pushed.
	tmp, err := os.MkdirTemp("", "cci-image-import-")
	if err != nil {
		return nil, fmt.Errorf("import %q: %w", path, err)
	}
	defer os.RemoveAll(tmp)

	todo, err := load(ctx, path, tmp, registry, defaultName)
	if err != nil {
		return nil, fmt.Errorf("import %q: %w", path, err)
	}
	if err := remote.MultiWrite(todo, remote.WithContext(ctx), remote.WithAuthFromKeychain(authn.DefaultKeychain)); err != nil {
		return nil, fmt.Errorf("import %q: push to %s: %w", path, registry, err)
	}
	refs := make([]string, 0, len(todo))
	for ref := range todo {
		refs = append(refs, ref.String())
	}
	sort.Strings(refs)
	return refs, nil
}

// archive is an image archive opened for reading.
type archive struct {
	// tarPath is a plain (uncompressed) tar: the file itself or a
	// decompressed copy in tmp.
	tarPath string
	// entries holds every entry name, cleaned of "./" and "/" prefixes.
	entries map[string]bool
	tmp     string
}

func (a *archive) has(name string) bool { return a.entries[name] }

func (a *archive) opener() tarball.Opener {
	return func() (io.ReadCloser, error) { return os.Open(a.tarPath) }
}

// openArchive checks that file is a tar (decompressing it first if it is
// gzipped) and lists its entries.
func openArchive(ctx context.Context, file, tmp string) (*archive, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil {
		return nil, err
	} else if fi.IsDir() {
		return nil, fmt.Errorf("is a directory; %s", expectedFormats)
	}

	a := &archive{tarPath: file, entries: map[string]bool{}, tmp: tmp}
	br := bufio.NewReader(f)
	if magic, _ := br.Peek(2); bytes.Equal(magic, []byte{0x1f, 0x8b}) {
		// The tarball package reads the archive once per file it looks up,
		// so a gzipped archive is decompressed once, up front.
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("not a valid gzip file (%v); %s", err, expectedFormats)
		}
		a.tarPath = filepath.Join(tmp, "archive.tar")
		out, err := os.Create(a.tarPath)
		if err != nil {
			return nil, err
		}
		_, err = io.Copy(out, ctxReader{ctx, zr})
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return nil, fmt.Errorf("decompress: %w", err)
		}
	}

	tf, err := os.Open(a.tarPath)
	if err != nil {
		return nil, err
	}
	defer tf.Close()
	tr := tar.NewReader(tf)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			if len(a.entries) == 0 {
				return nil, fmt.Errorf("not a tar archive (%v); %s", err, expectedFormats)
			}
			return nil, fmt.Errorf("read tar archive: %w", err)
		}
		if isSparse(hdr) {
			// A sparse entry's holes read back as zeros: a few KiB can
			// declare terabytes, which extracting (or hashing, for a
			// layer) would write or read to the end. Image tools never
			// write sparse entries.
			return nil, fmt.Errorf("tar entry %q is a sparse file (%d bytes, mostly holes); image archives hold no sparse files: re-create the archive with `docker save` or `skopeo copy`", hdr.Name, hdr.Size)
		}
		a.entries[cleanEntry(hdr.Name)] = true
	}
	if len(a.entries) == 0 {
		return nil, fmt.Errorf("empty or not a tar archive; %s", expectedFormats)
	}
	return a, nil
}

// isSparse reports whether hdr is a GNU sparse file, old GNU format or PAX.
func isSparse(hdr *tar.Header) bool {
	if hdr.Typeflag == tar.TypeGNUSparse {
		return true
	}
	for k := range hdr.PAXRecords {
		if strings.HasPrefix(k, "GNU.sparse.") {
			return true
		}
	}
	return false
}

func cleanEntry(n string) string {
	return strings.TrimPrefix(path.Clean("/"+n), "/")
}

// ctxReader stops a long copy when ctx is cancelled.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (r ctxReader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	return r.r.Read(p)
}

// load reads the archive at file, using tmp for scratch files, and returns
// its images keyed by the reference each gets in registry.
func load(ctx context.Context, file, tmp, registry, defaultName string) (map[name.Reference]remote.Taggable, error) {
	a, err := openArchive(ctx, file, tmp)
	if err != nil {
		return nil, err
	}
	switch {
	case a.has("manifest.json"):
		return loadDockerArchive(a, registry, defaultName)
	case a.has("index.json"):
		return loadOCILayout(ctx, a, registry, defaultName)
	default:
		return nil, fmt.Errorf("tar archive has neither manifest.json (docker-archive) nor index.json (OCI image layout); %s", expectedFormats)
	}
}

// images collects what to push, refusing two images under one reference.
type images map[name.Reference]remote.Taggable

func (m images) add(ref name.Reference, t remote.Taggable) error {
	if _, dup := m[ref]; dup {
		return fmt.Errorf("two images in the archive are both named %q", ref.String())
	}
	m[ref] = t
	return nil
}

// loadDockerArchive reads a `docker save` archive: manifest.json lists each
// image's config, layers and tags.
func loadDockerArchive(a *archive, registry, defaultName string) (map[name.Reference]remote.Taggable, error) {
	m, err := tarball.LoadManifest(a.opener())
	if err != nil {
		return nil, fmt.Errorf("docker-archive: read manifest.json: %w", err)
	}
	if len(m) == 0 {
		return nil, errors.New("docker-archive: manifest.json lists no images")
	}
	todo := images{}
	for i, desc := range m {
		names := desc.RepoTags
		if len(names) == 0 {
			// tarball.Image can only pick an untagged image when it is alone.
			if len(m) > 1 {
				return nil, fmt.Errorf("docker-archive: image %d (config %s) has no tag; an untagged image can only be imported from a single-image archive", i, desc.Config)
			}
			if defaultName == "" {
				return nil, fmt.Errorf("docker-archive: image (config %s) has no tag; give a name to import it under", desc.Config)
			}
			names = []string{defaultName}
		}

		var img v1.Image
		for _, n := range names {
			ref, err := targetRef(registry, n)
			if err != nil {
				return nil, fmt.Errorf("docker-archive: image name %q: %w", n, err)
			}
			if img == nil {
				var tag *name.Tag
				if len(desc.RepoTags) > 0 {
					t, err := name.NewTag(n)
					if err != nil {
						return nil, fmt.Errorf("docker-archive: image name %q: %w", n, err)
					}
					tag = &t
				}
				img, err = tarball.Image(a.opener(), tag)
				if err != nil {
					return nil, fmt.Errorf("docker-archive: read image %q: %w", n, err)
				}
			}
			if err := todo.add(ref, img); err != nil {
				return nil, fmt.Errorf("docker-archive: %w", err)
			}
		}
	}
	return todo, nil
}

// loadOCILayout extracts an OCI image layout and reads every image or index
// that index.json names.
func loadOCILayout(ctx context.Context, a *archive, registry, defaultName string) (map[name.Reference]remote.Taggable, error) {
	dir := filepath.Join(a.tmp, "layout")
	if err := extractLayout(ctx, a.tarPath, dir); err != nil {
		return nil, fmt.Errorf("OCI layout: %w", err)
	}
	lp := layout.Path(dir)
	idx, err := lp.ImageIndex()
	if err != nil {
		return nil, fmt.Errorf("OCI layout: read index.json: %w", err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("OCI layout: read index.json: %w", err)
	}
	if len(im.Manifests) == 0 {
		return nil, errors.New("OCI layout: index.json lists no images")
	}

	todo := images{}
	for _, desc := range im.Manifests {
		n, err := layoutName(desc.Annotations, defaultName)
		if err != nil {
			return nil, fmt.Errorf("OCI layout: image %s: %w", desc.Digest, err)
		}
		ref, err := targetRef(registry, n)
		if err != nil {
			return nil, fmt.Errorf("OCI layout: image %s name %q: %w", desc.Digest, n, err)
		}
		var t remote.Taggable
		switch {
		case desc.MediaType.IsImage():
			t, err = idx.Image(desc.Digest)
		case desc.MediaType.IsIndex():
			t, err = completeIndex(lp, idx, desc.Digest)
		default:
			err = fmt.Errorf("unsupported media type %q", desc.MediaType)
		}
		if err != nil {
			return nil, fmt.Errorf("OCI layout: image %q (%s): %w", n, desc.Digest, err)
		}
		if err := todo.add(ref, t); err != nil {
			return nil, fmt.Errorf("OCI layout: %w", err)
		}
	}
	return todo, nil
}

// completeIndex returns the image index h with only the manifests whose
// blobs are in the layout. Exports of one platform (`ctr export`, Docker's
// containerd store) keep the full multi-platform index but only the local
// platform's blobs; the registry refuses an index whose manifests it does
// not have.
func completeIndex(lp layout.Path, idx v1.ImageIndex, h v1.Hash) (v1.ImageIndex, error) {
	ii, err := idx.ImageIndex(h)
	if err != nil {
		return nil, err
	}
	im, err := ii.IndexManifest()
	if err != nil {
		return nil, err
	}
	var missing []v1.Hash
	for _, m := range im.Manifests {
		if _, err := os.Stat(filepath.Join(string(lp), "blobs", m.Digest.Algorithm, m.Digest.Hex)); err != nil {
			missing = append(missing, m.Digest)
		}
	}
	switch {
	case len(missing) == 0:
		return ii, nil
	case len(missing) == len(im.Manifests):
		return nil, errors.New("none of the index's manifests are in the archive")
	default:
		return mutate.RemoveManifests(ii, match.Digests(missing...)), nil
	}
}

// layoutName is the name of an image in an OCI layout, from its index.json
// annotations or else defaultName.
func layoutName(annotations map[string]string, defaultName string) (string, error) {
	if n := annotations[annotationContainerdName]; n != "" {
		return n, nil
	}
	n := annotations[annotationRefName]
	if n != "" && strings.ContainsAny(n, "/:@") {
		return n, nil
	}
	if defaultName == "" {
		if n != "" {
			return "", fmt.Errorf("named only by tag %q; give a name to import it under", n)
		}
		return "", errors.New("has no name; give a name to import it under")
	}
	if n == "" {
		return defaultName, nil
	}
	// A bare ref.name is a tag for the default name's repository.
	def, err := name.ParseReference(defaultName)
	if err != nil {
		return "", fmt.Errorf("default name %q: %w", defaultName, err)
	}
	return def.Context().Name() + ":" + n, nil
}

// targetRef maps an image name to its reference in registry: same
// repository path and tag (or digest), registry host replaced.
func targetRef(registry, orig string) (name.Reference, error) {
	ref, err := name.ParseReference(orig)
	if err != nil {
		return nil, err
	}
	repo := registry + "/" + ref.Context().RepositoryStr()
	switch r := ref.(type) {
	case name.Digest:
		return name.NewDigest(repo+"@"+r.DigestStr(), name.Insecure)
	default:
		return name.NewTag(repo+":"+ref.Identifier(), name.Insecure)
	}
}

// extractLayout extracts the parts of an OCI image layout (oci-layout,
// index.json, blobs/) from the tar at tarPath into dir. Only regular files
// and directories are written, and only inside dir. What it writes is
// bounded by the tar's own size, which a tar without sparse entries cannot
// exceed, so that no archive can make it fill the disk.
func extractLayout(ctx context.Context, tarPath, dir string) error {
	f, err := os.Open(tarPath)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	budget := fi.Size()
	tr := tar.NewReader(f)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read tar archive: %w", err)
		}
		n := cleanEntry(hdr.Name)
		if n != "oci-layout" && n != "index.json" && !strings.HasPrefix(n, "blobs/") {
			continue
		}
		dst := filepath.Join(dir, filepath.FromSlash(n))
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(dst, 0o755); err != nil {
				return err
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
				return err
			}
			written, err := writeFile(dst, io.LimitReader(ctxReader{ctx, tr}, budget+1))
			if err != nil {
				return fmt.Errorf("extract %q: %w", n, err)
			}
			if budget -= written; budget < 0 {
				return fmt.Errorf("extract %q: the archive's entries hold more data than its %d bytes; the archive is corrupt, re-create it", n, fi.Size())
			}
		}
	}
}

func writeFile(dst string, r io.Reader) (int64, error) {
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return 0, err
	}
	n, err := io.Copy(out, r)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	return n, err
}
