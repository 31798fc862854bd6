// Package netperf measures one TCP path: bulk throughput of a single
// stream and round-trip time of small request/response exchanges. It is
// the engine of `cci bench network`, run on both ends of the path by the
// netperf test image (internal/testimage/netperf) inside pods, and by the
// same binary in the hosts' own network namespaces for the floor, so that
// pod paths and host paths are measured by the same code.
//
// The protocol is ours and minimal. A client opens one connection per
// test and sends one mode byte:
//
//	'S' stream:    client writes for a fixed time, then half-closes;
//	               server counts bytes until EOF and answers the count
//	               (8 bytes, big endian): the client's clock stops there,
//	               so bytes still in flight are counted as not yet sent.
//	'P' ping-pong: client sends the message size (4 bytes, big endian),
//	               then messages of that size one at a time; the server
//	               echoes each whole message back. Each exchange is one
//	               round trip.
package netperf

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"
)

const (
	modeStream = 'S'
	modePing   = 'P'
	// MaxMessage bounds a ping-pong message, so that a stray client cannot
	// make the server allocate at will.
	MaxMessage = 1 << 20
	// chunk is the size of each write of a stream, large enough that the
	// per-call cost is small against the copy.
	chunk = 128 << 10
)

// Serve answers clients on ln until it is closed; every connection runs
// in its own goroutine.
func Serve(ln net.Listener) error {
	for {
		conn, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		go func() {
			defer conn.Close()
			_ = serveConn(conn)
		}()
	}
}

func serveConn(conn net.Conn) error {
	var mode [1]byte
	if _, err := io.ReadFull(conn, mode[:]); err != nil {
		return err
	}
	switch mode[0] {
	case modeStream:
		n, err := io.CopyBuffer(io.Discard, conn, make([]byte, chunk))
		if err != nil {
			return err
		}
		var out [8]byte
		binary.BigEndian.PutUint64(out[:], uint64(n))
		_, err = conn.Write(out[:])
		return err
	case modePing:
		var hdr [4]byte
		if _, err := io.ReadFull(conn, hdr[:]); err != nil {
			return err
		}
		size := binary.BigEndian.Uint32(hdr[:])
		if size == 0 || size > MaxMessage {
			return fmt.Errorf("message size %d: want 1 to %d", size, MaxMessage)
		}
		buf := make([]byte, size)
		for {
			if _, err := io.ReadFull(conn, buf); err != nil {
				if errors.Is(err, io.EOF) {
					return nil
				}
				return err
			}
			if _, err := conn.Write(buf); err != nil {
				return err
			}
		}
	default:
		return fmt.Errorf("unknown mode %q", mode[0])
	}
}

// Options is one client run against a server.
type Options struct {
	// Addr is the server, host:port.
	Addr string
	// StreamFor is how long each stream writes. 0: no stream test.
	StreamFor time.Duration
	// Streams is how many stream tests run one after another.
	Streams int
	// Pings is how many round trips each message size takes, after
	// Warmup round trips that are not recorded.
	Pings  int
	Warmup int
	// Sizes are the ping-pong message sizes in bytes.
	Sizes []int
	// ConnectFor is how long the client retries to connect while the
	// server is still starting.
	ConnectFor time.Duration
}

// Result is what a client run measured. It travels as one JSON line on
// the client's standard output (Marker first), which is how the bench
// reads it back from a pod's log.
type Result struct {
	// Streams are the stream tests, in order.
	Streams []Stream `json:"streams,omitempty"`
	// Pings are the round trips of each message size, in order.
	Pings []Pings `json:"pings,omitempty"`
}

// Stream is one stream test: Bytes reached the server in Seconds (from
// the first write to the server's count received).
type Stream struct {
	Bytes   int64   `json:"bytes"`
	Seconds float64 `json:"seconds"`
}

// Gbps is the stream's throughput in Gbit/s.
func (s Stream) Gbps() float64 {
	if s.Seconds <= 0 {
		return 0
	}
	return float64(s.Bytes) * 8 / s.Seconds / 1e9
}

// Pings are the round-trip times of one message size, in microseconds.
type Pings struct {
	Size int       `json:"size"`
	RTT  []float64 `json:"rttUs"`
}

// Marker starts the result line in the client's output.
const Marker = "cci-netperf-result "

// Run measures the path to o.Addr.
func Run(o Options) (*Result, error) {
	if o.Addr == "" {
		return nil, errors.New("no server address: pass -addr HOST:PORT")
	}
	res := &Result{}
	for i := 0; i < o.Streams && o.StreamFor > 0; i++ {
		s, err := stream(o)
		if err != nil {
			return nil, fmt.Errorf("stream %d to %s: %w", i+1, o.Addr, err)
		}
		res.Streams = append(res.Streams, s)
	}
	for _, size := range o.Sizes {
		if size <= 0 || size > MaxMessage {
			return nil, fmt.Errorf("message size %d: give 1 to %d bytes", size, MaxMessage)
		}
		p, err := pingPong(o, size)
		if err != nil {
			return nil, fmt.Errorf("ping-pong of %d bytes with %s: %w", size, o.Addr, err)
		}
		res.Pings = append(res.Pings, p)
	}
	return res, nil
}

// dial connects, retrying while the server may still be starting.
func dial(o Options) (*net.TCPConn, error) {
	deadline := time.Now().Add(o.ConnectFor)
	for {
		c, err := net.DialTimeout("tcp", o.Addr, 5*time.Second)
		if err == nil {
			return c.(*net.TCPConn), nil
		}
		if time.Now().After(deadline) {
			return nil, err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func stream(o Options) (Stream, error) {
	conn, err := dial(o)
	if err != nil {
		return Stream{}, err
	}
	defer conn.Close()
	buf := make([]byte, chunk)
	buf[0] = modeStream
	var sent int64
	start := time.Now()
	// The mode byte leads the first chunk; the rest is zeros.
	end := start.Add(o.StreamFor)
	for first := true; first || time.Now().Before(end); first = false {
		n, err := conn.Write(buf)
		sent += int64(n)
		if err != nil {
			return Stream{}, err
		}
		if first {
			buf[0] = 0
		}
	}
	if err := conn.CloseWrite(); err != nil {
		return Stream{}, err
	}
	var got [8]byte
	if _, err := io.ReadFull(conn, got[:]); err != nil {
		return Stream{}, fmt.Errorf("read the server's byte count: %w", err)
	}
	took := time.Since(start)
	n := int64(binary.BigEndian.Uint64(got[:]))
	if n != sent-1 {
		return Stream{}, fmt.Errorf("the server counted %d bytes, the client sent %d", n, sent-1)
	}
	return Stream{Bytes: n, Seconds: took.Seconds()}, nil
}

func pingPong(o Options, size int) (Pings, error) {
	conn, err := dial(o)
	if err != nil {
		return Pings{}, err
	}
	defer conn.Close()
	// Go sets TCP_NODELAY by default; say so, a round trip must not wait
	// for Nagle's algorithm.
	if err := conn.SetNoDelay(true); err != nil {
		return Pings{}, err
	}
	hdr := []byte{modePing, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(hdr[1:], uint32(size))
	if _, err := conn.Write(hdr); err != nil {
		return Pings{}, err
	}
	msg := make([]byte, size)
	back := make([]byte, size)
	p := Pings{Size: size, RTT: make([]float64, 0, o.Pings)}
	for i := 0; i < o.Warmup+o.Pings; i++ {
		msg[0] = byte(i)
		t := time.Now()
		if _, err := conn.Write(msg); err != nil {
			return Pings{}, err
		}
		if _, err := io.ReadFull(conn, back); err != nil {
			return Pings{}, err
		}
		rtt := time.Since(t)
		if back[0] != msg[0] {
			return Pings{}, fmt.Errorf("round trip %d came back with the wrong message", i)
		}
		if i >= o.Warmup {
			p.RTT = append(p.RTT, float64(rtt.Nanoseconds())/1e3)
		}
	}
	return p, nil
}

// Format is r as the line a client prints.
func (r *Result) Format() (string, error) {
	raw, err := json.Marshal(r)
	if err != nil {
		return "", err
	}
	return Marker + string(raw), nil
}

// Parse finds the result line in a client's output (a pod's log).
func Parse(out string) (*Result, error) {
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 0, 64<<10), 64<<20)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), strings.TrimSpace(Marker))
		if !ok {
			continue
		}
		var r Result
		if err := json.Unmarshal([]byte(strings.TrimSpace(rest)), &r); err != nil {
			return nil, fmt.Errorf("netperf result line: %w", err)
		}
		for _, s := range r.Streams {
			if s.Bytes <= 0 || s.Seconds <= 0 {
				return nil, fmt.Errorf("netperf result: a stream of %d bytes in %gs", s.Bytes, s.Seconds)
			}
		}
		return &r, nil
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return nil, fmt.Errorf("no %q line in the output %q", strings.TrimSpace(Marker), tail(out, 300))
}

// PingsOf returns the round trips of one message size, or nil.
func (r *Result) PingsOf(size int) []float64 {
	for _, p := range r.Pings {
		if p.Size == size {
			return p.RTT
		}
	}
	return nil
}

// MedianGbps is the median throughput over the stream tests (the lower
// middle of an even count), 0 without any.
func (r *Result) MedianGbps() float64 {
	if len(r.Streams) == 0 {
		return 0
	}
	v := make([]float64, len(r.Streams))
	for i, s := range r.Streams {
		v[i] = s.Gbps()
	}
	// Insertion sort: a handful of values.
	for i := 1; i < len(v); i++ {
		for j := i; j > 0 && v[j] < v[j-1]; j-- {
			v[j], v[j-1] = v[j-1], v[j]
		}
	}
	return v[(len(v)-1)/2]
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}
