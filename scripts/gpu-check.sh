#!/usr/bin/env bash
# gpu-check.sh: check CCI's NVIDIA support against this host's real driver
# in a few minutes. Read-only on the GPUs: it never changes MIG mode,
# clocks or persistence, and never resets a GPU; it writes only under a
# temporary folder it removes.
#
#  1. builds cci (or uses $CCI, a cci built elsewhere: a GPU machine may
#     have no Go module cache),
#  2. prints what nvidia-smi reports, then what the agent's discovery
#     (NVML through go-nvml) finds, its CDI spec, and what
#     nvidia.com/gpu=0 and =all inject (`cci device`),
#  3. where containerd, runc and a static busybox are at hand (and we are
#     root), starts `cci up` with the real GPUs, checks the node's
#     nvidia.com/gpu and labels, and runs a runc pod given 1 GPU that
#     lists its device nodes, NVIDIA_VISIBLE_DEVICES and `nvidia-smi -L`
#     (which must list exactly one GPU). The host's C library is lent to
#     the pod read-only (hostPath), as nvidia-smi needs it and busybox has
#     none. Skipped with the reason otherwise.
#
# Environment: CCI (a cci binary), CCI_BUSYBOX (default /bin/busybox),
# CCI_GPU_CHECK_TIMEOUT (seconds to wait for the cluster and the pod,
# default 120).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/cci-gpu-check-XXXXXX)
up=
cleanup() {
	if [ -n "$up" ]; then
		kubectl --kubeconfig "$work/data/admin.kubeconfig" delete pod gpu-check --wait=true --timeout=60s >/dev/null 2>&1 || true
		kill -INT "$up" 2>/dev/null || true
		wait "$up" 2>/dev/null || true
	fi
	rm -rf "$work"
}
trap cleanup EXIT
wait_s=${CCI_GPU_CHECK_TIMEOUT:-120}

echo "== cci"
cci=${CCI:-}
if [ -z "$cci" ]; then
	(cd "$root" && CGO_ENABLED=1 go build -o "$work/cci" ./cmd/cci)
	cci="$work/cci"
fi
"$cci" version 2>/dev/null || true

echo "== nvidia-smi"
if command -v nvidia-smi >/dev/null; then
	nvidia-smi --query-gpu=index,name,uuid,memory.total,mig.mode.current --format=csv
	nvidia-smi -L
else
	echo "nvidia-smi not found: no NVIDIA driver tools here; the agent should report 0 GPUs and say why"
fi

echo "== cci device (the agent's NVML discovery, labels and CDI spec)"
"$cci" device --accelerators nvidia --spec-dir "$work/cdi" \
	--resolve nvidia.com/gpu=0,nvidia.com/gpu=all || echo "cci device failed: $?"
echo "-- with --gpu-sharing 2 (time-slicing replicas)"
"$cci" device --accelerators nvidia --gpu-sharing 2 --spec-dir "$work/cdi2" | head -3 || true
[ -f "$work/cdi/cci-nvidia.json" ] && { echo "-- CDI spec"; cat "$work/cdi/cci-nvidia.json"; echo; }

echo "== a GPU pod through cci up (runc)"
busybox=${CCI_BUSYBOX:-/bin/busybox}
missing=()
[ "$(id -u)" = 0 ] || missing+=("root")
command -v nvidia-smi >/dev/null || missing+=("nvidia-smi")
command -v kubectl >/dev/null || missing+=("kubectl")
command -v containerd >/dev/null || missing+=("containerd")
command -v runc >/dev/null || missing+=("runc")
[ -x "$busybox" ] || missing+=("a static busybox at $busybox (CCI_BUSYBOX)")
if [ ${#missing[@]} -gt 0 ]; then
	echo "skipped: missing ${missing[*]}"
	exit 0
fi
kc=(kubectl --kubeconfig "$work/data/admin.kubeconfig")
"$cci" up --data-dir "$work/data" --accelerators nvidia >"$work/up.log" 2>&1 &
up=$!
ready=
for _ in $(seq "$wait_s"); do
	if [ -f "$work/data/admin.kubeconfig" ] && "${kc[@]}" get nodes 2>/dev/null | grep -q ' Ready'; then ready=1; break; fi
	kill -0 "$up" 2>/dev/null || break
	sleep 1
done
if [ -z "$ready" ]; then
	echo "cci up did not become ready; its log:"; tail -40 "$work/up.log"; exit 1
fi
"${kc[@]}" get nodes -o custom-columns='NAME:.metadata.name,GPUS:.status.allocatable.nvidia\.com/gpu,PRODUCT:.metadata.labels.nvidia\.com/gpu\.product,MEMORY:.metadata.labels.nvidia\.com/gpu\.memory,SHARING:.metadata.labels.nvidia\.com/gpu\.sharing-strategy'
"$cci" pool list --kubeconfig "$work/data/admin.kubeconfig" --gpus
registry=$(sed -n 's/^  registry: *//p' "$work/up.log" | head -1)
image=$("$cci" image --data-dir "$work/data" build-test-images --registry "$registry" --busybox "$busybox" | grep -m1 /cci-test/shell || true)
if [ -z "$image" ]; then
	echo "no shell test image could be built; skipped the pod"; exit 1
fi
# nvidia-smi is linked against the C library; lend the host's, read-only.
mounts='' volumes=''
for d in /lib64 /lib/x86_64-linux-gnu /lib/aarch64-linux-gnu; do
	[ -d "$d" ] || continue
	n=lib$(echo "$d" | tr -c 'a-z0-9\n' '-')
	mounts="$mounts{\"name\":\"$n\",\"mountPath\":\"$d\",\"readOnly\":true},"
	volumes="$volumes{\"name\":\"$n\",\"hostPath\":{\"path\":\"$d\",\"type\":\"Directory\"}},"
done
cat >"$work/pod.json" <<JSON
{"apiVersion":"v1","kind":"Pod","metadata":{"name":"gpu-check"},
 "spec":{"runtimeClassName":"runc","restartPolicy":"Never",
  "containers":[{"name":"gpu-check","image":"$image",
   "command":["sh","-c","ls /dev | grep nvidia | tr '\\\\n' ' '; echo; echo NVIDIA_VISIBLE_DEVICES=\$NVIDIA_VISIBLE_DEVICES; nvidia-smi -L"],
   "volumeMounts":[${mounts%,}],
   "resources":{"limits":{"nvidia.com/gpu":1}}}],
  "volumes":[${volumes%,}]}}
JSON
"${kc[@]}" create -f "$work/pod.json"
"${kc[@]}" wait --for=jsonpath='{.status.phase}'=Succeeded pod/gpu-check --timeout="${wait_s}s" || {
	"${kc[@]}" describe pod gpu-check | tail -25
}
echo "-- the pod's output"
"${kc[@]}" logs gpu-check | tee "$work/pod.log"
n=$(grep -c '^GPU [0-9]' "$work/pod.log" || true)
echo "nvidia-smi -L in the pod lists $n GPU(s); want 1"
[ "$n" = 1 ]
