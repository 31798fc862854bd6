package evs

import (
	"context"
	"sync"

	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/sig-storage-lib-external-provisioner/v13/controller"
)

// newControllerMu makes NewProvisionController one call at a time in this
// process: the library registers core/v1 into client-go's global scheme on
// every call (map writes), and the control plane starts the cci-obs and
// cci-sfs provisioners at once ("fatal error: concurrent map writes" at a
// control-plane start).
var newControllerMu sync.Mutex

// NewProvisionController is the provisioner library's constructor, called
// one at a time; every provisioner of CCI (cci-evs, cci-obs, cci-sfs) makes
// its controller with it.
func NewProvisionController(ctx context.Context, kube kubernetes.Interface, name string, p controller.Provisioner, options ...func(*controller.ProvisionController) error) *controller.ProvisionController {
	newControllerMu.Lock()
	defer newControllerMu.Unlock()
	return controller.NewProvisionController(ctx, kube, name, p, options...)
}

// LockScheme takes the lock of client-go's global scheme that
// NewProvisionController takes, for another constructor that registers
// types in it (the snapshot controllers); call the returned func to
// release it.
func LockScheme() (unlock func()) {
	newControllerMu.Lock()
	return newControllerMu.Unlock
}
