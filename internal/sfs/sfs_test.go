package sfs

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	v1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"sigs.k8s.io/sig-storage-lib-external-provisioner/v13/controller"

	"github.com/cci-project/cci/internal/evs"
	"github.com/cci-project/cci/internal/obs"
	"github.com/cci-project/cci/internal/rclone"
)

func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// TestVolumeSharedAndFull provisions a 64 MiB volume, mounts it with
// rclone as an agent does, and checks that the keys are needed, that
// files go through and that 100 MiB do not fit.
func TestVolumeSharedAndFull(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("loop devices and mounts need root")
	}
	for _, bin := range []string{"rclone", "mkfs.xfs", "losetup"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("%s is not installed (make setup)", bin)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	storeAddr := freeAddr(t)
	store, err := obs.Open(t.TempDir(), storeAddr, "http://"+storeAddr)
	if err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	srv := &Server{Pool: &evs.Pool{Dir: t.TempDir()}, Store: store, Listen: addr, Endpoint: "http://" + addr, Log: slog.Default()}
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	defer func() { cancel(); <-done }()

	kube := fake.NewClientset()
	p := &Provisioner{Server: srv, Kube: kube}
	pvc := &v1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: "shared", Namespace: "ns"},
		Spec: v1.PersistentVolumeClaimSpec{
			AccessModes: []v1.PersistentVolumeAccessMode{v1.ReadWriteMany},
			Resources:   v1.VolumeResourceRequirements{Requests: v1.ResourceList{v1.ResourceStorage: resource.MustParse("64Mi")}},
		},
	}
	pv, state, err := p.Provision(ctx, controller.ProvisionOptions{PVName: "pvc-sfs-test", PVC: pvc, StorageClass: &storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: ClassName}}})
	if err != nil || state != controller.ProvisioningFinished {
		t.Fatalf("provision: %v (%v)", err, state)
	}
	defer func() {
		if err := p.Delete(context.Background(), pv); err != nil {
			t.Errorf("delete: %v", err)
		}
	}()
	sec, err := kube.CoreV1().Secrets("ns").Get(ctx, obs.SecretName, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("the namespace's keys: %v", err)
	}
	m := &rclone.Mounter{Dir: t.TempDir()}
	mount := func(pass string) (string, error) {
		obscured, err := m.Obscure(ctx, pass)
		if err != nil {
			t.Fatal(err)
		}
		return m.Stage(ctx, rclone.Remote{Name: pv.Name, Type: "webdav", CacheMode: "off", Options: map[string]string{
			"url": pv.Spec.CSI.VolumeAttributes[EndpointAttribute], "vendor": "other",
			"user": string(sec.Data["AWS_ACCESS_KEY_ID"]), "pass": obscured,
		}})
	}
	dir, err := mount(string(sec.Data["AWS_SECRET_ACCESS_KEY"]))
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := m.Unstage(dir); err != nil {
			t.Errorf("unstage: %v", err)
		}
	}()
	if err := os.WriteFile(filepath.Join(dir, "note"), []byte("hello"), 0o644); err != nil {
		log, _ := os.ReadFile(filepath.Join(m.Dir, "logs", pv.Name+".log"))
		t.Fatalf("write: %v\n%s", err, log)
	}
	staged := srv.Pool.Staged(pv.Name)
	if b, err := os.ReadFile(filepath.Join(staged, "note")); err != nil || string(b) != "hello" {
		t.Fatalf("the server's file: %q %v", b, err)
	}
	// 100 MiB into 64 MiB: the writer must see an error.
	f, err := os.Create(filepath.Join(dir, "big"))
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 1<<20)
	var werr error
	for i := 0; i < 100 && werr == nil; i++ {
		_, werr = f.Write(chunk)
	}
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		t.Fatal("100 MiB written into a 64 MiB volume")
	}
	t.Logf("write past the size: %v", werr)
	var errno syscall.Errno
	if !errors.As(werr, &errno) {
		t.Logf("not an errno: %T", werr)
	}
	_ = os.Remove(filepath.Join(dir, "big"))
	if err := os.WriteFile(filepath.Join(dir, "after"), []byte("ok"), 0o644); err != nil {
		t.Fatalf("write after the failure: %v", err)
	}
}
