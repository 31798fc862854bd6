package evs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"time"

	"golang.org/x/sys/unix"
)

// Snapshots of a disk are copies of its file on the same host, under
// Dir/snapshots:
//
//	Snapshot(disk, handle): freeze the mounted file system (if staged),
//	    copy the file sparse-aware to snapshots/<handle>.img.new, thaw,
//	    rename to snapshots/<handle>.img (a copy is whole or absent)
//	CreateFromSnapshot(disk, handle, size): copy it back as a new disk
//	    file, grown to size; its file system grows at the first Stage
//	DeleteSnapshot(handle): remove the copy
//
// The copies are plain files of the host, so they survive the agent's
// restart as the disks do.

// snapshotHandle is what a snapshot handle may be: it names a file.
var snapshotHandle = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9._-]{0,252}$`)

func (p *Pool) snapshotImage(handle string) string {
	return filepath.Join(p.Dir, "snapshots", handle+".img")
}

func checkHandle(handle string) error {
	if !snapshotHandle.MatchString(handle) {
		return fmt.Errorf("snapshot handle %q is not a %s snapshot (letters, digits, '.', '_', '-')", handle, ClassName)
	}
	return nil
}

// ErrNoDisk is a disk whose file is not on this host.
var ErrNoDisk = errors.New("disk is not on this host")

// ErrNoSnapshot is a snapshot whose copy is not on this host.
var ErrNoSnapshot = errors.New("snapshot is not on this host")

// Snapshot copies disk name into the snapshot handle and returns the
// copy's size (the disk's) and when it was taken. A mounted disk's file
// system is frozen while it is copied (writes wait, nothing is lost), so
// the copy is consistent; a disk a pod has as a raw block device is
// copied as it is (what a crash would leave). A snapshot that exists
// already is returned as it is (a retried create).
func (p *Pool) Snapshot(ctx context.Context, name, handle string) (int64, time.Time, error) {
	if err := checkHandle(handle); err != nil {
		return 0, time.Time{}, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	dst := p.snapshotImage(handle)
	if fi, err := os.Stat(dst); err == nil {
		return fi.Size(), fi.ModTime(), nil
	}
	src := p.image(name)
	fi, err := os.Stat(src)
	if err != nil {
		return 0, time.Time{}, fmt.Errorf("snapshot disk %q: %w", name, ErrNoDisk)
	}
	// A thin disk's copy takes at most what the disk's file holds.
	var st unix.Stat_t
	if err := unix.Stat(src, &st); err == nil {
		free, err := p.Free()
		if err != nil {
			return 0, time.Time{}, err
		}
		if used := st.Blocks * 512; used > free {
			return 0, time.Time{}, fmt.Errorf("snapshot disk %q: %w: the copy needs %d bytes, %d free in %q", name, ErrTooLarge, used, free, p.Dir)
		}
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return 0, time.Time{}, err
	}
	tmp := dst + ".new"
	if dir := p.staging(name); mountedAt(dir) {
		if err := run("fsfreeze", "--freeze", dir); err != nil {
			return 0, time.Time{}, fmt.Errorf("freeze the file system of disk %q: %w", name, err)
		}
		defer func() { _ = run("fsfreeze", "--unfreeze", dir) }()
	}
	if err := copySparse(ctx, src, tmp); err != nil {
		os.Remove(tmp)
		return 0, time.Time{}, fmt.Errorf("copy disk %q: %w", name, err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		return 0, time.Time{}, err
	}
	return fi.Size(), time.Now(), nil
}

// SnapshotInfo is the size of the snapshot's copy and when it was taken.
func (p *Pool) SnapshotInfo(handle string) (int64, time.Time, error) {
	if err := checkHandle(handle); err != nil {
		return 0, time.Time{}, err
	}
	fi, err := os.Stat(p.snapshotImage(handle))
	if err != nil {
		return 0, time.Time{}, fmt.Errorf("snapshot %q: %w", handle, ErrNoSnapshot)
	}
	return fi.Size(), fi.ModTime(), nil
}

// HasSnapshot tells whether the snapshot's copy is on this host.
func (p *Pool) HasSnapshot(handle string) bool {
	_, _, err := p.SnapshotInfo(handle)
	return err == nil
}

// DeleteSnapshot removes the snapshot's copy; one already gone is no error.
func (p *Pool) DeleteSnapshot(handle string) error {
	if err := checkHandle(handle); err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	dst := p.snapshotImage(handle)
	_ = os.Remove(dst + ".new")
	if err := os.Remove(dst); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// CreateFromSnapshot makes disk name of size bytes from the snapshot's
// copy (a disk of that name that exists already is kept, a retried
// create). size may not be smaller than the snapshot; a larger disk gets
// its file system grown when it is first staged.
func (p *Pool) CreateFromSnapshot(ctx context.Context, name, handle string, size int64, thick bool) error {
	if err := checkHandle(handle); err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	img := p.image(name)
	if _, err := os.Stat(img); err == nil {
		return nil
	}
	src := p.snapshotImage(handle)
	fi, err := os.Stat(src)
	if err != nil {
		return fmt.Errorf("restore disk %q from snapshot %q: %w", name, handle, ErrNoSnapshot)
	}
	if size < fi.Size() {
		return fmt.Errorf("restore disk %q from snapshot %q: %d bytes asked, smaller than the snapshot's %d", name, handle, size, fi.Size())
	}
	free, err := p.Free()
	if err != nil {
		return err
	}
	if size > free {
		return fmt.Errorf("%w: %d bytes asked, %d free in %q", ErrTooLarge, size, free, p.Dir)
	}
	if err := os.MkdirAll(filepath.Dir(img), 0o700); err != nil {
		return err
	}
	tmp := img + ".new"
	if err := copySparse(ctx, src, tmp); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("restore disk %q from snapshot %q: %w", name, handle, err)
	}
	if err := os.Truncate(tmp, size); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("size disk %q: %w", name, err)
	}
	if thick {
		if err := allocate(tmp, size); err != nil {
			os.Remove(tmp)
			return fmt.Errorf("allocate disk %q: %w", name, err)
		}
	}
	return os.Rename(tmp, img)
}

// thaw unfreezes the file systems of the staged disks: an agent that
// stopped in the middle of a snapshot leaves its disk frozen, and every
// write of the pods using it would wait for ever.
func (p *Pool) thaw() {
	p.mu.Lock()
	defer p.mu.Unlock()
	dirs, _ := filepath.Glob(filepath.Join(p.Dir, "staged", "*"))
	for _, dir := range dirs {
		if mountedAt(dir) {
			// EINVAL for a file system that is not frozen: nothing to do.
			_ = run("fsfreeze", "--unfreeze", dir)
		}
	}
}

// copySparse copies src to dst keeping holes as holes (a thin disk's copy
// takes only the blocks written), sharing blocks instead where the file
// system offers reflinks.
func copySparse(ctx context.Context, src, dst string) error {
	return runCmd(exec.CommandContext(ctx, "cp", "--sparse=always", "--reflink=auto", "--", src, dst))
}
