// Command diskperf is the program of CCI's diskperf test image and of the
// host side of `cci bench storage` (see internal/diskperf):
//
//	diskperf run -dir DIR [-size-mib 64] [-rand-ops 4096] [-rand-for 30s] [-direct auto]
//
// measures the file system of DIR and prints one result line. It is a
// static Go program, so that it runs on the busybox root of the test
// images and straight on a host alike.
package main

import (
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/cci-project/cci/internal/diskperf"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "diskperf:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) == 0 || args[0] != "run" {
		return fmt.Errorf("usage: diskperf run -dir DIR [flags]")
	}
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	var o diskperf.Options
	sizeMiB := fs.Int64("size-mib", 64, "test file size in MiB (sequential tests; the random tests use the same file)")
	fs.StringVar(&o.Dir, "dir", "", "folder to measure")
	fs.IntVar(&o.RandOps, "rand-ops", 4096, "random 4 KiB writes, and as many reads, at most")
	fs.DurationVar(&o.RandFor, "rand-for", 30*time.Second, "time limit of each random test")
	fs.StringVar(&o.Direct, "direct", "auto", "O_DIRECT: auto (where the file system takes it), on, off")
	fs.Uint64Var(&o.Seed, "seed", 1, "seed of the random offsets and content")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if *sizeMiB <= 0 {
		return fmt.Errorf("-size-mib %d: give a positive size", *sizeMiB)
	}
	o.SeqBytes = *sizeMiB << 20
	res, err := diskperf.Run(o)
	if err != nil {
		return err
	}
	line, err := res.Format()
	if err != nil {
		return err
	}
	fmt.Println(line)
	return nil
}
