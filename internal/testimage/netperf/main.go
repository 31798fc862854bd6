// Command netperf is the program of CCI's netperf test image and of the
// host side of `cci bench network` (see internal/netperf):
//
//	netperf serve [-addr :5201]     answer clients until SIGTERM; prints
//	                                "listening HOST:PORT" once it listens
//	netperf run -addr HOST:PORT …   measure the path, print one result line
//
// It is a static Go program, so that it runs on the busybox root of the
// test images and straight in a host's network namespace alike.
package main

import (
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cci-project/cci/internal/netperf"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "netperf:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) == 0 {
		return fmt.Errorf("usage: netperf serve|run [flags]")
	}
	switch args[0] {
	case "serve":
		fs := flag.NewFlagSet("serve", flag.ContinueOnError)
		addr := fs.String("addr", ":5201", "address to listen on (port 0: any free port)")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		ln, err := net.Listen("tcp", *addr)
		if err != nil {
			return fmt.Errorf("listen on %q: %w", *addr, err)
		}
		fmt.Printf("listening %s\n", ln.Addr())
		// As PID 1 of a container the default SIGTERM action does nothing:
		// exit on it, or every delete waits out the grace period.
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
		go func() { <-sig; ln.Close() }()
		return netperf.Serve(ln)
	case "run":
		fs := flag.NewFlagSet("run", flag.ContinueOnError)
		var o netperf.Options
		sizes := fs.String("sizes", "1,1400", "ping-pong message sizes in bytes, comma-separated")
		fs.StringVar(&o.Addr, "addr", "", "server HOST:PORT")
		fs.DurationVar(&o.StreamFor, "stream-for", 2*time.Second, "how long each stream test writes (0: none)")
		fs.IntVar(&o.Streams, "streams", 3, "stream tests, one after another")
		fs.IntVar(&o.Pings, "pings", 2000, "recorded round trips per message size")
		fs.IntVar(&o.Warmup, "warmup", 100, "round trips before recording")
		fs.DurationVar(&o.ConnectFor, "connect-for", 30*time.Second, "how long to retry connecting while the server starts")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		for _, s := range strings.Split(*sizes, ",") {
			if s = strings.TrimSpace(s); s == "" {
				continue
			}
			n, err := strconv.Atoi(s)
			if err != nil {
				return fmt.Errorf("-sizes %q: %q is not a number of bytes", *sizes, s)
			}
			o.Sizes = append(o.Sizes, n)
		}
		res, err := netperf.Run(o)
		if err != nil {
			return err
		}
		line, err := res.Format()
		if err != nil {
			return err
		}
		fmt.Println(line)
		return nil
	default:
		return fmt.Errorf("unknown command %q: use serve or run", args[0])
	}
}
