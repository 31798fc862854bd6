package netperf

import (
	"net"
	"strings"
	"testing"
	"time"
)

// A client against a real server over loopback: the server counts what
// the stream sent, every recorded round trip is there, and the line the
// client prints parses back to the same result.
func TestRunAgainstServer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() { _ = Serve(ln) }()

	res, err := Run(Options{Addr: ln.Addr().String(), StreamFor: 50 * time.Millisecond, Streams: 2, Pings: 30, Warmup: 5, Sizes: []int{1, 1400, 70000}})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Streams) != 2 {
		t.Fatalf("streams: got %d, want 2", len(res.Streams))
	}
	for _, s := range res.Streams {
		// Run itself fails when the server's count differs from what was sent.
		if s.Bytes < chunk-1 || s.Seconds <= 0 || s.Gbps() <= 0 {
			t.Errorf("stream %+v: want at least one chunk in a positive time", s)
		}
	}
	for _, size := range []int{1, 1400, 70000} {
		if got := len(res.PingsOf(size)); got != 30 {
			t.Errorf("round trips of %d bytes: got %d, want 30", size, got)
		}
	}
	line, err := res.Format()
	if err != nil {
		t.Fatal(err)
	}
	back, err := Parse("listening x\n" + line + "\n")
	if err != nil {
		t.Fatal(err)
	}
	if len(back.Streams) != 2 || back.Streams[1] != res.Streams[1] || len(back.PingsOf(1400)) != 30 {
		t.Errorf("parsed %+v, want %+v", back, res)
	}
}

func TestRunRefuses(t *testing.T) {
	for _, tc := range []struct {
		name string
		o    Options
		want string
	}{
		{"no address", Options{}, "no server address"},
		{"size zero", Options{Addr: "127.0.0.1:1", Sizes: []int{0}}, "message size 0"},
		{"size too large", Options{Addr: "127.0.0.1:1", Sizes: []int{MaxMessage + 1}}, "give 1 to"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Run(tc.o)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error with %q", err, tc.want)
			}
		})
	}
}

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		name, out string
		gbps      float64
		pings     int
		err       string
	}{
		{
			name:  "result among other lines",
			out:   "listening [::]:5201\n  " + Marker + `{"streams":[{"bytes":1250000000,"seconds":1},{"bytes":2500000000,"seconds":1},{"bytes":625000000,"seconds":1}],"pings":[{"size":1,"rttUs":[10,20,30]}]}` + "\nbye\n",
			gbps:  10, // median of 10, 20 and 5 Gbit/s
			pings: 3,
		},
		{
			name:  "even count takes the lower middle",
			out:   Marker + `{"streams":[{"bytes":1250000000,"seconds":1},{"bytes":2500000000,"seconds":1}]}`,
			gbps:  10,
			pings: 0,
		},
		{name: "no line", out: "netperf: connection refused\n", err: "no \"cci-netperf-result\" line"},
		{name: "broken JSON", out: Marker + "{\"streams\":[", err: "netperf result line"},
		{name: "empty stream", out: Marker + `{"streams":[{"bytes":0,"seconds":1}]}`, err: "a stream of 0 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := Parse(tc.out)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("got %v, want an error with %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := r.MedianGbps(); got != tc.gbps {
				t.Errorf("median: got %g Gbit/s, want %g", got, tc.gbps)
			}
			if got := len(r.PingsOf(1)); got != tc.pings {
				t.Errorf("pings of 1 byte: got %d, want %d", got, tc.pings)
			}
		})
	}
}
