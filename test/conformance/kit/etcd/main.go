// Command etcd is the etcd server, for the etcd image the conformance suite
// runs beside its sample API server (upstream's registry.k8s.io/etcd).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
