#!/usr/bin/env bash
# Installs what CCI needs on a Debian host, only what is missing; safe to run
# again. Debian packages come through apt-get, Go modules through the Go
# module proxy. Needs root (or sudo) for apt-get.
set -euo pipefail
cd "$(dirname "$0")/.."

# Each step prints the seconds since the start, to show where a fresh
# machine's set-up spends its time.
START=$SECONDS
step() { echo "setup: $* (at $((SECONDS - START)) s)"; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

# binary -> Debian package
declare -A PKGS=(
  [containerd]=containerd
  [runc]=runc
  [runsc]=runsc
  [/usr/lib/cni/bridge]=containernetworking-plugins
  [iptables]=iptables
  # the agent's refusal of Service addresses no Service serves (internal/serviceproxy/reject.go)
  [nft]=nftables
  [/bin/busybox]=busybox-static
  [ip]=iproute2
  [curl]=curl
  # the conformance kit's test images (test/conformance/images.sh)
  [debootstrap]=debootstrap
  [/bin/bash-static]=bash-static
  [openssl]=openssl
  [gcc]=gcc
  [/usr/lib/x86_64-linux-gnu/libc.a]=libc6-dev
  # cci-evs disks (internal/evs): loop devices, file systems, their growth
  [losetup]=util-linux
  [blkid]=util-linux
  [mkfs.xfs]=xfsprogs
  [xfs_growfs]=xfsprogs
  [mkfs.ext4]=e2fsprogs
  # cci-obs buckets and cci-sfs file systems, mounted into pods with FUSE (internal/rclone)
  [rclone]=rclone
  [fusermount3]=fuse3
  # the web console's build (console/) and its browser test (test/console)
  [npm]=npm
  [chromium]=chromium
)
if ! command -v go >/dev/null 2>&1; then
  if [ -x /usr/local/go/bin/go ]; then export PATH=$PATH:/usr/local/go/bin; else
    echo "setup: Go 1.26 is needed (https://go.dev/dl/); install it to /usr/local/go" >&2; exit 1; fi
fi
# The Go modules download while apt-get installs the packages.
go mod download &
GOMOD=$!

missing=()
for bin in "${!PKGS[@]}"; do
  if [[ "$bin" == /* ]]; then
    [ -e "$bin" ] || missing+=("${PKGS[$bin]}")
  else
    command -v "$bin" >/dev/null 2>&1 || missing+=("${PKGS[$bin]}")
  fi
done
# busybox from the busybox package is dynamic; the test images need the static one.
if [ -e /bin/busybox ] && ! dpkg -s busybox-static >/dev/null 2>&1; then
  missing+=(busybox-static)
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${missing[@]}"
  step "Debian packages installed"
fi

if ! wait "$GOMOD"; then
  echo "setup: go mod download failed: is the Go module proxy reachable (GOPROXY=$(go env GOPROXY))?" >&2
  exit 1
fi
step "Go modules downloaded"
mkdir -p bin
# The web console's assets, embedded by the Go build (internal/console);
# without them the binary serves a placeholder page.
make --no-print-directory console-assets
step "console built"
VERSION=$(git describe --always --dirty 2>/dev/null || echo dev)
# The embedded Kubernetes components report the version they are built
# from (kubectl version, /version), as in a release build of Kubernetes.
KUBE_VERSION=$(go list -m -f '{{.Version}}' k8s.io/kubernetes)
KUBE_MINOR=$(echo "$KUBE_VERSION" | cut -d. -f2)
go generate ./internal/gateway/crds ./internal/snapshot/crds
go build -ldflags "-X github.com/cci-project/cci/internal/version.Version=${VERSION} -X k8s.io/component-base/version.gitVersion=${KUBE_VERSION} -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=${KUBE_MINOR}" -o bin/cci ./cmd/cci
step "bin/cci built"

# A current gVisor. Debian's runsc is from 2022 (ptrace platform only, with
# vulnerabilities fixed since); this one comes from the Go module proxy
# (gvisor.dev/gvisor, gVisor's Go-buildable tree) and goes to
# /usr/local/lib/cci/runsc, which the agent runs gVisor pods with by default
# (with its default platform, systrap); `--runsc-path /usr/bin/runsc` picks
# Debian's. See docs/gvisor.md.
RUNSC_VERSION=v0.0.0-20260905035102-160fafc42237
RUNSC=/usr/local/lib/cci/runsc
if [ "$(go version -m "$RUNSC" 2>/dev/null | awk '$1 == "mod" { print $3 }')" != "$RUNSC_VERSION" ]; then
  echo "setup: building runsc $RUNSC_VERSION (gvisor.dev/gvisor) into $RUNSC"
  tmp=$(mktemp -d)
  GOBIN=$tmp CGO_ENABLED=0 go install -ldflags "-X gvisor.dev/gvisor/runsc/version.version=$RUNSC_VERSION" "gvisor.dev/gvisor/runsc@$RUNSC_VERSION"
  $SUDO install -D -m 0755 "$tmp/runsc" "$RUNSC"
  rm -rf "$tmp"
  step "runsc built"
fi

# kubectl: the tests and the quick start use the real binary; when the host
# has none, build the one of the Kubernetes release CCI embeds.
if ! command -v kubectl >/dev/null 2>&1 && [ ! -x bin/kubectl ]; then
  echo "setup: building kubectl from k8s.io/kubernetes"
  go build -o bin/kubectl k8s.io/kubernetes/cmd/kubectl
fi
echo "setup: ok (bin/cci $(bin/cci version))"
