#!/usr/bin/env bash
# Builds the images the conformance suite pulls, offline, and pushes them to
# the registry at $REG under the names e2e.test asks for (repo-list.yaml maps
# every upstream registry to $REG). No public registry is reachable here, so
# each image is made the way its upstream Dockerfile makes it, from what this
# machine has:
#
#   debian base   debootstrap (minbase, bookworm) from Debian's mirror, with
#                 the tools specs run inside agnhost: curl, OpenBSD nc, dig,
#                 nslookup, host, ip, ping, ps, iperf; cached in $E2EB
#   agnhost       the debian base + agnhost built by build.sh (also as
#                 /agnhost-2, as upstream's image has it) + a self-signed
#                 localhost.crt/localhost.key at / (as the real image)
#   kitten, nautilus  agnhost serving test-webserver with their pictures
#   nginx         the debian base + Debian's nginx, serving
#                 /usr/share/nginx/html on :80 in the foreground
#   glibc-dns-testing  the debian base (dig, getent: glibc's resolver)
#   busybox       Debian's busybox-static applets with bash-static as sh
#                 (busybox's own sh drops environment names containing '-',
#                 which the real image keeps)
#   nonroot       busybox, user 1234
#   nonewprivs    busybox + upstream's nnp program, setuid root
#   pause         a static pause (reaps children, exits on SIGTERM)
#   etcd          etcd built from go.etcd.io/etcd at /usr/local/bin/etcd
#   sample-apiserver  k8s.io/sample-apiserver built by build.sh
#
# Usage: REG=127.0.0.1:5000 [E2EB=dir] images.sh
# Safe to run again: pushing the same layers again uploads nothing.
set -euo pipefail
REG=${REG:?set REG to the registry host:port}
E2EB=${E2EB:-${XDG_CACHE_HOME:-$HOME/.cache}/cci/conformance}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
CRANE="$E2EB/crane"
[ -x "$CRANE" ] || { echo "images: $CRANE is missing: run build.sh first" >&2; exit 1; }
for f in /usr/sbin/debootstrap /bin/busybox /bin/bash-static; do
  [ -e "$f" ] || { echo "images: $f is missing: apt-get install debootstrap busybox-static bash-static" >&2; exit 1; }
done

W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT

# The debian base, built once per cache folder.
DEB="$E2EB/debian-base.tar"
if [ ! -s "$DEB" ]; then
  echo "images: debootstrap of the debian base (once, about 2 minutes)"
  root="$W/debian"
  debootstrap --variant=minbase \
    --include=curl,netcat-openbsd,bind9-dnsutils,bind9-host,iproute2,iputils-ping,procps,ca-certificates,iperf,nginx-light \
    bookworm "$root" "$MIRROR" >"$W/debootstrap.log" 2>&1 || { tail -20 "$W/debootstrap.log" >&2; exit 1; }
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
    "$root"/usr/share/doc "$root"/usr/share/man "$root"/usr/share/locale "$root"/usr/share/info \
    "$root"/var/log/* "$root"/dev/*
  # nginx as the upstream image runs it: its page at /usr/share/nginx/html.
  mkdir -p "$root/usr/share/nginx/html"
  printf '<!DOCTYPE html>\n<html><head><title>Welcome to nginx!</title></head><body><h1>Welcome to nginx!</h1></body></html>\n' \
    > "$root/usr/share/nginx/html/index.html"
  rm -f "$root/etc/nginx/sites-enabled/default"
  mkdir -p "$root/var/log/nginx"
  ln -sf /dev/stdout "$root/var/log/nginx/access.log"
  ln -sf /dev/stderr "$root/var/log/nginx/error.log"
  cat > "$root/etc/nginx/sites-enabled/default" <<'NGINX'
server {
	listen 80 default_server;
	listen [::]:80 default_server;
	root /usr/share/nginx/html;
	index index.html;
	server_name _;
}
NGINX
  tar --numeric-owner -C "$root" -cf "$DEB.tmp" . && mv "$DEB.tmp" "$DEB"
  rm -rf "$root"
fi

# The busybox root: applets of busybox-static, bash-static as sh.
b="$W/busybox"
mkdir -p "$b/bin" "$b/tmp" "$b/etc" "$b/root" "$b/usr/share/nginx/html"
chmod 1777 "$b/tmp"
cp /bin/busybox "$b/bin/busybox"
for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -sf busybox "$b/bin/$a"; done
cp /bin/bash-static "$b/bin/bash"
ln -sf bash "$b/bin/sh"
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' > "$b/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$b/etc/group"
tar --numeric-owner -C "$b" -cf "$W/busybox.tar" .

cat > "$W/pause.c" <<'C'
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>
static void onterm(int s) { (void)s; exit(0); }
static void onchld(int s) { (void)s; while (waitpid(-1, NULL, WNOHANG) > 0) {} }
int main(void) {
  signal(SIGINT, onterm); signal(SIGTERM, onterm); signal(SIGCHLD, onchld);
  for (;;) pause();
}
C
mkdir -p "$W/p"
gcc -static -O2 -o "$W/p/pause" "$W/pause.c"
tar --numeric-owner -C "$W/p" -cf "$W/pause.tar" .

mkdir -p "$W/a/uploads"
cp "$E2EB/agnhost" "$W/a/agnhost"
# the real image has a second copy, which specs name to override the entrypoint
ln -s agnhost "$W/a/agnhost-2"
openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj /CN=localhost \
  -keyout "$W/a/localhost.key" -out "$W/a/localhost.crt" >/dev/null 2>&1
tar --numeric-owner -C "$W/a" -cf "$W/agnhost.tar" .

# kitten and nautilus: agnhost's test-webserver serving a picture and a
# data.json (the kubectl Update Demo specs read it), from the suite's module.
# Upstream's agnhost, and so kitten, is built on alpine:3.21 (its BASEIMAGE);
# the ImageVolume spec mounts kitten as a volume and reads its
# /etc/os-release for "Alpine Linux". Ours is on the debian base, so the pet
# layer carries the os-release of upstream's base, over Debian's.
K8S=$(cd "$(dirname "$0")/kit" && go list -m -f '{{.Dir}}' k8s.io/kubernetes)
for pet in kitten nautilus; do
  mkdir -p "$W/$pet/etc"
  cp "$K8S/test/images/$pet/html/"* "$W/$pet/"
  printf '%s\n' 'NAME="Alpine Linux"' 'ID=alpine' 'VERSION_ID=3.21' 'PRETTY_NAME="Alpine Linux v3.21"' \
    'HOME_URL="https://alpinelinux.org/"' >"$W/$pet/etc/os-release"
  tar --numeric-owner -C "$W/$pet" -cf "$W/$pet.tar" .
done

mkdir -p "$W/n/usr/local/bin"
cp "$E2EB/nnp" "$W/n/usr/local/bin/nnp"
chmod 4755 "$W/n/usr/local/bin/nnp"
tar --numeric-owner -C "$W/n" -cf "$W/nnp.tar" .

mkdir -p "$W/e/usr/local/bin" "$W/e/var/lib/etcd" "$W/e/tmp"
chmod 1777 "$W/e/tmp"
cp "$E2EB/etcd" "$W/e/usr/local/bin/etcd"
tar --numeric-owner -C "$W/e" -cf "$W/etcd.tar" .

mkdir -p "$W/s"
cp "$E2EB/sample-apiserver" "$W/s/sample-apiserver"
tar --numeric-owner -C "$W/s" -cf "$W/sample.tar" .

# push NAME:TAG LAYER... -- CRANE-MUTATE-ARGS...
push() {
  local ref="$REG/$1"; shift
  local layers=()
  while [ "$1" != -- ]; do layers+=(-f "$1"); shift; done
  shift
  "$CRANE" append --insecure --platform linux/amd64 "${layers[@]}" -t "$ref" >"$W/crane.log" 2>&1 \
    || { cat "$W/crane.log" >&2; exit 1; }
  "$CRANE" mutate --insecure --set-platform linux/amd64 "$@" -t "$ref" "$ref" >"$W/crane.log" 2>&1 \
    || { cat "$W/crane.log" >&2; exit 1; }
  echo "images: pushed $ref"
}
P=e2e-test-images
for t in 2.66.1 2.55; do
  push $P/agnhost:$t "$DEB" "$W/agnhost.tar" -- --entrypoint /agnhost --cmd pause
done
for pet in kitten nautilus; do
  push $P/$pet:1.8 "$DEB" "$W/agnhost.tar" "$W/$pet.tar" -- --entrypoint /agnhost --cmd test-webserver
done
# glibc's resolver beside agnhost's in the DNS specs: the debian base has
# dig and getent, as upstream's image (Debian + dnsutils) has.
push $P/glibc-dns-testing:2.1.1 "$DEB" -- --cmd bash
for t in 1.27.0-2 1.28.0-2; do
  push $P/nginx:$t "$DEB" -- --entrypoint nginx --cmd=-g,'daemon off;' --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
done
for t in 1.37.0-2 1.36.1-1; do
  push $P/busybox:$t "$W/busybox.tar" -- --cmd sh
done
push $P/nonroot:1.5 "$W/busybox.tar" -- --cmd sh --user 1234
push $P/nonewprivs:1.4 "$W/busybox.tar" "$W/nnp.tar" -- --cmd nnp --env PATH=/usr/local/bin:/bin
push pause:3.10.2 "$W/pause.tar" -- --entrypoint /pause
push etcd:3.7.0-0 "$W/busybox.tar" "$W/etcd.tar" -- --entrypoint /usr/local/bin/etcd
push $P/sample-apiserver:1.29.2 "$W/sample.tar" -- --entrypoint /sample-apiserver

cat > "$E2EB/repo-list.yaml" <<YAML
promoterE2eRegistry: $REG/e2e-test-images
gcRegistry: $REG
gcEtcdRegistry: $REG
buildImageRegistry: $REG/build-image
sigStorageRegistry: $REG/sig-storage
dockerLibraryRegistry: $REG/library
cloudProviderGcpRegistry: $REG/cloud-provider-gcp
YAML
echo "images: KUBE_TEST_REPO_LIST=$E2EB/repo-list.yaml"
