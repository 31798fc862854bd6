// Package rclone stages remote file systems on a host for its pods: the
// buckets of cci-obs (S3) and the shared file systems of cci-sfs (WebDAV),
// each mounted once per host with rclone's FUSE client (`rclone mount`,
// Debian's package) and bind-mounted into every pod of the host that
// uses it.
//
// The rclone processes are not the agent's children: `--daemon` detaches
// each into a session of its own, so they outlive the agent (its restart,
// its crash) and the pods keep working mounts. An agent that starts finds
// the mounts where it left them and re-adopts a live one; a mount whose
// rclone died (FUSE answers ENOTCONN) is lazily unmounted and mounted
// afresh when a pod next needs it.
package rclone

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Remote is one volume as rclone reaches it.
type Remote struct {
	// Name is the volume's name, unique on the host (the
	// PersistentVolume's): the staged folder is named after it.
	Name string
	// Type is rclone's backend: "s3" or "webdav".
	Type string
	// Options are the backend's options (rclone's config keys, e.g.
	// endpoint, access_key_id); secrets among them stay out of command
	// lines (they are passed in the environment of rclone).
	Options map[string]string
	// Path is the bucket or folder on the remote; "" for its root.
	Path string
	// CacheMode is rclone's --vfs-cache-mode: "writes" gives files that
	// can be opened for reading and writing at once and written at any
	// offset, uploaded when closed; "off" streams writes to the remote as
	// they come, so that an error of the remote (a full file system)
	// reaches the writer.
	CacheMode string
}

// Mounter stages remotes under Dir. Its methods may be called
// concurrently; they are idempotent.
type Mounter struct {
	// Dir holds staged/<volume> (the mount points), cache/ and logs/.
	Dir string
	// Binary is rclone; default "rclone" from PATH.
	Binary string

	mu sync.Mutex
}

func (m *Mounter) binary() string {
	if m.Binary != "" {
		return m.Binary
	}
	return "rclone"
}

// Staging is the folder a volume is mounted on.
func (m *Mounter) Staging(name string) string { return filepath.Join(m.Dir, "staged", name) }

// Owns tells whether dir is a staging folder of this Mounter.
func (m *Mounter) Owns(dir string) bool { return filepath.Dir(dir) == filepath.Join(m.Dir, "staged") }

// Stage mounts r on the host, or re-adopts its live mount, and returns
// the folder.
func (m *Mounter) Stage(ctx context.Context, r Remote) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	dir := m.Staging(r.Name)
	if _, ok := mountDevice(dir); ok {
		if alive(dir) {
			return dir, nil
		}
		// rclone is gone: the mount answers nothing but ENOTCONN.
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			return "", fmt.Errorf("unmount the dead mount of volume %q at %q: %w", r.Name, dir, err)
		}
	}
	if _, err := exec.LookPath(m.binary()); err != nil {
		return "", fmt.Errorf("volume %q needs rclone on the host (Debian: apt-get install rclone fuse3; make setup installs it): %w", r.Name, err)
	}
	for _, d := range []string{dir, filepath.Join(m.Dir, "cache", r.Name), filepath.Join(m.Dir, "logs")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return "", err
		}
	}
	// The staged folder itself is reached by the pods' bind mounts only.
	_ = os.Chmod(dir, 0o755)
	// Only what rclone needs: the host's own AWS_* or proxy settings
	// (AWS_CA_BUNDLE, AWS_PROFILE …) must not change how it reaches the
	// volume.
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + m.Dir}
	pfx := "RCLONE_CONFIG_CCI_"
	env = append(env, pfx+"TYPE="+r.Type)
	for k, v := range r.Options {
		env = append(env, pfx+strings.ToUpper(k)+"="+v)
	}
	mode := r.CacheMode
	if mode == "" {
		mode = "writes"
	}
	logFile := filepath.Join(m.Dir, "logs", r.Name+".log")
	args := []string{"mount", "cci:" + r.Path, dir,
		"--daemon",
		// The configuration is all in the environment; no file is read.
		"--config", filepath.Join(m.Dir, "rclone.conf"),
		// Pods run as any user; the root of the host mounts.
		"--allow-other", "--umask", "0",
		"--vfs-cache-mode", mode,
		"--cache-dir", filepath.Join(m.Dir, "cache", r.Name),
		// What other hosts and S3 clients change shows within seconds.
		"--dir-cache-time", "5s",
		"--log-file", logFile, "--log-level", "INFO",
	}
	cmd := exec.CommandContext(ctx, m.binary(), args...)
	cmd.Env = env
	// Its own session: neither the agent's signals nor its process
	// group's end reach it.
	cmd.SysProcAttr = &unix.SysProcAttr{Setsid: true}
	// No pipes: the daemon would hold them open and Run would wait for
	// it. What rclone says goes to its log file.
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("rclone mount of volume %q: %w%s", r.Name, err, tail(logFile))
	}
	// `--daemon` returns once the daemon runs; the mount follows.
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, ok := mountDevice(dir); ok && alive(dir) {
			return dir, nil
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("rclone did not mount volume %q within 30s: %s", r.Name, tail(logFile))
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Unstage unmounts the volume staged at dir once no pod's bind mount of
// it is left (a call while one is left is no change). Its rclone exits
// when its mount goes.
func (m *Mounter) Unstage(dir string) error {
	if !m.Owns(dir) {
		return fmt.Errorf("%q is not a staged rclone volume of this host", dir)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	dev, ok := mountDevice(dir)
	if !ok {
		return nil
	}
	if n := mountsOf(dev); n > 1 {
		return nil
	}
	if err := unix.Unmount(dir, 0); err != nil {
		if !errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("unmount volume at %q: %w", dir, err)
		}
		// A file still open in a dying container: detach now, the
		// kernel ends it when the last user goes.
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			return fmt.Errorf("unmount volume at %q: %w", dir, err)
		}
	}
	_ = os.RemoveAll(filepath.Join(m.Dir, "cache", filepath.Base(dir)))
	return nil
}

// alive tells whether the FUSE mount at dir answers: a mount whose rclone
// died fails with ENOTCONN; one whose rclone hangs does not answer in
// time.
func alive(dir string) bool {
	done := make(chan error, 1)
	go func() {
		var st unix.Statfs_t
		done <- unix.Statfs(dir, &st)
	}()
	select {
	case err := <-done:
		return err == nil
	case <-time.After(10 * time.Second):
		return false
	}
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

// mountsOf counts the mounts of the device dev (the staged one and the
// pods' bind mounts: a FUSE mount's device is its own).
func mountsOf(dev string) int {
	raw, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return 0
	}
	n := 0
	for _, line := range strings.Split(string(raw), "\n") {
		if f := strings.Fields(line); len(f) > 4 && f[2] == dev {
			n++
		}
	}
	return n
}

// tail is the end of rclone's log, for errors.
func tail(path string) string {
	raw, err := os.ReadFile(path)
	if err != nil || len(raw) == 0 {
		return ""
	}
	if len(raw) > 600 {
		raw = raw[len(raw)-600:]
	}
	return " (rclone log: " + strings.TrimSpace(string(raw)) + ")"
}

// Obscure turns a password into the form rclone's configuration takes
// (its reversible "obscure" encoding), through rclone itself.
func (m *Mounter) Obscure(ctx context.Context, secret string) (string, error) {
	cmd := exec.CommandContext(ctx, m.binary(), "obscure", "-")
	cmd.Stdin = strings.NewReader(secret)
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("rclone obscure: %w", err)
	}
	return strings.TrimSpace(string(out)), nil
}
