#!/usr/bin/env bash
# gpu-check.sh: check CCI's NVIDIA support against this host's real driver,
# read-only: it never changes MIG mode, clocks or persistence, and never
# resets a GPU. It builds cci, runs the agent's discovery (NVML through
# go-nvml) and prints what NVML reports next to nvidia-smi, writes the CDI
# spec the agent would write and shows what nvidia.com/gpu=0 and =all
# inject. With CCI_GPU_CHECK_CONTAINER=1 it also runs `nvidia-smi -L` in a
# container started by `cci up` through the agent's runtime path (needs
# root, containerd's build and a busybox-static image; see README).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/cci-gpu-check-XXXXXX)
trap 'rm -rf "$work"' EXIT

echo "== build"
(cd "$root" && CGO_ENABLED=1 go build -o "$work/cci" ./cmd/cci)

echo "== nvidia-smi"
if command -v nvidia-smi >/dev/null; then
	nvidia-smi --query-gpu=index,name,uuid,memory.total --format=csv
	nvidia-smi -L
else
	echo "nvidia-smi not found: no NVIDIA driver here; the agent will report 0 GPUs"
fi

echo "== cci device (the agent's NVML discovery and CDI spec)"
"$work/cci" device --accelerators nvidia --spec-dir "$work/cdi" \
	--resolve nvidia.com/gpu=0,nvidia.com/gpu=all
if [ -f "$work/cdi/cci-nvidia.json" ]; then
	echo "== CDI spec"
	cat "$work/cdi/cci-nvidia.json"; echo
fi

if [ "${CCI_GPU_CHECK_CONTAINER:-}" = 1 ]; then
	echo "== a GPU pod through cci up (runc)"
	data="$work/data"
	"$work/cci" up --data-dir "$data" --accelerators nvidia >"$work/up.log" 2>&1 &
	up=$!
	trap 'kubectl --kubeconfig "$data/admin.kubeconfig" delete pod gpu-check --wait=true >/dev/null 2>&1 || true; kill $up 2>/dev/null; wait $up 2>/dev/null; rm -rf "$work"' EXIT
	for _ in $(seq 120); do [ -f "$data/admin.kubeconfig" ] && kubectl --kubeconfig "$data/admin.kubeconfig" get nodes 2>/dev/null | grep -q ' Ready' && break; sleep 1; done
	kc=(kubectl --kubeconfig "$data/admin.kubeconfig")
	"${kc[@]}" get nodes -o custom-columns='NAME:.metadata.name,GPUS:.status.allocatable.nvidia\.com/gpu,PRODUCT:.metadata.labels.nvidia\.com/gpu\.product'
	image=${CCI_GPU_CHECK_IMAGE:?set CCI_GPU_CHECK_IMAGE to an image in the built-in registry with a shell (nvidia-smi comes from the driver through CDI)}
	overrides=$(cat <<JSON
{"spec":{"runtimeClassName":"runc","containers":[{"name":"gpu-check","image":"$image",
 "command":["sh","-c","nvidia-smi -L; echo NVIDIA_VISIBLE_DEVICES=\$NVIDIA_VISIBLE_DEVICES; ls -l /dev/nvidia*"],
 "resources":{"limits":{"nvidia.com/gpu":1}}}]}}
JSON
)
	"${kc[@]}" run gpu-check --image="$image" --restart=Never --overrides="$overrides"
	"${kc[@]}" wait --for=jsonpath='{.status.phase}'=Succeeded pod/gpu-check --timeout=180s || true
	"${kc[@]}" logs gpu-check
fi
