package runtime

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	pathrs "github.com/cyphar/filepath-securejoin/pathrs-lite"
	"golang.org/x/sys/unix"
	v1 "k8s.io/api/core/v1"
)

// A volumeMount's subPath names a path inside a volume that the pod's own
// containers may write, so it may cross symlinks they planted: `ln -s /
// /vol/escape` and a later `subPath: escape` would otherwise bind the
// host's root into a container (CVE-2017-1002101). As the kubelet does, the
// subPath is resolved inside the volume, refused when a symlink on it leads
// outside, opened as an O_PATH handle and bind-mounted through
// /proc/self/fd onto a folder of the pod's own (volume-subpaths), which is
// what the container runtime then mounts: no path a container can change
// is looked up again after the check.

// maxSymlinks bounds the symlinks one subPath may cross, as the kernel's
// ELOOP limit does.
const maxSymlinks = 40

// validSubPath refuses a subPath that is absolute or has a `..` component;
// the API server refuses them too, this holds for records made before.
func validSubPath(subPath string) error {
	if filepath.IsAbs(subPath) {
		return fmt.Errorf("subPath %q must be a relative path", subPath)
	}
	for _, part := range strings.Split(subPath, "/") {
		if part == ".." {
			return fmt.Errorf("subPath %q must not contain '..'", subPath)
		}
	}
	return nil
}

// resolveSubPath resolves subPath below root, a real path, as the host
// would, symlinks included, and fails when one leads outside root: a symlink
// to an absolute path, a `..` above root, a symlink to a missing path, or a
// loop. Components past the first missing one are kept as they are: they
// will be created. The result is a lexical answer for messages and for
// checking the handle openSubPath gets; it guards nothing on its own.
func resolveSubPath(root, subPath string) (string, error) {
	var done []string // resolved components below root
	todo := strings.Split(subPath, "/")
	fromLink := 0 // how many components at the front of todo come from symlink targets
	links := 0
	var lastLink, lastTarget string
	for len(todo) > 0 {
		part := todo[0]
		todo = todo[1:]
		linked := fromLink > 0
		if linked {
			fromLink--
		}
		switch part {
		case "", ".":
			continue
		case "..":
			if len(done) == 0 {
				// Only a symlink's target can hold `..`: the last one crossed.
				return "", fmt.Errorf("%q in the volume is a symlink to %q, outside the volume", lastLink, lastTarget)
			}
			done = done[:len(done)-1]
			continue
		}
		rel := filepath.Join(append(done, part)...)
		fi, err := os.Lstat(filepath.Join(root, rel))
		if errors.Is(err, os.ErrNotExist) {
			if linked {
				return "", fmt.Errorf("a symlink on subPath %q points to %q, which does not exist in the volume", subPath, rel)
			}
			return filepath.Join(append([]string{root, rel}, todo...)...), nil
		}
		if err != nil {
			return "", err
		}
		if fi.Mode()&os.ModeSymlink == 0 {
			done = append(done, part)
			continue
		}
		if links++; links > maxSymlinks {
			return "", fmt.Errorf("subPath %q crosses more than %d symlinks", subPath, maxSymlinks)
		}
		target, err := os.Readlink(filepath.Join(root, rel))
		if err != nil {
			return "", err
		}
		if filepath.IsAbs(target) {
			return "", fmt.Errorf("%q in the volume is a symlink to %q, outside the volume", rel, target)
		}
		parts := strings.Split(target, "/")
		lastLink, lastTarget = rel, target
		todo = append(parts, todo...)
		fromLink += len(parts)
	}
	return filepath.Join(append([]string{root}, done...)...), nil
}

// openSubPath returns an O_PATH handle on subPath inside root, creating it
// as a folder when it is missing (mode as root's), without following any
// symlink out of root. A subPath that resolves outside root on the host is
// refused before anything is created.
func openSubPath(root, subPath string) (*os.File, error) {
	if err := validSubPath(subPath); err != nil {
		return nil, err
	}
	realRoot, err := filepath.EvalSymlinks(root)
	if err != nil {
		return nil, fmt.Errorf("resolve volume folder: %w", err)
	}
	want, err := resolveSubPath(realRoot, subPath)
	if err != nil {
		return nil, err
	}
	rootDir, err := os.OpenFile(realRoot, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open volume folder: %w", err)
	}
	defer rootDir.Close()
	h, err := pathrs.OpenatInRoot(rootDir, subPath)
	if errors.Is(err, os.ErrNotExist) {
		fi, serr := rootDir.Stat()
		if serr != nil {
			return nil, fmt.Errorf("stat volume folder: %w", serr)
		}
		h, err = pathrs.MkdirAllHandle(rootDir, subPath, fi.Mode().Perm())
		if err != nil {
			return nil, fmt.Errorf("create subPath %q: %w", subPath, err)
		}
	} else if err != nil {
		return nil, fmt.Errorf("open subPath %q: %w", subPath, err)
	}
	// The handle is inside root whatever happened; it must also be what the
	// host path means, or a container swapped a symlink meanwhile.
	got, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(int(h.Fd())))
	if err == nil && got != want {
		if now, rerr := resolveSubPath(realRoot, subPath); rerr != nil {
			err = rerr
		} else if got != now {
			err = fmt.Errorf("subPath %q resolves to %q inside the volume but to %q on the host", subPath, got, now)
		}
	}
	if err != nil {
		h.Close()
		return nil, err
	}
	return h, nil
}

// subPathDir is where the subPath of a container's index-th volumeMount is
// bind-mounted for the runtime to mount in turn (the kubelet's
// volume-subpaths/<volume>/<container>/<index>).
func (r *Runtime) subPathDir(pod *v1.Pod, volume, container string, index int) string {
	return filepath.Join(r.podDir(pod.UID), "volume-subpaths", volume, container, strconv.Itoa(index))
}

// bindSubPath bind-mounts subPath of the volume folder root onto target,
// replacing what an earlier start of the container mounted there.
func bindSubPath(root, subPath, target string) error {
	h, err := openSubPath(root, subPath)
	if err != nil {
		return err
	}
	defer h.Close()
	fi, err := h.Stat()
	if err != nil {
		return err
	}
	for mounted(target) {
		if err := unix.Unmount(target, unix.MNT_DETACH); err != nil {
			return fmt.Errorf("unmount %q: %w", target, err)
		}
	}
	if err := os.MkdirAll(filepath.Dir(target), 0o700); err != nil {
		return err
	}
	// The mount point has the type of what is mounted on it; a subPath that
	// changed type since the last start gets a new one. os.Remove never
	// recurses, and nothing is mounted there any more.
	if tfi, err := os.Lstat(target); err == nil && tfi.IsDir() != fi.IsDir() {
		if err := os.Remove(target); err != nil {
			return err
		}
	}
	if fi.IsDir() {
		if err := os.Mkdir(target, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
			return err
		}
	} else {
		f, err := os.OpenFile(target, os.O_CREATE|os.O_RDONLY, 0o600)
		if err != nil {
			return err
		}
		f.Close()
	}
	src := "/proc/self/fd/" + strconv.Itoa(int(h.Fd()))
	if err := unix.Mount(src, target, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind-mount subPath %q onto %q: %w", subPath, target, err)
	}
	return nil
}

// unmountSubPaths unmounts every subPath bind of the pod and removes the
// mount points. Nothing is removed recursively, so a bind that could not
// be unmounted keeps what it shows (a hostPath's files) out of reach of
// the pod folder's removal.
func (r *Runtime) unmountSubPaths(pod *v1.Pod) error {
	base := filepath.Join(r.podDir(pod.UID), "volume-subpaths")
	var errs []error
	var dirs []string
	err := filepath.WalkDir(base, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return nil
			}
			return err
		}
		depth := strings.Count(strings.TrimPrefix(p, base), "/")
		if depth < 3 {
			dirs = append(dirs, p)
			return nil
		}
		// A mount point: volume/container/index.
		for mounted(p) {
			if err := unix.Unmount(p, unix.MNT_DETACH); err != nil {
				errs = append(errs, fmt.Errorf("unmount %q: %w", p, err))
				return filepath.SkipDir
			}
		}
		if err := os.Remove(p); err != nil {
			errs = append(errs, err)
		}
		if d.IsDir() {
			return filepath.SkipDir
		}
		return nil
	})
	if err != nil {
		errs = append(errs, err)
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		if err := os.Remove(dirs[i]); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
