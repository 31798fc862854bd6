// Command grpchealth is the gRPC health server of CCI's grpchealth test
// image: it answers grpc.health.v1.Health on -addr with SERVING, or with
// NOT_SERVING while the file named by -down exists, so that a test can flip
// a grpc probe with `kubectl exec … touch`. It exits on SIGTERM.
//
// Run as `grpchealth grpc-health-checking [flags]` it is instead agnhost's
// server of that name, the target of the upstream conformance specs'
// gRPC probes, with agnhost's flags (--port 5000, --http-port 8080, …).
package main

import (
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	grpchealthchecking "k8s.io/kubernetes/test/images/agnhost/grpc-health-checking"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "grpc-health-checking" {
		cmd := grpchealthchecking.CmdGrpcHealthChecking
		cmd.SetArgs(os.Args[2:])
		if err := cmd.Execute(); err != nil {
			os.Exit(1)
		}
		return
	}
	addr := flag.String("addr", ":9090", "address to serve the health protocol on")
	down := flag.String("down", "/tmp/grpc-down", "while this file exists the server answers NOT_SERVING")
	flag.Parse()

	l, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "grpchealth:", err)
		os.Exit(1)
	}
	srv := grpc.NewServer()
	h := health.NewServer()
	healthpb.RegisterHealthServer(srv, h)
	go func() {
		for {
			st := healthpb.HealthCheckResponse_SERVING
			if _, err := os.Stat(*down); err == nil {
				st = healthpb.HealthCheckResponse_NOT_SERVING
			}
			h.SetServingStatus("", st)
			time.Sleep(200 * time.Millisecond)
		}
	}()
	// As PID 1 the process would ignore SIGTERM unless it handles it.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-sigs
		srv.Stop()
	}()
	fmt.Println("grpchealth serving on", l.Addr())
	if err := srv.Serve(l); err != nil {
		fmt.Fprintln(os.Stderr, "grpchealth:", err)
		os.Exit(1)
	}
}
