#!/usr/bin/env bash
# Builds the upstream Kubernetes conformance suite (e2e.test), the ginkgo
# runner, the programs of the test images (agnhost, nnp, etcd, the sample API
# server), crane to push them and report to read the results, from the Go
# module proxy at the versions pinned by kit/go.mod, into $E2EB (default
# ~/.cache/cci/conformance). Safe to run again: with the Go build cache a
# second run takes seconds; a cold one about 10 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/kit"
E2EB=${E2EB:-${XDG_CACHE_HOME:-$HOME/.cache}/cci/conformance}
mkdir -p "$E2EB"
export PATH=$PATH:/usr/local/go/bin
go mod download
# As in a release build, the suite knows its version: specs that pick a Pod
# Security level's fixtures by the version (the podCertificate ones) need it.
V=$(go list -m -f '{{.Version}}' k8s.io/kubernetes)
MINOR=$(echo "$V" | cut -d. -f2)
VF=k8s.io/component-base/version
go test -c -o "$E2EB/e2e.test" \
  -ldflags "-X $VF.gitVersion=$V -X $VF.gitMajor=1 -X $VF.gitMinor=$MINOR" \
  k8s.io/kubernetes/test/e2e
go build -o "$E2EB/ginkgo" github.com/onsi/ginkgo/v2/ginkgo
go build -o "$E2EB/crane" github.com/google/go-containerregistry/cmd/crane
go test ./report
go build -o "$E2EB/report" ./report
# What runs inside test images is static: the images have no Go runtime libs.
export CGO_ENABLED=0
go build -o "$E2EB/agnhost" k8s.io/kubernetes/test/images/agnhost
go build -o "$E2EB/nnp" k8s.io/kubernetes/test/images/nonewprivs
go build -o "$E2EB/sample-apiserver" k8s.io/sample-apiserver
go build -o "$E2EB/etcd" ./etcd
echo "build: e2e.test, ginkgo, crane, report, agnhost, nnp, sample-apiserver and etcd in $E2EB"
