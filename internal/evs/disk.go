package evs

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// Pool is the cci-evs disks of one host: each disk a sparse file of
// exactly its size under Dir/disks, attached to a loop device while a pod
// uses it and its file system mounted once under Dir/staged.
//
// A disk's life on its host:
//
//	Create ─► (file, no device)
//	   ─► Stage: attach loop device, mkfs once, mount  ─► staged
//	   ─► pods bind-mount the staged folder (runtime)
//	   ─► Unstage when no bind mount is left: unmount, detach
//	   ─► Delete: file removed (refused while staged)
//
// Expand may come at any point: the file grows, an attached device learns
// its new size, a mounted file system grows online.
//
// Everything a Pool does is on the host (files, loop devices, mounts), so
// that a new agent finds it as the old one left it: the methods are
// idempotent and re-adopt what they find. Methods may be called
// concurrently; one mutex serializes them.
type Pool struct {
	// Dir holds the disks' files and staging mounts.
	Dir string

	mu sync.Mutex
}

// smallXFS is the size under which mkfs.xfs (6.x) refuses to make a file
// system unless told it is for a test; a disk that small is still a
// sound XFS file system (the kernel mounts and grows it), only not the
// shape xfsprogs tunes for.
const smallXFS = 300 << 20

func (p *Pool) image(name string) string   { return filepath.Join(p.Dir, "disks", name+".img") }
func (p *Pool) staging(name string) string { return filepath.Join(p.Dir, "staged", name) }

// Free is what the file system holding the disks has free, in bytes: the
// most a new disk may promise (disks are sparse files, so a full host
// file system fails their writes with ENOSPC, as a thin pool does).
func (p *Pool) Free() (int64, error) {
	if err := os.MkdirAll(filepath.Join(p.Dir, "disks"), 0o700); err != nil {
		return 0, err
	}
	var st unix.Statfs_t
	if err := unix.Statfs(filepath.Join(p.Dir, "disks"), &st); err != nil {
		return 0, fmt.Errorf("statfs %q: %w", p.Dir, err)
	}
	return int64(st.Bavail) * st.Bsize, nil
}

// ErrTooLarge is a disk larger than the pool can hold.
var ErrTooLarge = errors.New("larger than the free space of the host's cci-evs pool")

// Create makes the disk name of size bytes; a disk of that name that
// exists already is kept (a retried create). A thick disk has all its
// blocks taken now, so that a full host file system can never fail its
// writes; a thin one takes them as they are written.
func (p *Pool) Create(name string, size int64, thick bool) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	img := p.image(name)
	if _, err := os.Stat(img); err == nil {
		return nil
	}
	free, err := p.Free()
	if err != nil {
		return err
	}
	if size > free {
		return fmt.Errorf("%w: %d bytes asked, %d free in %q", ErrTooLarge, size, free, p.Dir)
	}
	// Written under a temporary name: a disk file is whole or absent.
	tmp := img + ".new"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("size disk %q: %w", name, err)
	}
	if thick {
		if err := unix.Fallocate(int(f.Fd()), 0, 0, size); err != nil {
			f.Close()
			os.Remove(tmp)
			return fmt.Errorf("allocate disk %q: %w", name, err)
		}
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, img)
}

// Exists tells whether the disk's file is on this host.
func (p *Pool) Exists(name string) bool {
	_, err := os.Stat(p.image(name))
	return err == nil
}

// Size is the disk's size in bytes.
func (p *Pool) Size(name string) (int64, error) {
	fi, err := os.Stat(p.image(name))
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}

// ErrInUse is a disk that is still staged (a pod of this host uses it).
var ErrInUse = errors.New("disk is still mounted on its host")

// Delete removes the disk; a disk already gone is no error.
func (p *Pool) Delete(name string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	img := p.image(name)
	if mountedAt(p.staging(name)) {
		return fmt.Errorf("delete disk %q: %w", name, ErrInUse)
	}
	devs, err := loopDevices(img)
	if err != nil {
		return err
	}
	for _, d := range devs {
		if err := run("losetup", "-d", d); err != nil {
			return fmt.Errorf("detach %s of disk %q: %w", d, name, err)
		}
	}
	_ = os.Remove(p.staging(name))
	if err := os.Remove(img); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// Expand grows the disk to size bytes (a smaller size is no change): the
// file, then the loop device if attached, then the file system if
// mounted. A disk grown while not staged has its file system grown at
// its next Stage.
func (p *Pool) Expand(name string, size int64, thick bool) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	img := p.image(name)
	fi, err := os.Stat(img)
	if err != nil {
		return fmt.Errorf("expand disk %q: %w", name, err)
	}
	if grow := size - fi.Size(); grow > 0 {
		free, err := p.Free()
		if err != nil {
			return err
		}
		if grow > free {
			return fmt.Errorf("expand disk %q by %d bytes: %w (%d free in %q)", name, grow, ErrTooLarge, free, p.Dir)
		}
		if err := os.Truncate(img, size); err != nil {
			return fmt.Errorf("expand disk %q: %w", name, err)
		}
		if thick {
			if err := allocate(img, size); err != nil {
				return fmt.Errorf("allocate the growth of disk %q: %w", name, err)
			}
		}
	}
	devs, err := loopDevices(img)
	if err != nil {
		return err
	}
	for _, d := range devs {
		if err := run("losetup", "-c", d); err != nil {
			return fmt.Errorf("resize %s of disk %q: %w", d, name, err)
		}
	}
	if mountedAt(p.staging(name)) && len(devs) > 0 {
		return growFS(devs[0], p.staging(name))
	}
	return nil
}

func allocate(img string, size int64) error {
	f, err := os.OpenFile(img, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	return unix.Fallocate(int(f.Fd()), 0, 0, size)
}

// Device attaches the disk to a loop device (or finds the one it is
// attached to) and returns the device's path.
func (p *Pool) Device(name string) (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.attach(name)
}

func (p *Pool) attach(name string) (string, error) {
	img := p.image(name)
	if _, err := os.Stat(img); err != nil {
		return "", fmt.Errorf("disk %q is not on this host: %w", name, err)
	}
	devs, err := loopDevices(img)
	if err != nil {
		return "", err
	}
	if len(devs) > 0 {
		return devs[0], nil
	}
	out, err := output("losetup", "--find", "--show", img)
	if err != nil {
		return "", fmt.Errorf("attach disk %q to a loop device: %w", name, err)
	}
	return strings.TrimSpace(out), nil
}

// Stage makes the disk's file system ready on the host and returns the
// folder it is mounted on: the device attached, a file system of fsType
// (xfs or ext4) made if the disk has none, mounted, and grown to the
// device if the disk was expanded meanwhile. A staged disk is returned as
// it is.
func (p *Pool) Stage(name, fsType string) (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	dir := p.staging(name)
	if mountedAt(dir) {
		return dir, nil
	}
	dev, err := p.attach(name)
	if err != nil {
		return "", err
	}
	have, err := fsOf(dev)
	if err != nil {
		return "", err
	}
	if have == "" {
		if err := mkfs(dev, fsType); err != nil {
			return "", fmt.Errorf("make a %s file system on disk %q: %w", fsType, name, err)
		}
		have = fsType
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	// A disk restored from a snapshot has the file system UUID of the
	// disk it was taken of, which may be mounted on this host too; XFS
	// refuses a second mount of a UUID unless told not to check.
	data := ""
	if have == "xfs" {
		data = "nouuid"
	}
	if err := unix.Mount(dev, dir, have, 0, data); err != nil {
		return "", fmt.Errorf("mount disk %q (%s, %s) on %q: %w", name, dev, have, dir, err)
	}
	if err := growFS(dev, dir); err != nil {
		return "", err
	}
	return dir, nil
}

// Unstage unmounts the disk and detaches its loop device once nothing
// else on the host mounts that device (a pod's bind mount of it); it says
// whether it did.
func (p *Pool) Unstage(name string) (bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	dir := p.staging(name)
	if mountedAt(dir) {
		users, err := mountsOfDevice(dir)
		if err != nil {
			return false, err
		}
		if users > 1 {
			return false, nil
		}
		if err := unix.Unmount(dir, 0); err != nil {
			return false, fmt.Errorf("unmount disk %q from %q: %w", name, dir, err)
		}
	}
	devs, err := loopDevices(p.image(name))
	if err != nil {
		return false, err
	}
	for _, d := range devs {
		if err := run("losetup", "-d", d); err != nil {
			return false, fmt.Errorf("detach %s of disk %q: %w", d, name, err)
		}
	}
	return true, nil
}

// Staged is the folder the disk is mounted on, or "" when it is not.
func (p *Pool) Staged(name string) string {
	if dir := p.staging(name); mountedAt(dir) {
		return dir
	}
	return ""
}

// FSSize is the size of the staged disk's file system in bytes, as df
// counts it.
func FSSize(dir string) (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return int64(st.Blocks) * st.Bsize, nil
}

// loopDevices are the loop devices that back file img.
func loopDevices(img string) ([]string, error) {
	out, err := output("losetup", "--json", "--list", "--output", "NAME,BACK-FILE")
	if err != nil {
		return nil, fmt.Errorf("list loop devices: %w", err)
	}
	if strings.TrimSpace(out) == "" {
		return nil, nil
	}
	var list struct {
		Loops []struct {
			Name     string `json:"name"`
			BackFile string `json:"back-file"`
		} `json:"loopdevices"`
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		return nil, fmt.Errorf("read losetup's list: %w", err)
	}
	var devs []string
	for _, l := range list.Loops {
		// A file replaced since it was attached reads "(deleted)".
		if strings.TrimSuffix(l.BackFile, " (deleted)") == img {
			devs = append(devs, l.Name)
		}
	}
	return devs, nil
}

// LoopDevicesUnder are the loop devices whose files lie under dir: what
// a removed data folder leaves attached.
func LoopDevicesUnder(dir string) []string {
	out, err := output("losetup", "--json", "--list", "--output", "NAME,BACK-FILE")
	if err != nil || strings.TrimSpace(out) == "" {
		return nil
	}
	var list struct {
		Loops []struct {
			Name     string `json:"name"`
			BackFile string `json:"back-file"`
		} `json:"loopdevices"`
	}
	if json.Unmarshal([]byte(out), &list) != nil {
		return nil
	}
	var devs []string
	for _, l := range list.Loops {
		if strings.HasPrefix(l.BackFile, strings.TrimSuffix(dir, "/")+"/") {
			devs = append(devs, l.Name)
		}
	}
	return devs
}

// fsOf is the file system type on dev, or "" for a blank disk.
func fsOf(dev string) (string, error) {
	cmd := exec.Command("blkid", "--probe", "--output", "value", "--match-tag", "TYPE", dev)
	out, err := cmd.Output()
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() == 2 {
		// blkid: nothing found.
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("probe %s for a file system: %w", dev, err)
	}
	return strings.TrimSpace(string(out)), nil
}

func mkfs(dev, fsType string) error {
	switch fsType {
	case "xfs":
		cmd := exec.Command("mkfs.xfs", "-q", dev)
		if size, err := deviceSize(dev); err == nil && size < smallXFS {
			// mkfs.xfs makes file systems under 300 MB only for
			// xfstests, which it recognizes by these variables.
			cmd.Env = append(os.Environ(), "TEST_DIR=1", "TEST_DEV=1", "QA_CHECK_FS=1")
		}
		return runCmd(cmd)
	case "ext4":
		// No blocks reserved for root: the pod gets the size it asked for.
		return run("mkfs.ext4", "-q", "-m", "0", dev)
	default:
		return fmt.Errorf("file system %q is not offered (cci-evs offers xfs and ext4)", fsType)
	}
}

// growFS grows the file system mounted on dir to its device's size.
func growFS(dev, dir string) error {
	have, err := fsOf(dev)
	if err != nil {
		return err
	}
	// Both tools leave a file system that fills its device as it is.
	switch have {
	case "xfs":
		err = run("xfs_growfs", dir)
	case "ext4":
		// Online ext4 growth needs CAP_SYS_RESOURCE, which some hosts'
		// root lacks (resize2fs then says "Permission denied").
		err = run("resize2fs", dev)
	default:
		err = fmt.Errorf("cannot grow a %q file system", have)
	}
	if err != nil {
		return fmt.Errorf("grow the file system on %s: %w", dev, err)
	}
	return nil
}

func deviceSize(dev string) (int64, error) {
	out, err := output("blockdev", "--getsize64", dev)
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(strings.TrimSpace(out), 10, 64)
}

// mountedAt tells whether dir is a mount point.
func mountedAt(dir string) bool {
	_, ok := mountDevice(dir)
	return ok
}

// mountDevice is the major:minor of what is mounted on dir.
func mountDevice(dir string) (string, bool) {
	raw, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return "", false
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if f := strings.Fields(line); len(f) > 4 && f[4] == dir {
			return f[2], true
		}
	}
	return "", false
}

// mountsOfDevice counts the host's mounts of the device mounted on dir,
// dir's own included.
func mountsOfDevice(dir string) (int, error) {
	dev, ok := mountDevice(dir)
	if !ok {
		return 0, nil
	}
	raw, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return 0, err
	}
	n := 0
	for _, line := range strings.Split(string(raw), "\n") {
		if f := strings.Fields(line); len(f) > 4 && f[2] == dev {
			n++
		}
	}
	return n, nil
}

func run(name string, args ...string) error { return runCmd(exec.Command(name, args...)) }

func runCmd(cmd *exec.Cmd) error {
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(cmd.Args, " "), err, strings.TrimSpace(out.String()))
	}
	return nil
}

func output(name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("%s: %w: %s", strings.Join(cmd.Args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return string(out), nil
}
