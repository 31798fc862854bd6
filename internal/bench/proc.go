package bench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	goruntime "runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// clockTicks is USER_HZ, the unit of CPU times in /proc; 100 on every
// Linux architecture Go supports.
const clockTicks = 100

// procCPU is a process's CPU time, its own and that of the children it reaped.
type procCPU struct {
	Self     time.Duration // utime + stime
	Children time.Duration // cutime + cstime
}

func (c procCPU) total() time.Duration { return c.Self + c.Children }

// readProcCPU reads /proc/PID/stat.
func readProcCPU(pid int) (procCPU, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procCPU{}, err
	}
	// The command name is in parentheses and may hold spaces: fields
	// start after the last ')'.
	i := bytes.LastIndexByte(raw, ')')
	if i < 0 {
		return procCPU{}, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	f := strings.Fields(string(raw[i+1:]))
	// f[0] is state (field 3); utime is field 14 → f[11].
	if len(f) < 15 {
		return procCPU{}, fmt.Errorf("/proc/%d/stat: too few fields", pid)
	}
	tick := func(s string) time.Duration {
		n, _ := strconv.ParseInt(s, 10, 64)
		return time.Duration(n) * time.Second / clockTicks
	}
	return procCPU{Self: tick(f[11]) + tick(f[12]), Children: tick(f[13]) + tick(f[14])}, nil
}

// procStatus returns the fields of /proc/PID/status in bytes (VmRSS, VmHWM…).
func procStatus(pid int) map[string]int64 {
	out := map[string]int64{}
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return out
	}
	for _, line := range strings.Split(string(raw), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 2 && f[1] == "kB" {
			n, _ := strconv.ParseInt(f[0], 10, 64)
			out[k] = n * 1024
		}
	}
	return out
}

// procPSS is the proportional set size of a process: shared pages (the
// shim binary's text, for one) are divided among the processes that map them.
func procPSS(pid int) int64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return procStatus(pid)["VmRSS"]
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, "Pss:"); ok {
			f := strings.Fields(v)
			if len(f) >= 1 {
				n, _ := strconv.ParseInt(f[0], 10, 64)
				return n * 1024
			}
		}
	}
	return 0
}

// memInfo returns /proc/meminfo in bytes.
func memInfo() map[string]int64 {
	out := map[string]int64{}
	raw, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return out
	}
	for _, line := range strings.Split(string(raw), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) >= 1 {
			n, _ := strconv.ParseInt(f[0], 10, 64)
			if len(f) == 2 && f[1] == "kB" {
				n *= 1024
			}
			out[k] = n
		}
	}
	return out
}

// memUsed is MemTotal - MemAvailable: what the kernel could not hand out
// without swapping.
func memUsed() int64 {
	m := memInfo()
	return m["MemTotal"] - m["MemAvailable"]
}

// kernelMem is the kernel's own unreclaimable memory: slab objects
// (network namespaces, veths, mounts), kernel stacks, page tables, per-CPU
// areas. Unlike MemAvailable it moves little with other processes' page
// cache, so its growth is a fair price of the kernel objects a pod holds.
func kernelMem() int64 {
	m := memInfo()
	return m["SUnreclaim"] + m["KernelStack"] + m["PageTables"] + m["Percpu"]
}

// shimPSS is the summed PSS of the shims serving socket.
func shimPSS(socket string) int64 {
	var sum int64
	for _, pid := range shimPids(socket) {
		sum += procPSS(pid)
	}
	return sum
}

// hostCPU is the machine's busy CPU time since boot (all cores).
func hostCPU() time.Duration {
	raw, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(raw), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return 0
	}
	var busy int64
	for i, v := range f[1:] {
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		n, _ := strconv.ParseInt(v, 10, 64)
		busy += n
	}
	return time.Duration(busy) * time.Second / clockTicks
}

// idleCPUFor is how long density reads the host's CPU with no pod, and
// again with every pod idle.
const idleCPUFor = 10 * time.Second

// busyCores is how many of the machine's cores were busy, on average,
// over the next d.
func busyCores(ctx context.Context, d time.Duration) float64 {
	c0, t0 := hostCPU(), time.Now()
	sleepCtx(ctx, d)
	return float64(hostCPU()-c0) / float64(time.Since(t0))
}

// findProcs returns the pids whose command line satisfies match.
func findProcs(match func(args []string) bool) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		raw, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(raw) == 0 {
			continue
		}
		args := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
		if match(args) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// shimPids are the containerd shims serving the containerd at socket.
func shimPids(socket string) []int {
	return findProcs(func(args []string) bool {
		if !strings.Contains(filepath.Base(args[0]), "containerd-shim") {
			return false
		}
		for i, a := range args {
			if a == "-address" && i+1 < len(args) && args[i+1] == socket {
				return true
			}
		}
		return false
	})
}

// readPidFile reads a pid file, 0 when absent.
func readPidFile(path string) int {
	raw, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(raw)))
	return pid
}

// cpuSampler measures the CPU time that named groups of processes spend
// between start and stop, and the peak memory of each group.
type cpuSampler struct {
	groups func() map[string][]int // group name → pids, looked up at each sample

	mu      sync.Mutex
	first   map[int]procCPU
	last    map[int]procCPU
	pidGrp  map[int]string
	peakRSS map[string]int64
	sampled bool
	host0   time.Duration
	host1   time.Duration
	t0, t1  time.Time
	stop    chan struct{}
	done    chan struct{}
}

// CPUUse is what one group of processes used during a measurement.
type CPUUse struct {
	Group string `json:"group"`
	// CPUSeconds includes children the processes reaped (CNI plugins, runc).
	CPUSeconds float64 `json:"cpuSeconds"`
	// ChildSeconds is the part of CPUSeconds spent by those reaped children:
	// for the cci process, the CNI plugins (and the iptables they run); for
	// shims, runc.
	ChildSeconds float64 `json:"childCpuSeconds"`
	// Cores is CPUSeconds over the wall time: average cores busy.
	Cores float64 `json:"cores"`
	// PeakRSS is the largest sum of the group's resident memory seen.
	PeakRSS int64 `json:"peakRSSBytes"`
}

func startCPUSampler(groups func() map[string][]int, every time.Duration) *cpuSampler {
	s := &cpuSampler{
		groups: groups, first: map[int]procCPU{}, last: map[int]procCPU{}, pidGrp: map[int]string{},
		peakRSS: map[string]int64{}, stop: make(chan struct{}), done: make(chan struct{}),
		t0: time.Now(), host0: hostCPU(),
	}
	s.sample()
	go func() {
		defer close(s.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-s.stop:
				s.sample()
				return
			case <-t.C:
				s.sample()
			}
		}
	}()
	return s
}

func (s *cpuSampler) sample() {
	g := s.groups()
	s.mu.Lock()
	defer s.mu.Unlock()
	initial := !s.sampled
	s.sampled = true
	for name, pids := range g {
		var rss int64
		for _, pid := range pids {
			c, err := readProcCPU(pid)
			if err != nil {
				continue
			}
			if _, ok := s.pidGrp[pid]; !ok {
				s.pidGrp[pid] = name
				if initial {
					s.first[pid] = c
				} // else: born during the measurement, counts from zero
			}
			s.last[pid] = c
			rss += procStatus(pid)["VmRSS"]
		}
		s.peakRSS[name] = max(s.peakRSS[name], rss)
	}
}

// Stop ends the measurement and returns each group's use, and the whole
// machine's as group "host".
func (s *cpuSampler) Stop() []CPUUse {
	close(s.stop)
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	s.t1 = time.Now()
	s.host1 = hostCPU()
	wall := s.t1.Sub(s.t0).Seconds()
	byGroup := map[string]time.Duration{}
	children := map[string]time.Duration{}
	for pid, last := range s.last {
		byGroup[s.pidGrp[pid]] += last.total() - s.first[pid].total()
		children[s.pidGrp[pid]] += last.Children - s.first[pid].Children
	}
	names := make([]string, 0, len(byGroup))
	for n := range s.groups() {
		names = append(names, n)
	}
	for n := range byGroup {
		if !contains(names, n) {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	var out []CPUUse
	for _, n := range names {
		sec := byGroup[n].Seconds()
		out = append(out, CPUUse{Group: n, CPUSeconds: sec, ChildSeconds: children[n].Seconds(), Cores: sec / wall, PeakRSS: s.peakRSS[n]})
	}
	host := (s.host1 - s.host0).Seconds()
	out = append(out, CPUUse{Group: "host (all processes)", CPUSeconds: host, Cores: host / wall})
	return out
}

// otherCores is how many cores processes outside every group kept busy:
// load from elsewhere on the machine that disturbs the figures.
func otherCores(use []CPUUse) float64 {
	var host, groups float64
	for _, u := range use {
		if strings.HasPrefix(u.Group, "host") {
			host = u.Cores
		} else {
			groups += u.Cores
		}
	}
	return host - groups
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// cgroupMemory is the memory charged to a cgroup v1 memory group, or under
// cgroup v2 to the unified group; 0 when it does not exist.
func cgroupMemory(rel string) int64 {
	for _, p := range []string{
		filepath.Join("/sys/fs/cgroup/memory", rel, "memory.usage_in_bytes"),
		filepath.Join("/sys/fs/cgroup", rel, "memory.current"),
	} {
		raw, err := os.ReadFile(p)
		if err == nil {
			n, _ := strconv.ParseInt(strings.TrimSpace(string(raw)), 10, 64)
			return n
		}
	}
	return 0
}

// machine describes the host for reports.
func machine() Machine {
	m := Machine{CPUs: goruntime.NumCPU(), MemBytes: memInfo()["MemTotal"]}
	m.Host, _ = os.Hostname()
	if raw, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(bytes.NewReader(raw))
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "model name"); ok {
				m.CPUModel = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	if raw, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(raw))
	}
	if raw, err := os.ReadFile("/etc/os-release"); err == nil {
		for _, line := range strings.Split(string(raw), "\n") {
			if v, ok := strings.CutPrefix(line, "PRETTY_NAME="); ok {
				m.OS = strings.Trim(v, `"`)
			}
		}
	}
	return m
}
