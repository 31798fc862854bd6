package runtime

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Usage is one reading of a cgroup's (or the host's) resource usage.
type Usage struct {
	// Time is when the figures were read.
	Time time.Time
	// CPUNanos is the CPU time consumed since the cgroup was created, in
	// core-nanoseconds.
	CPUNanos uint64
	// MemoryUsage is the memory charged to the cgroup, page cache included.
	MemoryUsage uint64
	// WorkingSet is MemoryUsage less inactive file pages: what the kubelet
	// (and so `kubectl top`, eviction and the HPA) calls memory use.
	WorkingSet uint64
	// RSS is anonymous memory; PageFaults and MajorPageFaults are cumulative.
	RSS, PageFaults, MajorPageFaults uint64
}

// CgroupReader reads the resource usage of one cgroup. Read may be called
// concurrently; the Usage it returns belongs to the caller.
//
// path is the cgroup's path below the hierarchy root, as an OCI spec's
// linux.cgroupsPath names it ("/cci/<container id>"); "/" is the whole host.
// A cgroup that does not exist (its container just exited) is an error
// wrapping os.ErrNotExist.
type CgroupReader interface {
	Read(path string) (Usage, error)
}

// CgroupFS reads cgroups from a mounted cgroup file system, v1 (one
// hierarchy per controller) or v2 (unified).
type CgroupFS struct {
	// Root is where the hierarchies are mounted. Default "/sys/fs/cgroup".
	Root string
	// ProcRoot is where /proc is mounted, for host figures cgroup v2 keeps
	// only there. Default "/proc".
	ProcRoot string
	// now is the clock; a field so that tests can fix it.
	now func() time.Time
}

func (c CgroupFS) root() string {
	if c.Root == "" {
		return "/sys/fs/cgroup"
	}
	return c.Root
}

func (c CgroupFS) clock() time.Time {
	if c.now != nil {
		return c.now()
	}
	return time.Now()
}

// unified tells whether the host runs cgroup v2 only. A hybrid host (v1
// controllers with a v2 tree beside them, as here) accounts in v1.
func (c CgroupFS) unified() bool {
	_, err := os.Stat(filepath.Join(c.root(), "cgroup.controllers"))
	return err == nil
}

// Read implements CgroupReader.
func (c CgroupFS) Read(path string) (Usage, error) {
	path = filepath.Clean("/" + path)
	u := Usage{Time: c.clock()}
	var err error
	if c.unified() {
		err = c.readV2(path, &u)
	} else {
		err = c.readV1(path, &u)
	}
	if err != nil {
		return Usage{}, fmt.Errorf("read cgroup %q: %w", path, err)
	}
	return u, nil
}

func (c CgroupFS) readV1(path string, u *Usage) error {
	// cpuacct is its own hierarchy on some hosts and co-mounted with cpu on others.
	var cpuErr error
	for _, ctl := range []string{"cpuacct", "cpu,cpuacct", "cpuacct,cpu"} {
		var v uint64
		if v, cpuErr = readUint(filepath.Join(c.root(), ctl, path, "cpuacct.usage")); cpuErr == nil {
			u.CPUNanos = v
			break
		}
	}
	if cpuErr != nil {
		return cpuErr
	}
	dir := filepath.Join(c.root(), "memory", path)
	usage, err := readUint(filepath.Join(dir, "memory.usage_in_bytes"))
	if err != nil {
		return err
	}
	stat, err := readKeyValues(filepath.Join(dir, "memory.stat"))
	if err != nil {
		return err
	}
	// The total_ figures cover the cgroup's descendants too.
	setMemory(u, usage, stat["total_inactive_file"], stat["total_rss"], stat["total_pgfault"], stat["total_pgmajfault"])
	return nil
}

func (c CgroupFS) readV2(path string, u *Usage) error {
	dir := filepath.Join(c.root(), path)
	cpu, err := readKeyValues(filepath.Join(dir, "cpu.stat"))
	if err != nil {
		return err
	}
	u.CPUNanos = cpu["usage_usec"] * 1000
	usage, err := readUint(filepath.Join(dir, "memory.current"))
	if errors.Is(err, os.ErrNotExist) && path == "/" {
		// The root of a v2 hierarchy has no memory.current; the host's
		// figures come from /proc/meminfo as cadvisor takes them.
		return c.readMeminfo(u)
	}
	if err != nil {
		return err
	}
	stat, err := readKeyValues(filepath.Join(dir, "memory.stat"))
	if err != nil {
		return err
	}
	setMemory(u, usage, stat["inactive_file"], stat["anon"], stat["pgfault"], stat["pgmajfault"])
	return nil
}

func (c CgroupFS) readMeminfo(u *Usage) error {
	proc := c.ProcRoot
	if proc == "" {
		proc = "/proc"
	}
	m, err := readKeyValues(filepath.Join(proc, "meminfo"))
	if err != nil {
		return err
	}
	// meminfo is in KiB.
	used := (m["MemTotal:"] - m["MemFree:"]) * 1024
	setMemory(u, used, m["Inactive(file):"]*1024, m["AnonPages:"]*1024, 0, 0)
	return nil
}

func setMemory(u *Usage, usage, inactiveFile, rss, faults, majorFaults uint64) {
	u.MemoryUsage = usage
	if inactiveFile < usage {
		u.WorkingSet = usage - inactiveFile
	}
	u.RSS, u.PageFaults, u.MajorPageFaults = rss, faults, majorFaults
}

func readUint(path string) (uint64, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	v, err := strconv.ParseUint(string(bytes.TrimSpace(raw)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parse %q: %w", path, err)
	}
	return v, nil
}

// readKeyValues reads "key value" lines (memory.stat, cpu.stat, meminfo);
// lines whose value is not a number are skipped.
func readKeyValues(path string) (map[string]uint64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]uint64{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 {
			continue
		}
		if v, err := strconv.ParseUint(fields[1], 10, 64); err == nil {
			out[fields[0]] = v
		}
	}
	return out, sc.Err()
}

// removeCgroups removes the cgroup folders of a deleted container, path as
// its linux.cgroupsPath names it ("/cci/<id>"), from every hierarchy, the
// folders below it first. runc removes them when it deletes the container,
// but not when containerd or the shim died under the deletion: the folders
// then stay for good (the chaos bench found 10 per such container). Only an
// empty cgroup can be removed (rmdir), so one that still holds a process
// stays; a folder already gone is no error.
func removeCgroups(root, path string) error {
	path = filepath.Clean("/" + path)
	if path == "/" {
		return nil
	}
	hierarchies, err := os.ReadDir(root)
	if err != nil {
		return err
	}
	dirs := []string{filepath.Join(root, path)} // cgroup v2 alone
	for _, h := range hierarchies {
		// Symbolic links (cpu → cpu,cpuacct) name a hierarchy twice.
		if h.IsDir() {
			dirs = append(dirs, filepath.Join(root, h.Name(), path))
		}
	}
	var errs []error
	for _, d := range dirs {
		var found []string
		_ = filepath.WalkDir(d, func(p string, e fs.DirEntry, err error) error {
			if err == nil && e.IsDir() {
				found = append(found, p)
			}
			return nil
		})
		for i := len(found) - 1; i >= 0; i-- { // deepest first
			if err := os.Remove(found[i]); err != nil && !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}
