// Package version carries the build's version, set at link time with
// -ldflags "-X github.com/cci-project/cci/internal/version.Version=…".
package version

// Version of this cci build.
var Version = "dev"

// KubernetesVersion is the upstream Kubernetes release CCI embeds and
// reports as its kubelet version.
const KubernetesVersion = "v1.37.2"
