package image

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// TestMain lowers the fuzzer's minimization time from Go's default of 60s
// unless -test.fuzzminimizetime is given. The fuzzer minimizes every input
// that finds new coverage before it goes on, and its byte-subset pass is
// quadratic in the input's length: seeds here are tars of several KiB, so
// each minimization ran the full 60s, which looked like a hang after a few
// executions ("execs: 6 (0/sec)" for the rest of a -fuzztime 60s run).
func TestMain(m *testing.M) {
	flag.Parse()
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == "test.fuzzminimizetime" })
	if !set {
		if err := flag.Set("test.fuzzminimizetime", "1s"); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
	}
	os.Exit(m.Run())
}

// hangLimit is how long one fuzz input may take before it counts as a hang:
// inputs here are a few KiB and take milliseconds.
const hangLimit = 10 * time.Second

// failOnHang crashes the fuzz worker with every goroutine's stack when one
// input runs over hangLimit, so that the fuzzer saves the input to
// testdata/fuzz/FuzzLoad as a crasher rather than stalling. It is armed
// only while fuzzing; a plain `go test` has -timeout for that.
func failOnHang(raw []byte) (stop func() bool) {
	if f := flag.Lookup("test.fuzz"); f == nil || f.Value.String() == "" {
		return func() bool { return true }
	}
	return time.AfterFunc(hangLimit, func() {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		panic(fmt.Sprintf("load of a %d-byte input ran over %v; goroutines:\n%s", len(raw), hangLimit, buf))
	}).Stop
}

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
		defer failOnHang(raw)()
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
