//go:build tools

// Package kit only names what ../build.sh builds, so that go.mod and go.sum
// pin it: the conformance suite, the ginkgo runner, and the programs of the
// test images (agnhost, nnp, the sample API server, crane to push them).
package kit

import (
	_ "github.com/google/go-containerregistry/cmd/crane"
	_ "github.com/onsi/ginkgo/v2/ginkgo"
	_ "k8s.io/kubernetes/test/e2e"
	_ "k8s.io/kubernetes/test/images/agnhost"
	_ "k8s.io/kubernetes/test/images/nonewprivs"
	_ "k8s.io/sample-apiserver"
)
