package image

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// FuzzLoad feeds malformed archives (seeds: testdata/import, valid ones
// among them) to the import path up to the push: load must refuse or
// return images whose manifest, config and layers read back, never panic.
func FuzzLoad(f *testing.F) {
	files, err := filepath.Glob(filepath.Join("testdata", "import", "*"))
	if err != nil || len(files) == 0 {
		f.Fatalf("no seed archives in testdata/import: %v", err)
	}
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		dir := t.TempDir()
		file := filepath.Join(dir, "in.tar")
		if err := os.WriteFile(file, raw, 0o600); err != nil {
			t.Fatal(err)
		}
		tmp := filepath.Join(dir, "tmp")
		if err := os.Mkdir(tmp, 0o700); err != nil {
			t.Fatal(err)
		}
		todo, err := load(context.Background(), file, tmp, reg, "fuzz/default:1")
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error")
			}
			return
		}
		for ref, tg := range todo {
			img, ok := tg.(v1.Image)
			if !ok {
				continue
			}
			// What a push reads; errors are fine, panics are not.
			if _, err := img.Manifest(); err != nil {
				continue
			}
			_, _ = img.ConfigFile()
			layers, err := img.Layers()
			if err != nil {
				continue
			}
			for _, l := range layers {
				_, _ = l.Digest()
				if rc, err := l.Compressed(); err == nil {
					_, _ = io.Copy(io.Discard, io.LimitReader(rc, 1<<20))
					rc.Close()
				}
			}
			_ = ref.String()
		}
	})
}
