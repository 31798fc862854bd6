// Package sfs is CCI's shared file system (cci-sfs): a volume that many
// pods on any host mount at once, of exactly the claimed size.
//
// The kernels CCI runs on here have neither the NFS server nor the NFS
// client, so the file systems are not exported over NFS. The control
// plane keeps each volume as a cci-evs disk of its own (an XFS file
// system on a sparse file of exactly the claim's size, on a loop device:
// internal/evs), so the size is a real limit (ENOSPC past it), and serves
// it over WebDAV (golang.org/x/net/webdav) with the tenant's storage keys
// as its password; every agent mounts it with rclone's FUSE client
// (internal/rclone) once per host, uncached (rclone --vfs-cache-mode
// off: the close of a written file waits for its upload) so that a file
// past the size fails in the pod.
//
//	claim ─► provisioner (control plane): disk made and mounted under
//	         <data>/sfs/staged/<pv>; the tenant's keys in its Secret
//	pod   ─► agent: rclone mount of https?://<server>/<pv>/ ─► bind into pod
//	claim grown ─► control plane: disk and mounted file system grown
//	         online (the cci-evs resizer), then the PV's and claim's capacity
package sfs

import (
	"context"
	"crypto/subtle"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/webdav"
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/sig-storage-lib-external-provisioner/v13/controller"

	"github.com/cci-project/cci/internal/evs"
	"github.com/cci-project/cci/internal/obs"
)

const (
	// Driver is the provisioner of cci-sfs and the CSI driver its
	// PersistentVolumes carry.
	Driver = "sfs.cci.io"
	// ClassName is the StorageClass of cci-sfs.
	ClassName = evs.SharedClassName
	// EndpointAttribute is the volume's WebDAV URL.
	EndpointAttribute = "cci.io/endpoint"
)

// Server keeps the volumes of cci-sfs and serves them over WebDAV.
type Server struct {
	// Pool holds the volumes' disks (<data>/sfs).
	Pool *evs.Pool
	// Store issues the tenants' keys, which are the volumes' passwords.
	Store *obs.Store
	// Listen is host:port the WebDAV server listens on; Endpoint is the
	// URL hosts reach it at.
	Listen, Endpoint string
	Log              *slog.Logger

	mu    sync.Mutex
	locks map[string]webdav.LockSystem
}

func (s *Server) ownerFile(pv string) string { return filepath.Join(s.Pool.Dir, "owners", pv) }

// ServeHTTP serves /<volume>/… of the volume's file system to its
// tenant's keys (HTTP basic authentication: access key ID and secret).
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	name, _, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
	if name == "" || name == "." || name == ".." {
		http.NotFound(w, r)
		return
	}
	owner, err := os.ReadFile(s.ownerFile(name))
	if err != nil {
		http.NotFound(w, r)
		return
	}
	user, pass, ok := r.BasicAuth()
	creds, err := s.Store.TenantCredentials(strings.TrimSpace(string(owner)))
	if !ok || err != nil || subtle.ConstantTimeCompare([]byte(user), []byte(creds.AccessKeyID)) != 1 ||
		subtle.ConstantTimeCompare([]byte(pass), []byte(creds.SecretAccessKey)) != 1 {
		w.Header().Set("WWW-Authenticate", `Basic realm="cci-sfs"`)
		http.Error(w, "this volume takes the keys of its tenant (Secret "+obs.SecretName+")", http.StatusUnauthorized)
		return
	}
	// Mounted at provisioning; mounted again here after a host restart.
	dir, err := s.Pool.Stage(name, evs.DefaultFSType)
	if err != nil {
		s.Log.Error("stage sfs volume", "pv", name, "err", err)
		http.Error(w, "volume unavailable", http.StatusServiceUnavailable)
		return
	}
	s.mu.Lock()
	if s.locks == nil {
		s.locks = map[string]webdav.LockSystem{}
	}
	ls, ok := s.locks[name]
	if !ok {
		ls = webdav.NewMemLS()
		s.locks[name] = ls
	}
	s.mu.Unlock()
	h := &webdav.Handler{Prefix: "/" + name, FileSystem: webdav.Dir(dir), LockSystem: ls}
	h.ServeHTTP(w, r)
}

// Run serves WebDAV until ctx ends.
func (s *Server) Run(ctx context.Context) error {
	l, err := net.Listen("tcp", s.Listen)
	if err != nil {
		return fmt.Errorf("cci-sfs file server: %w", err)
	}
	srv := &http.Server{Handler: s, ReadHeaderTimeout: 30 * time.Second}
	go func() {
		<-ctx.Done()
		c, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(c)
	}()
	if err := srv.Serve(l); err != http.ErrServerClosed {
		return fmt.Errorf("cci-sfs file server: %w", err)
	}
	return nil
}

// Provisioner makes a volume per claim.
type Provisioner struct {
	Server *Server
	Kube   kubernetes.Interface
}

var _ controller.Provisioner = (*Provisioner)(nil)

// Provision makes the claim's disk on the control plane's host, mounts
// it, and gives the namespace its keys.
func (p *Provisioner) Provision(ctx context.Context, opts controller.ProvisionOptions) (*v1.PersistentVolume, controller.ProvisioningState, error) {
	pvc := opts.PVC
	if pvc.Spec.VolumeMode != nil && *pvc.Spec.VolumeMode == v1.PersistentVolumeBlock {
		return nil, controller.ProvisioningFinished, fmt.Errorf("StorageClass %s is a shared file system, not a block device: use volumeMode Filesystem, or StorageClass %s for a block device", ClassName, evs.ClassName)
	}
	req, ok := pvc.Spec.Resources.Requests[v1.ResourceStorage]
	if !ok || req.IsZero() {
		return nil, controller.ProvisioningFinished, fmt.Errorf("claim %s/%s asks for no storage: set spec.resources.requests.storage", pvc.Namespace, pvc.Name)
	}
	size := evs.RoundSize(req)
	s := p.Server
	if err := s.Pool.Create(opts.PVName, size, false); err != nil {
		free, _ := s.Pool.Free()
		return nil, controller.ProvisioningFinished, fmt.Errorf("cannot make a shared file system of %s: the control plane's cci-sfs folder has %s free; ask for less: %w",
			req.String(), resource.NewQuantity(free, resource.BinarySI).String(), err)
	}
	if err := os.MkdirAll(filepath.Dir(s.ownerFile(opts.PVName)), 0o700); err != nil {
		return nil, controller.ProvisioningInBackground, err
	}
	if err := os.WriteFile(s.ownerFile(opts.PVName), []byte(pvc.Namespace+"\n"), 0o600); err != nil {
		return nil, controller.ProvisioningInBackground, err
	}
	dir, err := s.Pool.Stage(opts.PVName, evs.DefaultFSType)
	if err != nil {
		return nil, controller.ProvisioningInBackground, fmt.Errorf("make the file system of %s: %w", opts.PVName, err)
	}
	// Pods run as any user: the root of the volume is everyone's, as an
	// NFS export's usually is.
	if err := os.Chmod(dir, 0o777); err != nil {
		return nil, controller.ProvisioningInBackground, err
	}
	if err := obs.EnsureSecret(ctx, p.Kube, s.Store, pvc.Namespace); err != nil {
		return nil, controller.ProvisioningInBackground, err
	}
	s.Log.Info("shared file system made", "pv", opts.PVName, "claim", pvc.Namespace+"/"+pvc.Name, "bytes", size)
	reclaim := v1.PersistentVolumeReclaimDelete
	if opts.StorageClass.ReclaimPolicy != nil {
		reclaim = *opts.StorageClass.ReclaimPolicy
	}
	mode := v1.PersistentVolumeFilesystem
	return &v1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: opts.PVName},
		Spec: v1.PersistentVolumeSpec{
			PersistentVolumeReclaimPolicy: reclaim,
			AccessModes:                   pvc.Spec.AccessModes,
			VolumeMode:                    &mode,
			Capacity:                      v1.ResourceList{v1.ResourceStorage: *resource.NewQuantity(size, resource.BinarySI)},
			MountOptions:                  opts.StorageClass.MountOptions,
			PersistentVolumeSource: v1.PersistentVolumeSource{CSI: &v1.CSIPersistentVolumeSource{
				Driver:               Driver,
				VolumeHandle:         opts.PVName,
				VolumeAttributes:     map[string]string{EndpointAttribute: strings.TrimSuffix(s.Endpoint, "/") + "/" + opts.PVName},
				NodePublishSecretRef: &v1.SecretReference{Namespace: pvc.Namespace, Name: obs.SecretName},
			}},
		},
	}, controller.ProvisioningFinished, nil
}

// Delete unmounts and removes the volume's disk.
func (p *Provisioner) Delete(_ context.Context, pv *v1.PersistentVolume) error {
	if pv.Spec.CSI == nil || pv.Spec.CSI.Driver != Driver {
		return &controller.IgnoredError{Reason: "not a " + ClassName + " volume"}
	}
	s := p.Server
	name := pv.Spec.CSI.VolumeHandle
	if _, err := s.Pool.Unstage(name); err != nil {
		return fmt.Errorf("unmount shared file system %q: %w", name, err)
	}
	if err := s.Pool.Delete(name); err != nil {
		return err
	}
	_ = os.Remove(s.ownerFile(name))
	s.Log.Info("shared file system removed", "pv", name)
	return nil
}

// Run provisions cci-sfs claims, and grows their disks online when the
// claims ask for more (the cci-evs resizer, on the disks of this host),
// until ctx ends.
func Run(ctx context.Context, kube kubernetes.Interface, s *Server) error {
	mine := func(pv *v1.PersistentVolume) bool { return pv.Spec.CSI != nil && pv.Spec.CSI.Driver == Driver }
	go evs.RunResizer(ctx, kube, "sfs-resizer", mine, s.Pool, s.Log)
	pc := evs.NewProvisionController(ctx, kube, Driver, &Provisioner{Server: s, Kube: kube},
		controller.LeaderElection(false),
		controller.FailedProvisionThreshold(0),
		controller.FailedDeleteThreshold(0),
	)
	pc.Run(ctx)
	return nil
}
