package runtime

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	authenticationv1 "k8s.io/api/authentication/v1"
	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/sets"
	resourcehelper "k8s.io/component-helpers/resource"
	podresource "k8s.io/kubernetes/pkg/api/v1/resource"
	kubecontainer "k8s.io/kubernetes/pkg/kubelet/container"
	volumeutil "k8s.io/kubernetes/pkg/volume/util"
	volumevalidation "k8s.io/kubernetes/pkg/volume/validation"
)

func (r *Runtime) volumeDir(pod *v1.Pod, name string) string {
	return filepath.Join(r.podDir(pod.UID), "volumes", name)
}

func (r *Runtime) etcDir(pod *v1.Pod) string {
	return filepath.Join(r.podDir(pod.UID), "etc")
}

// refreshVolumes brings the pod's file volumes up to date with their
// sources (a changed configMap or secret, a service-account token near its
// expiry). Failures are events; the files stay as they were.
func (w *podWorker) refreshVolumes() {
	w.mu.Lock()
	active := w.rec.SandboxReady && !w.rec.Released
	w.mu.Unlock()
	if !active {
		return
	}
	if w.deleting == nil {
		w.reviveClaims()
	}
	pod := w.pod()
	for _, vol := range pod.Spec.Volumes {
		if vol.ConfigMap == nil && vol.Secret == nil && vol.DownwardAPI == nil && vol.Projected == nil {
			continue
		}
		if err := w.r.prepareVolume(w.ctx(), pod, vol); err != nil {
			w.event(v1.EventTypeWarning, "FailedMount", "MountVolume.SetUp failed for volume %q : %v", vol.Name, err)
		}
	}
}

// prepareVolumes materializes every volume of the pod under its folder.
func (r *Runtime) prepareVolumes(ctx context.Context, pod *v1.Pod) error {
	for _, vol := range pod.Spec.Volumes {
		if err := r.prepareVolume(ctx, pod, vol); err != nil {
			return &mountError{volume: vol.Name, err: err}
		}
	}
	return nil
}

// mountError is a volume that could not be set up, reported as the kubelet does.
type mountError struct {
	volume string
	err    error
}

func (e *mountError) Error() string {
	return fmt.Sprintf("MountVolume.SetUp failed for volume %q : %v", e.volume, e.err)
}

func (e *mountError) Unwrap() error { return e.err }

func (r *Runtime) prepareVolume(ctx context.Context, pod *v1.Pod, vol v1.Volume) error {
	if vol.HostPath != nil {
		return prepareHostPath(vol.HostPath)
	}
	if claim, _ := claimName(pod, vol); claim != "" {
		return r.prepareClaim(ctx, pod, vol, claim)
	}
	dir := r.volumeDir(pod, vol.Name)
	if vol.EmptyDir != nil {
		return r.prepareEmptyDir(dir, vol.EmptyDir)
	}
	if err := os.MkdirAll(dir, 0o777); err != nil {
		return err
	}
	switch {
	case vol.ConfigMap != nil:
		return r.writeFiles(dir, func() (map[string]file, error) { return r.configMapFiles(pod.Namespace, vol.ConfigMap) })
	case vol.Secret != nil:
		return r.writeFiles(dir, func() (map[string]file, error) { return r.secretFiles(pod.Namespace, vol.Secret) })
	case vol.DownwardAPI != nil:
		return r.writeFiles(dir, func() (map[string]file, error) {
			return downwardFiles(pod, vol.DownwardAPI.Items, vol.DownwardAPI.DefaultMode, r.cfg.Allocatable)
		})
	case vol.Projected != nil:
		return r.writeFiles(dir, func() (map[string]file, error) { return r.projectedFiles(ctx, pod, vol.Name, vol.Projected) })
	case vol.Image != nil:
		// Pulled and mounted when a container that mounts it starts, so
		// that a failed pull fails that container (imagevolume.go).
		return nil
	default:
		return fmt.Errorf("this volume type is not supported yet (supported: emptyDir, configMap, secret, downwardAPI, projected, hostPath, image, persistentVolumeClaim, ephemeral)")
	}
}

func prepareHostPath(hp *v1.HostPathVolumeSource) error {
	t := v1.HostPathUnset
	if hp.Type != nil {
		t = *hp.Type
	}
	fi, err := os.Stat(hp.Path)
	switch t {
	case v1.HostPathDirectoryOrCreate:
		if errors.Is(err, os.ErrNotExist) {
			return os.MkdirAll(hp.Path, 0o755)
		}
	case v1.HostPathFileOrCreate:
		if errors.Is(err, os.ErrNotExist) {
			if err := os.MkdirAll(filepath.Dir(hp.Path), 0o755); err != nil {
				return err
			}
			f, err := os.OpenFile(hp.Path, os.O_CREATE, 0o644)
			if err != nil {
				return err
			}
			return f.Close()
		}
	case v1.HostPathDirectory:
		if err != nil || !fi.IsDir() {
			return fmt.Errorf("hostPath %q is not a directory", hp.Path)
		}
	case v1.HostPathFile:
		if err != nil || !fi.Mode().IsRegular() {
			return fmt.Errorf("hostPath %q is not a file", hp.Path)
		}
	}
	return nil
}

// prepareEmptyDir makes an emptyDir as the kubelet does: a folder of mode
// 0777 whatever the umask, so that any user of the pod may write it
// (made once: a container's own chmod stays), or for medium Memory a tmpfs
// of mode 1777 mounted on it.
func (r *Runtime) prepareEmptyDir(dir string, ed *v1.EmptyDirVolumeSource) error {
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o777); err != nil {
			return err
		}
		if err := os.Chmod(dir, 0o777); err != nil {
			return err
		}
	} else if err != nil {
		return err
	}
	if ed.Medium != v1.StorageMediumMemory {
		return nil
	}
	if mounted(dir) {
		return nil
	}
	opts := "mode=1777"
	if ed.SizeLimit != nil && !ed.SizeLimit.IsZero() {
		opts += ",size=" + strconv.FormatInt(ed.SizeLimit.Value(), 10)
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NODEV|unix.MS_NOSUID, opts); err != nil {
		return fmt.Errorf("mount tmpfs on %q: %w", dir, err)
	}
	return nil
}

// mounted tells whether dir is a mount point.
func mounted(dir string) bool {
	raw, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if f := strings.Fields(line); len(f) > 4 && f[4] == dir {
			return true
		}
	}
	return false
}

// unmountVolumes unmounts what prepareVolumes and containerMounts mounted
// (subPath binds, memory emptyDirs, image volumes) and removes the views of
// the image volumes.
func (r *Runtime) unmountVolumes(pod *v1.Pod) error {
	var errs []error
	if err := r.unmountSubPaths(pod); err != nil {
		errs = append(errs, err)
	}
	for _, vol := range pod.Spec.Volumes {
		dir := r.volumeDir(pod, vol.Name)
		for mounted(dir) {
			if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
				errs = append(errs, fmt.Errorf("unmount %q: %w", dir, err))
				break
			}
		}
	}
	if err := r.releaseClaims(pod); err != nil {
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		// Only once nothing shows them: a view still mounted cannot go.
		if err := r.removeImageVolumes(r.ctx, pod); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

type file struct {
	data []byte
	mode os.FileMode
}

// writeFiles makes the folder hold exactly the files render returns, through
// the kubelet's atomic writer: the files live in a timestamped folder that
// a `..data` symlink switches to at once, so a container never sees half an
// update.
func (r *Runtime) writeFiles(dir string, render func() (map[string]file, error)) error {
	files, err := render()
	if err != nil {
		return err
	}
	payload := make(map[string]volumeutil.FileProjection, len(files))
	for name, f := range files {
		payload[name] = volumeutil.FileProjection{Data: f.data, Mode: int32(f.mode)}
	}
	w, err := volumeutil.NewAtomicWriter(dir, "cci")
	if err != nil {
		return err
	}
	return w.Write(payload, nil)
}

func mode(item *int32, def *int32) os.FileMode {
	if item != nil {
		return os.FileMode(*item)
	}
	if def != nil {
		return os.FileMode(*def)
	}
	return 0o644
}

func keyFiles(data map[string][]byte, items []v1.KeyToPath, defMode *int32, optional bool, what string) (map[string]file, error) {
	out := map[string]file{}
	if len(items) == 0 {
		for k, v := range data {
			out[k] = file{v, mode(nil, defMode)}
		}
		return out, nil
	}
	for _, it := range items {
		v, ok := data[it.Key]
		if !ok {
			if optional {
				continue
			}
			return nil, fmt.Errorf("%s has no key %q", what, it.Key)
		}
		out[it.Path] = file{v, mode(it.Mode, defMode)}
	}
	return out, nil
}

func (r *Runtime) configMapData(ns, name string) (map[string][]byte, error) {
	cm, err := r.cfg.ConfigMaps.ConfigMaps(ns).Get(name)
	if err != nil {
		return nil, err
	}
	data := map[string][]byte{}
	for k, v := range cm.Data {
		data[k] = []byte(v)
	}
	for k, v := range cm.BinaryData {
		data[k] = v
	}
	return data, nil
}

func (r *Runtime) configMapFiles(ns string, src *v1.ConfigMapVolumeSource) (map[string]file, error) {
	optional := src.Optional != nil && *src.Optional
	data, err := r.configMapData(ns, src.Name)
	if apierrors.IsNotFound(err) && optional {
		return map[string]file{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("configmap %q: %w", src.Name, err)
	}
	return keyFiles(data, src.Items, src.DefaultMode, optional, fmt.Sprintf("configmap %q", src.Name))
}

func (r *Runtime) secretFiles(ns string, src *v1.SecretVolumeSource) (map[string]file, error) {
	optional := src.Optional != nil && *src.Optional
	s, err := r.cfg.Secrets.Secrets(ns).Get(src.SecretName)
	if apierrors.IsNotFound(err) && optional {
		return map[string]file{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("secret %q: %w", src.SecretName, err)
	}
	return keyFiles(s.Data, src.Items, src.DefaultMode, optional, fmt.Sprintf("secret %q", src.SecretName))
}

func (r *Runtime) projectedFiles(ctx context.Context, pod *v1.Pod, volName string, src *v1.ProjectedVolumeSource) (map[string]file, error) {
	out := map[string]file{}
	merge := func(m map[string]file) {
		for k, v := range m {
			out[k] = v
		}
	}
	for i, s := range src.Sources {
		switch {
		case s.ConfigMap != nil:
			optional := s.ConfigMap.Optional != nil && *s.ConfigMap.Optional
			data, err := r.configMapData(pod.Namespace, s.ConfigMap.Name)
			if apierrors.IsNotFound(err) && optional {
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("configmap %q: %w", s.ConfigMap.Name, err)
			}
			m, err := keyFiles(data, s.ConfigMap.Items, src.DefaultMode, optional, fmt.Sprintf("configmap %q", s.ConfigMap.Name))
			if err != nil {
				return nil, err
			}
			merge(m)
		case s.Secret != nil:
			optional := s.Secret.Optional != nil && *s.Secret.Optional
			sec, err := r.cfg.Secrets.Secrets(pod.Namespace).Get(s.Secret.Name)
			if apierrors.IsNotFound(err) && optional {
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("secret %q: %w", s.Secret.Name, err)
			}
			m, err := keyFiles(sec.Data, s.Secret.Items, src.DefaultMode, optional, fmt.Sprintf("secret %q", s.Secret.Name))
			if err != nil {
				return nil, err
			}
			merge(m)
		case s.DownwardAPI != nil:
			m, err := downwardFiles(pod, s.DownwardAPI.Items, src.DefaultMode, r.cfg.Allocatable)
			if err != nil {
				return nil, err
			}
			merge(m)
		case s.ServiceAccountToken != nil:
			tok, err := r.serviceAccountToken(ctx, pod, volName, s.ServiceAccountToken)
			if err != nil {
				return nil, err
			}
			out[s.ServiceAccountToken.Path] = file{[]byte(tok), mode(nil, src.DefaultMode)}
		case s.ClusterTrustBundle != nil:
			anchors, err := r.trustAnchors(ctx, s.ClusterTrustBundle)
			if err != nil {
				return nil, err
			}
			out[s.ClusterTrustBundle.Path] = file{anchors, mode(nil, src.DefaultMode)}
		case s.PodCertificate != nil:
			if r.cfg.PodCertificates == nil {
				return nil, fmt.Errorf("podCertificate projections are not served on this node")
			}
			key, chain, err := r.cfg.PodCertificates.GetPodCertificateCredentialBundle(ctx, pod.Namespace, pod.Name, string(pod.UID), volName, i)
			if err != nil {
				return nil, err
			}
			pc := s.PodCertificate
			// The kubelet's layout (pkg/volume/projected): the bundle is
			// the key followed by the chain.
			if pc.CredentialBundlePath != "" {
				out[pc.CredentialBundlePath] = file{append(append([]byte{}, key...), chain...), mode(nil, src.DefaultMode)}
			}
			if pc.KeyPath != "" {
				out[pc.KeyPath] = file{key, mode(nil, src.DefaultMode)}
			}
			if pc.CertificateChainPath != "" {
				out[pc.CertificateChainPath] = file{chain, mode(nil, src.DefaultMode)}
			}
		default:
			return nil, fmt.Errorf("projected source not supported yet (supported: configMap, secret, downwardAPI, serviceAccountToken, clusterTrustBundle, podCertificate)")
		}
	}
	return out, nil
}

// trustAnchors are the PEM trust anchors a clusterTrustBundle projection
// selects, as the kubelet's projected volume plugin reads them: one bundle
// by name, or every bundle of a signer that the label selector matches (a
// nil selector matches none); an optional projection that matches nothing
// is an empty file.
func (r *Runtime) trustAnchors(ctx context.Context, src *v1.ClusterTrustBundleProjection) ([]byte, error) {
	if r.cfg.TrustBundles == nil {
		return nil, fmt.Errorf("clusterTrustBundle projections are not served on this node")
	}
	allowMissing := src.Optional != nil && *src.Optional
	switch {
	case src.Name != nil:
		return r.cfg.TrustBundles.GetTrustAnchorsByName(ctx, *src.Name, allowMissing)
	case src.SignerName != nil:
		return r.cfg.TrustBundles.GetTrustAnchorsBySigner(ctx, *src.SignerName, src.LabelSelector, allowMissing)
	default:
		return nil, fmt.Errorf("ClusterTrustBundle projection requires either name or signerName to be set")
	}
}

// tokenEntry is a service-account token handed to a pod, kept until 80% of
// its life has passed (the kubelet's rule for refreshing it).
type tokenEntry struct {
	token   string
	refresh time.Time
}

func (r *Runtime) serviceAccountToken(ctx context.Context, pod *v1.Pod, volName string, src *v1.ServiceAccountTokenProjection) (string, error) {
	cacheKey := string(pod.UID) + "/" + volName + "/" + src.Path
	r.mu.Lock()
	cached, ok := r.tokens[cacheKey]
	r.mu.Unlock()
	if ok && time.Now().Before(cached.refresh) {
		return cached.token, nil
	}
	sa := pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	expiry := int64(3600)
	if src.ExpirationSeconds != nil {
		expiry = *src.ExpirationSeconds
	}
	var audiences []string
	if src.Audience != "" {
		audiences = []string{src.Audience}
	}
	tr, err := r.cfg.Kube.CoreV1().ServiceAccounts(pod.Namespace).CreateToken(ctx, sa, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{
			Audiences:         audiences,
			ExpirationSeconds: &expiry,
			BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("request token for service account %q: %w", sa, err)
	}
	life := tr.Status.ExpirationTimestamp.Sub(time.Now())
	r.mu.Lock()
	r.tokens[cacheKey] = tokenEntry{token: tr.Status.Token, refresh: time.Now().Add(life * 8 / 10)}
	r.mu.Unlock()
	return tr.Status.Token, nil
}

func downwardFiles(pod *v1.Pod, items []v1.DownwardAPIVolumeFile, defMode *int32, allocatable v1.ResourceList) (map[string]file, error) {
	out := map[string]file{}
	for _, it := range items {
		var val string
		switch {
		case it.FieldRef != nil:
			v, err := podField(pod, it.FieldRef.FieldPath)
			if err != nil {
				return nil, err
			}
			val = v
		case it.ResourceFieldRef != nil:
			v, err := resourceField(pod, it.ResourceFieldRef, allocatable)
			if err != nil {
				return nil, err
			}
			val = v
		}
		out[it.Path] = file{[]byte(val), mode(it.Mode, defMode)}
	}
	return out, nil
}

func podField(pod *v1.Pod, path string) (string, error) {
	switch path {
	case "metadata.name":
		return pod.Name, nil
	case "metadata.namespace":
		return pod.Namespace, nil
	case "metadata.uid":
		return string(pod.UID), nil
	case "metadata.labels":
		return formatMap(pod.Labels), nil
	case "metadata.annotations":
		return formatMap(pod.Annotations), nil
	case "spec.nodeName":
		return pod.Spec.NodeName, nil
	case "spec.serviceAccountName":
		return pod.Spec.ServiceAccountName, nil
	}
	if strings.HasPrefix(path, "metadata.labels['") && strings.HasSuffix(path, "']") {
		return pod.Labels[path[len("metadata.labels['"):len(path)-2]], nil
	}
	if strings.HasPrefix(path, "metadata.annotations['") && strings.HasSuffix(path, "']") {
		return pod.Annotations[path[len("metadata.annotations['"):len(path)-2]], nil
	}
	return "", fmt.Errorf("downward API field %q is not supported", path)
}

func formatMap(m map[string]string) string {
	keys := sets.List(sets.KeySet(m))
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%q\n", k, m[k])
	}
	return b.String()
}

// resourceField is a container's resource for the downward API. As on a
// kubelet, a limit the container does not set (nor the pod, with pod-level
// resources) reads as the node's allocatable.
func resourceField(pod *v1.Pod, ref *v1.ResourceFieldSelector, allocatable v1.ResourceList) (string, error) {
	name := ref.ContainerName
	if name == "" && len(pod.Spec.Containers) > 0 {
		name = pod.Spec.Containers[0].Name
	}
	if resourcehelper.IsPodLevelLimitsSet(pod) {
		allocatable = allocatable.DeepCopy()
		for _, res := range []v1.ResourceName{v1.ResourceCPU, v1.ResourceMemory, v1.ResourceEphemeralStorage} {
			if !resourcehelper.IsSupportedPodLevelResource(res) {
				continue
			}
			if val, ok := pod.Spec.Resources.Limits[res]; ok && !val.IsZero() {
				if _, ok := allocatable[res]; ok {
					allocatable[res] = val.DeepCopy()
				}
			}
		}
	}
	return podresource.ExtractResourceValueByContainerNameAndNodeAllocatable(ref, pod, name, allocatable)
}

// containerMounts lists the bind mounts of one container: its volumeMounts
// and the pod's /etc/hosts, /etc/hostname and /etc/resolv.conf.
func (r *Runtime) containerMounts(pod *v1.Pod, c *v1.Container, env []v1.EnvVar) ([]specs.Mount, error) {
	envs := make([]kubecontainer.EnvVar, 0, len(env))
	for _, e := range env {
		envs = append(envs, kubecontainer.EnvVar{Name: e.Name, Value: e.Value})
	}
	vols := map[string]*v1.Volume{}
	for i := range pod.Spec.Volumes {
		vols[pod.Spec.Volumes[i].Name] = &pod.Spec.Volumes[i]
	}
	var mounts []specs.Mount
	hasMount := map[string]bool{}
	for i, vm := range c.VolumeMounts {
		vol, ok := vols[vm.Name]
		if !ok {
			return nil, fmt.Errorf("volumeMount %q of container %q names no volume of the pod", vm.Name, c.Name)
		}
		src := r.volumeDir(pod, vm.Name)
		if vol.HostPath != nil {
			src = vol.HostPath.Path
		}
		subPath, err := mountSubPath(vm, envs)
		if err != nil {
			return nil, &configError{err}
		}
		if subPath != "" && vol.Image != nil {
			// containerd's CRI fails the container create here: a
			// CreateContainerError, not a configuration error.
			if err := checkImageSubPath(src, subPath); err != nil {
				return nil, fmt.Errorf("volumeMount %q of container %q: %w", vm.Name, c.Name, err)
			}
		}
		if subPath != "" {
			// Never a path joined onto the volume: see subpath.go.
			target := r.subPathDir(pod, vm.Name, c.Name, i)
			if err := bindSubPath(src, subPath, target); err != nil {
				return nil, &configError{fmt.Errorf("failed to prepare subPath for volumeMount %q of container %q: %w", vm.Name, c.Name, err)}
			}
			src = target
		}
		opts := []string{"rbind", "rprivate"}
		_, claimReadOnly := claimName(pod, *vol)
		if vm.ReadOnly || claimReadOnly || vol.ConfigMap != nil || vol.Secret != nil || vol.Projected != nil || vol.DownwardAPI != nil || vol.Image != nil {
			opts = append(opts, "ro")
		} else {
			opts = append(opts, "rw")
		}
		mounts = append(mounts, specs.Mount{Destination: vm.MountPath, Type: "bind", Source: src, Options: opts})
		hasMount[vm.MountPath] = true
	}
	for _, f := range []string{"hosts", "hostname", "resolv.conf"} {
		dst := "/etc/" + f
		if hasMount[dst] {
			continue
		}
		mounts = append(mounts, specs.Mount{Destination: dst, Type: "bind", Source: filepath.Join(r.etcDir(pod), f), Options: []string{"rbind", "rprivate", "rw"}})
	}
	if c.TerminationMessagePath != "" && !hasMount[c.TerminationMessagePath] {
		p, err := r.resetTerminationFile(pod, c.Name)
		if err != nil {
			return nil, fmt.Errorf("termination message file of container %q: %w", c.Name, err)
		}
		mounts = append(mounts, specs.Mount{Destination: c.TerminationMessagePath, Type: "bind", Source: p, Options: []string{"rbind", "rprivate", "rw"}})
	}
	return mounts, nil
}

// mountSubPath is a volumeMount's subPath, or its subPathExpr expanded
// with the container's environment, checked as the kubelet checks it
// (makeMounts): a variable missing or empty, an absolute path or a `..`
// fail the container with the kubelet's words.
func mountSubPath(vm v1.VolumeMount, envs []kubecontainer.EnvVar) (string, error) {
	subPath := vm.SubPath
	if vm.SubPathExpr != "" {
		var err error
		if subPath, err = kubecontainer.ExpandContainerVolumeMounts(vm, envs); err != nil {
			return "", err
		}
	}
	if subPath == "" {
		return "", nil
	}
	if filepath.IsAbs(subPath) {
		return "", fmt.Errorf("error SubPath `%s` must not be an absolute path", subPath)
	}
	if err := volumevalidation.ValidatePathNoBacksteps(subPath); err != nil {
		return "", fmt.Errorf("unable to provision SubPath `%s`: %w", subPath, err)
	}
	return subPath, nil
}

// writeEtcFiles writes the pod's /etc/hosts, /etc/hostname and
// /etc/resolv.conf as a kubelet does.
func (r *Runtime) writeEtcFiles(pod *v1.Pod, ips []string) error {
	dir := r.etcDir(pod)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	hostname := podHostname(pod)
	fqdn := hostname
	if pod.Spec.Subdomain != "" {
		fqdn = fmt.Sprintf("%s.%s.%s.svc.%s", hostname, pod.Spec.Subdomain, pod.Namespace, r.cfg.ClusterDomain)
	}
	if pod.Spec.HostNetwork {
		// As the kubelet does for a pod of host network: the node's own
		// hosts file under a header of its own, and the pod's host aliases.
		hostname = nodeHostname()
		node, err := os.ReadFile(r.cfg.HostEtcHosts)
		if err != nil {
			return fmt.Errorf("read the node's hosts file for a hostNetwork pod: %w", err)
		}
		hosts := append([]byte("# Kubernetes-managed hosts file (host network).\n"), node...)
		hosts = append(hosts, hostAliasEntries(pod.Spec.HostAliases)...)
		if err := os.WriteFile(filepath.Join(dir, "hosts"), hosts, 0o644); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, "hostname"), []byte(hostname+"\n"), 0o644); err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dir, "resolv.conf"), r.resolvConf(pod), 0o644)
	}
	var hosts strings.Builder
	hosts.WriteString("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n")
	for _, ip := range ips {
		if fqdn != hostname {
			fmt.Fprintf(&hosts, "%s\t%s\t%s\n", ip, fqdn, hostname)
		} else {
			fmt.Fprintf(&hosts, "%s\t%s\n", ip, hostname)
		}
	}
	hosts.Write(hostAliasEntries(pod.Spec.HostAliases))
	if err := os.WriteFile(filepath.Join(dir, "hosts"), []byte(hosts.String()), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "hostname"), []byte(hostname+"\n"), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "resolv.conf"), r.resolvConf(pod), 0o644)
}

// hostAliasEntries are the hosts file lines of a pod's hostAliases, as the
// kubelet writes them: one section, one line per IP.
func hostAliasEntries(aliases []v1.HostAlias) []byte {
	if len(aliases) == 0 {
		return nil
	}
	var b strings.Builder
	b.WriteString("\n# Entries added by HostAliases.\n")
	for _, ha := range aliases {
		fmt.Fprintf(&b, "%s\t%s\n", ha.IP, strings.Join(ha.Hostnames, "\t"))
	}
	return []byte(b.String())
}
