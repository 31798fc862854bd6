// Package diskperf measures the file system of one folder: sequential
// write and read throughput and random 4 KiB write and read IOPS. It is
// the engine of `cci bench storage`, run by the diskperf test image
// (internal/testimage/diskperf) inside pods on a volume, and by the same
// binary straight on the host's data folder for the floor, so that every
// storage class and its floor are measured by the same code.
//
// The tests, in order, on one file of Options.SeqBytes:
//
//	seq-write   the file written front to back in 1 MiB blocks, then
//	            fsync; the clock includes the fsync and the close
//	seq-read    the file read front to back in 1 MiB blocks
//	rand-write  4 KiB blocks at random aligned offsets of the file, then
//	            fsync (the clock includes it)
//	rand-read   4 KiB blocks at random aligned offsets
//
// Reads should come from the storage, not from the page cache of the
// kernel that just wrote the data. Where the file system takes O_DIRECT
// (a probe write and read of one block tells), every test uses it. Where
// it does not (FUSE mounts, some network file systems), the file is
// fsynced and its cached pages dropped (POSIX_FADV_DONTNEED) before each
// read test, and the share of the file still cached is measured with
// mincore and reported: a cache that ignores the advice, such as a FUSE
// daemon's own cache, may still serve reads, and the result says so.
package diskperf

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

const (
	// SeqBlock is the size of each sequential read and write.
	SeqBlock = 1 << 20
	// RandBlock is the size of each random read and write.
	RandBlock = 4 << 10
	// align is what O_DIRECT needs of buffers, offsets and sizes on the
	// file systems CCI uses (the logical block size is at most 4 KiB).
	align = 4 << 10
)

// Options is one run.
type Options struct {
	// Dir is the folder measured; the test file is made in it and removed
	// afterwards.
	Dir string
	// SeqBytes is the test file's size, a multiple of SeqBlock. Default 64 MiB.
	SeqBytes int64
	// RandOps is how many 4 KiB writes, and as many reads, the random
	// tests make at most. Default 4096.
	RandOps int
	// RandFor bounds each random test's time: it stops after RandOps or
	// RandFor, whichever comes first. Default 30s.
	RandFor time.Duration
	// Direct is "auto" (O_DIRECT where the file system takes it), "on"
	// (fail where it does not) or "off" (never). Default "auto".
	Direct string
	// Seed makes the random offsets repeatable. Default 1.
	Seed uint64
}

func (o *Options) defaults() error {
	if o.Dir == "" {
		return errors.New("no folder to measure")
	}
	if o.SeqBytes == 0 {
		o.SeqBytes = 64 << 20
	}
	if o.SeqBytes < SeqBlock || o.SeqBytes%SeqBlock != 0 {
		return fmt.Errorf("file size %d: give a positive multiple of 1 MiB", o.SeqBytes)
	}
	if o.RandOps == 0 {
		o.RandOps = 4096
	}
	if o.RandOps < 1 {
		return fmt.Errorf("random operations %d: give a positive count", o.RandOps)
	}
	if o.RandFor == 0 {
		o.RandFor = 30 * time.Second
	}
	if o.RandFor < 0 {
		return fmt.Errorf("random test time %s: give a positive duration", o.RandFor)
	}
	switch o.Direct {
	case "":
		o.Direct = "auto"
	case "auto", "on", "off":
	default:
		return fmt.Errorf("direct %q: choose auto, on or off", o.Direct)
	}
	if o.Seed == 0 {
		o.Seed = 1
	}
	return nil
}

// Test is what one test measured.
type Test struct {
	// Bytes moved and operations made (blocks of SeqBlock or RandBlock).
	Bytes   int64   `json:"bytes"`
	Ops     int     `json:"ops"`
	Seconds float64 `json:"seconds"`
	// LatencyP50Us, LatencyP99Us, LatencyMaxUs: of each operation's call
	// (not the final fsync), in µs.
	LatencyP50Us float64 `json:"latencyP50Us"`
	LatencyP99Us float64 `json:"latencyP99Us"`
	LatencyMaxUs float64 `json:"latencyMaxUs"`
	// CachedBefore is, for a read test without O_DIRECT, the share (0-1)
	// of the file's pages the page cache held when the test began; -1
	// when it could not be read (the file could not be mapped).
	CachedBefore *float64 `json:"cachedBefore,omitempty"`
	// Error is why the test failed (the file system refused it, e.g.
	// random writes on a mount that only appends); the others still ran.
	Error string `json:"error,omitempty"`
}

// MiBps is the throughput in MiB/s.
func (t Test) MiBps() float64 {
	if t.Seconds <= 0 {
		return 0
	}
	return float64(t.Bytes) / (1 << 20) / t.Seconds
}

// IOPS is operations per second.
func (t Test) IOPS() float64 {
	if t.Seconds <= 0 {
		return 0
	}
	return float64(t.Ops) / t.Seconds
}

// Result is one run's tests.
type Result struct {
	// Direct: the tests used O_DIRECT. When false, DirectError says why
	// not ("off" when not asked for).
	Direct      bool   `json:"direct"`
	DirectError string `json:"directError,omitempty"`
	// FSType is the folder's file system (statfs magic, by name where
	// known).
	FSType    string `json:"fsType"`
	SeqWrite  Test   `json:"seqWrite"`
	SeqRead   Test   `json:"seqRead"`
	RandWrite Test   `json:"randWrite"`
	RandRead  Test   `json:"randRead"`
}

// Marker starts the result line in the program's output.
const Marker = "cci-diskperf-result "

// Format is the result line: Marker and the result as JSON.
func (r *Result) Format() (string, error) {
	raw, err := json.Marshal(r)
	if err != nil {
		return "", err
	}
	return Marker + string(raw), nil
}

// Parse finds the result line in a program's output (a pod's log, with
// whatever else it printed) and checks that every test moved data.
func Parse(out string) (*Result, error) {
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), strings.TrimSpace(Marker))
		if !ok {
			continue
		}
		var r Result
		if err := json.Unmarshal([]byte(strings.TrimSpace(rest)), &r); err != nil {
			return nil, fmt.Errorf("diskperf result line: %w", err)
		}
		for name, t := range map[string]Test{"seqWrite": r.SeqWrite, "seqRead": r.SeqRead, "randWrite": r.RandWrite, "randRead": r.RandRead} {
			if name == "seqWrite" && t.Error != "" {
				return nil, fmt.Errorf("diskperf result: the sequential write failed: %s", t.Error)
			}
			if t.Error == "" && (t.Bytes <= 0 || t.Ops <= 0 || t.Seconds <= 0) {
				return nil, fmt.Errorf("diskperf result: %s moved %d bytes in %d operations and %gs", name, t.Bytes, t.Ops, t.Seconds)
			}
		}
		return &r, nil
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	tail := out
	if len(tail) > 300 {
		tail = "…" + tail[len(tail)-300:]
	}
	return nil, fmt.Errorf("no %q line in the output %q", strings.TrimSpace(Marker), tail)
}

// Run makes the test file in o.Dir, runs the four tests and removes it.
func Run(o Options) (*Result, error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	var st unix.Statfs_t
	if err := unix.Statfs(o.Dir, &st); err != nil {
		return nil, fmt.Errorf("folder %q: %w", o.Dir, err)
	}
	res := &Result{FSType: fsName(int64(st.Type))}
	if free := int64(st.Bavail) * int64(st.Bsize); free < o.SeqBytes+SeqBlock {
		return nil, fmt.Errorf("folder %q has %d bytes free; the test needs %d", o.Dir, free, o.SeqBytes+SeqBlock)
	}

	buf, err := alignedBuffer(SeqBlock)
	if err != nil {
		return nil, err
	}
	defer unix.Munmap(buf)
	// Random content: a file system that compresses or skips zero blocks
	// would otherwise write less than asked.
	rng := rand.New(rand.NewPCG(o.Seed, o.Seed^0x9e3779b97f4a7c15))
	for i := 0; i+8 <= len(buf); i += 8 {
		v := rng.Uint64()
		for j := range 8 {
			buf[i+j] = byte(v >> (8 * j))
		}
	}

	switch o.Direct {
	case "off":
		res.DirectError = "off"
	default:
		if err := probeDirect(o.Dir, buf[:align]); err != nil {
			if o.Direct == "on" {
				return nil, fmt.Errorf("O_DIRECT on %q: %w", o.Dir, err)
			}
			res.DirectError = err.Error()
		} else {
			res.Direct = true
		}
	}
	flags := 0
	if res.Direct {
		flags = syscall.O_DIRECT
	}

	path := filepath.Join(o.Dir, fmt.Sprintf("diskperf-%d.dat", os.Getpid()))
	defer os.Remove(path)

	if res.SeqWrite, err = seqWrite(path, flags, o.SeqBytes, buf); err != nil {
		return nil, fmt.Errorf("sequential write: %w", err)
	}
	// Without the file nothing else can run; the other tests may each
	// fail on their own (a mount that takes no random writes still
	// reads), and the result says which did.
	if res.SeqRead, err = seqRead(path, flags, o.SeqBytes, buf, !res.Direct); err != nil {
		res.SeqRead = Test{Error: err.Error()}
	}
	blocks := o.SeqBytes / RandBlock
	if res.RandWrite, err = randOps(path, flags, blocks, o.RandOps, o.RandFor, buf[:RandBlock], rng, true, false); err != nil {
		res.RandWrite = Test{Error: err.Error()}
	}
	if res.RandRead, err = randOps(path, flags, blocks, o.RandOps, o.RandFor, buf[:RandBlock], rng, false, !res.Direct); err != nil {
		res.RandRead = Test{Error: err.Error()}
	}
	return res, nil
}

// alignedBuffer is n bytes of anonymous memory, page aligned as O_DIRECT
// needs (Go's heap gives no alignment guarantee).
func alignedBuffer(n int) ([]byte, error) {
	b, err := unix.Mmap(-1, 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		return nil, fmt.Errorf("buffer: %w", err)
	}
	return b, nil
}

// probeDirect writes and reads back one block with O_DIRECT in dir: some
// file systems accept the open flag and refuse the I/O.
func probeDirect(dir string, block []byte) error {
	f, err := os.CreateTemp(dir, "diskperf-probe-")
	if err != nil {
		return err
	}
	name := f.Name()
	f.Close()
	defer os.Remove(name)
	fd, err := unix.Open(name, unix.O_RDWR|unix.O_DIRECT|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open: %w", err)
	}
	defer unix.Close(fd)
	if _, err := unix.Pwrite(fd, block, 0); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	if _, err := unix.Pread(fd, block, 0); err != nil {
		return fmt.Errorf("read: %w", err)
	}
	return nil
}

func seqWrite(path string, flags int, size int64, buf []byte) (Test, error) {
	lat := make([]float64, 0, size/SeqBlock)
	start := time.Now()
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CREAT|unix.O_TRUNC|unix.O_CLOEXEC|flags, 0o644)
	if err != nil {
		return Test{}, err
	}
	for off := int64(0); off < size; off += SeqBlock {
		t := time.Now()
		if err := pwriteFull(fd, buf, off); err != nil {
			unix.Close(fd)
			return Test{}, err
		}
		lat = append(lat, us(time.Since(t)))
	}
	if err := unix.Fsync(fd); err != nil {
		unix.Close(fd)
		return Test{}, fmt.Errorf("fsync: %w", err)
	}
	if err := unix.Close(fd); err != nil {
		return Test{}, fmt.Errorf("close: %w", err)
	}
	return test(size, len(lat), time.Since(start), lat), nil
}

func seqRead(path string, flags int, size int64, buf []byte, drop bool) (Test, error) {
	cached, err := dropCache(path, drop)
	if err != nil {
		return Test{}, err
	}
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC|flags, 0)
	if err != nil {
		return Test{}, err
	}
	defer unix.Close(fd)
	lat := make([]float64, 0, size/SeqBlock)
	start := time.Now()
	for off := int64(0); off < size; off += SeqBlock {
		t := time.Now()
		if err := preadFull(fd, buf, off); err != nil {
			return Test{}, err
		}
		lat = append(lat, us(time.Since(t)))
	}
	r := test(size, len(lat), time.Since(start), lat)
	r.CachedBefore = cached
	return r, nil
}

// randOps makes up to ops random 4 KiB writes (or reads) in the first
// blocks blocks of the file, for at most limit.
func randOps(path string, flags int, blocks int64, ops int, limit time.Duration, block []byte, rng *rand.Rand, write, drop bool) (Test, error) {
	cached, err := dropCache(path, drop)
	if err != nil {
		return Test{}, err
	}
	mode := unix.O_RDONLY
	if write {
		mode = unix.O_RDWR
	}
	fd, err := unix.Open(path, mode|unix.O_CLOEXEC|flags, 0)
	if err != nil {
		return Test{}, err
	}
	if !write && flags&syscall.O_DIRECT == 0 {
		// No read-ahead: each read should fetch its own block only.
		_ = unix.Fadvise(fd, 0, 0, unix.FADV_RANDOM)
	}
	lat := make([]float64, 0, min(ops, 1<<16))
	start := time.Now()
	deadline := start.Add(limit)
	for i := 0; i < ops && (i == 0 || time.Now().Before(deadline)); i++ {
		off := rng.Int64N(blocks) * RandBlock
		t := time.Now()
		if write {
			err = pwriteFull(fd, block, off)
		} else {
			err = preadFull(fd, block, off)
		}
		if err != nil {
			unix.Close(fd)
			return Test{}, err
		}
		lat = append(lat, us(time.Since(t)))
	}
	if write {
		if err := unix.Fsync(fd); err != nil {
			unix.Close(fd)
			return Test{}, fmt.Errorf("fsync: %w", err)
		}
	}
	if err := unix.Close(fd); err != nil {
		return Test{}, fmt.Errorf("close: %w", err)
	}
	r := test(int64(len(lat))*RandBlock, len(lat), time.Since(start), lat)
	if !write {
		r.CachedBefore = cached
	}
	return r, nil
}

// dropCache, when drop is set, asks the kernel to forget the file's
// cached pages and returns the share that is still cached afterwards (-1:
// unknown). Without drop it returns nil.
func dropCache(path string, drop bool) (*float64, error) {
	if !drop {
		return nil, nil
	}
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	// Dirty pages are not dropped: write them back first.
	_ = unix.Fdatasync(fd)
	_ = unix.Fadvise(fd, 0, 0, unix.FADV_DONTNEED)
	share := residentShare(fd)
	return &share, nil
}

// residentShare is the share of the file's pages in the page cache
// (mincore over a mapping of it), or -1 where it cannot be mapped.
func residentShare(fd int) float64 {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Size == 0 {
		return -1
	}
	m, err := unix.Mmap(fd, 0, int(st.Size), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return -1
	}
	defer unix.Munmap(m)
	page := os.Getpagesize()
	vec := make([]byte, (len(m)+page-1)/page)
	if _, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)), uintptr(unsafe.Pointer(&vec[0]))); errno != 0 {
		return -1
	}
	in := 0
	for _, v := range vec {
		if v&1 != 0 {
			in++
		}
	}
	return float64(in) / float64(len(vec))
}

func pwriteFull(fd int, b []byte, off int64) error {
	for len(b) > 0 {
		n, err := unix.Pwrite(fd, b, off)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		b, off = b[n:], off+int64(n)
	}
	return nil
}

func preadFull(fd int, b []byte, off int64) error {
	for len(b) > 0 {
		n, err := unix.Pread(fd, b, off)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		if n == 0 {
			return fmt.Errorf("read at %d: unexpected end of file", off)
		}
		b, off = b[n:], off+int64(n)
	}
	return nil
}

func us(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }

func test(bytes int64, ops int, took time.Duration, lat []float64) Test {
	t := Test{Bytes: bytes, Ops: ops, Seconds: took.Seconds()}
	if len(lat) == 0 {
		return t
	}
	s := append([]float64(nil), lat...)
	sort.Float64s(s)
	t.LatencyP50Us = percentile(s, 0.50)
	t.LatencyP99Us = percentile(s, 0.99)
	t.LatencyMaxUs = s[len(s)-1]
	return t
}

// percentile of sorted samples, nearest rank.
func percentile(sorted []float64, p float64) float64 {
	i := int(p*float64(len(sorted))+0.5) - 1
	i = max(0, min(i, len(sorted)-1))
	return sorted[i]
}

// fsName names the statfs magic numbers of the file systems a pod's
// volume is likely on.
func fsName(magic int64) string {
	switch magic {
	case unix.EXT4_SUPER_MAGIC:
		return "ext4"
	case unix.XFS_SUPER_MAGIC:
		return "xfs"
	case unix.BTRFS_SUPER_MAGIC:
		return "btrfs"
	case unix.TMPFS_MAGIC:
		return "tmpfs"
	case unix.OVERLAYFS_SUPER_MAGIC:
		return "overlay"
	case unix.FUSE_SUPER_MAGIC:
		return "fuse"
	case unix.NFS_SUPER_MAGIC:
		return "nfs"
	}
	return fmt.Sprintf("0x%x", magic)
}
