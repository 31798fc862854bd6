package supervisor

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

var errBoom = errors.New("boom")

// events is what the fake components did, in order.
type events struct {
	mu   sync.Mutex
	list []string
}

func (e *events) add(s string) {
	e.mu.Lock()
	e.list = append(e.list, s)
	e.mu.Unlock()
}

func (e *events) get() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.list)
}

// fake is a controllable component. What it does:
//
//	serve       ready, then run until cancelled
//	failStart   return errBoom without calling ready
//	exitStart   return nil without calling ready
//	failLater   ready, then return errBoom once every component is started
//	exitLater   ready, then return nil once every component is started
//	step        return nil at once (a Step)
//	stepFail    return errBoom at once (a Step)
//	bg          a Background component that runs until cancelled
type fake struct {
	name, does string
}

func (f fake) component(ev *events, started <-chan struct{}) Component {
	run := func(ctx context.Context, ready func()) error {
		ev.add("start " + f.name)
		switch f.does {
		case "failStart":
			return errBoom
		case "exitStart":
			return nil
		}
		ev.add("ready " + f.name)
		ready()
		switch f.does {
		case "failLater", "exitLater":
			<-started
			ev.add("return " + f.name)
			if f.does == "failLater" {
				return errBoom
			}
			return nil
		}
		<-ctx.Done()
		ev.add("stop " + f.name)
		return ctx.Err()
	}
	switch f.does {
	case "step":
		return Step(f.name, func(context.Context) error { ev.add("step " + f.name); return nil })
	case "stepFail":
		return Step(f.name, func(context.Context) error { ev.add("step " + f.name); return errBoom })
	case "bg":
		// It records no start: its start is not ordered with the next one's.
		return Background(f.name, func(ctx context.Context) error {
			<-ctx.Done()
			ev.add("stop " + f.name)
			return nil
		})
	}
	return Service(f.name, run)
}

func TestRun(t *testing.T) {
	for _, tc := range []struct {
		name  string
		fakes []fake
		// cancel ends the caller's context once every component is started.
		cancel bool
		// wantErr is the error Run returns ("" for nil).
		wantErr   string
		wantReady bool
		want      []string
	}{{
		name:      "start in order, each after the one before is ready; stop in reverse",
		fakes:     []fake{{"a", "serve"}, {"b", "serve"}, {"c", "serve"}},
		cancel:    true,
		wantReady: true,
		want:      []string{"start a", "ready a", "start b", "ready b", "start c", "ready c", "stop c", "stop b", "stop a"},
	}, {
		name:      "a step runs to its end before the next starts and is not stopped",
		fakes:     []fake{{"a", "serve"}, {"setup", "step"}, {"b", "serve"}},
		cancel:    true,
		wantReady: true,
		want:      []string{"start a", "ready a", "step setup", "start b", "ready b", "stop b", "stop a"},
	}, {
		name:      "background components are stopped in their place in the list",
		fakes:     []fake{{"a", "serve"}, {"bg", "bg"}, {"b", "serve"}},
		cancel:    true,
		wantReady: true,
		want:      []string{"start a", "ready a", "start b", "ready b", "stop b", "stop bg", "stop a"},
	}, {
		name:    "a failure before ready stops what started and starts nothing more",
		fakes:   []fake{{"a", "serve"}, {"b", "failStart"}, {"c", "serve"}},
		wantErr: "b: boom",
		want:    []string{"start a", "ready a", "start b", "stop a"},
	}, {
		name:    "a nil return before ready is a failure",
		fakes:   []fake{{"a", "serve"}, {"b", "exitStart"}, {"c", "serve"}},
		wantErr: "b: " + ErrExited.Error(),
		want:    []string{"start a", "ready a", "start b", "stop a"},
	}, {
		name:    "a failing step stops what started",
		fakes:   []fake{{"a", "serve"}, {"setup", "stepFail"}, {"c", "serve"}},
		wantErr: "setup: boom",
		want:    []string{"start a", "ready a", "step setup", "stop a"},
	}, {
		name:      "a failure after start stops the others, last first",
		fakes:     []fake{{"a", "serve"}, {"b", "failLater"}, {"c", "serve"}},
		wantErr:   "b: boom",
		wantReady: true,
		want:      []string{"start a", "ready a", "start b", "ready b", "start c", "ready c", "return b", "stop c", "stop a"},
	}, {
		name:      "a nil return after start is a failure",
		fakes:     []fake{{"a", "serve"}, {"b", "exitLater"}, {"c", "serve"}},
		wantErr:   "b: " + ErrExited.Error(),
		wantReady: true,
		want:      []string{"start a", "ready a", "start b", "ready b", "start c", "ready c", "return b", "stop c", "stop a"},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			ev := &events{}
			started := make(chan struct{})
			var components []Component
			for _, f := range tc.fakes {
				components = append(components, f.component(ev, started))
			}
			readyCalls := 0
			err := Run(ctx, Config{Log: testLog(t, nil), Ready: func() {
				readyCalls++
				close(started)
				if tc.cancel {
					cancel()
				}
			}}, components...)
			if got := errString(err); got != tc.wantErr {
				t.Errorf("Run returned %q, want %q", got, tc.wantErr)
			}
			if tc.wantErr != "" && !errors.Is(err, errBoom) && !errors.Is(err, ErrExited) {
				t.Errorf("Run's error %v does not wrap the component's", err)
			}
			if want := map[bool]int{true: 1}[tc.wantReady]; readyCalls != want {
				t.Errorf("Ready called %d times, want %d", readyCalls, want)
			}
			if got := ev.get(); !slices.Equal(got, tc.want) {
				t.Errorf("events:\n got  %q\n want %q", got, tc.want)
			}
		})
	}
}

// A background component does not hold the next one back: this one never
// calls ready, and the list still starts.
func TestBackgroundDoesNotWait(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ev := &events{}
	never := Component{name: "quiet", kind: background, run: func(ctx context.Context, _ func()) error {
		<-ctx.Done()
		return nil
	}}
	err := Run(ctx, Config{Log: testLog(t, nil), Ready: cancel}, never, fake{"after", "serve"}.component(ev, nil))
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if got, want := ev.get(), []string{"start after", "ready after", "stop after"}; !slices.Equal(got, want) {
		t.Errorf("events %q, want %q", got, want)
	}
}

// The caller's context ending during start-up is a clean stop: the started
// components are stopped, the rest never start, Ready is not called.
func TestCancelDuringStart(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ev := &events{}
	waiting := Service("slow", func(ctx context.Context, _ func()) error {
		ev.add("start slow")
		cancel() // the caller gives up while this one starts
		<-ctx.Done()
		ev.add("stop slow")
		return nil
	})
	err := Run(ctx, Config{Log: testLog(t, nil), Ready: func() { t.Error("Ready called") }},
		fake{"a", "serve"}.component(ev, nil), waiting, fake{"c", "serve"}.component(ev, nil))
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if got, want := ev.get(), []string{"start a", "ready a", "start slow", "stop slow", "stop a"}; !slices.Equal(got, want) {
		t.Errorf("events %q, want %q", got, want)
	}
}

// A component that ignores its cancellation is left behind at the stop
// deadline and named in the log; the ones before it are still cancelled.
func TestStopDeadline(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ev := &events{}
	release := make(chan struct{})
	defer close(release)
	stuck := Service("stuck", func(_ context.Context, ready func()) error {
		ready()
		<-release
		return nil
	})
	firstStopped := make(chan struct{})
	first := Service("first", func(ctx context.Context, ready func()) error {
		ready()
		<-ctx.Done()
		close(firstStopped)
		return nil
	})
	var logs bytes.Buffer
	err := Run(ctx, Config{Log: testLog(t, &logs), StopTimeout: 10 * time.Millisecond, Ready: cancel},
		first, stuck, fake{"last", "serve"}.component(ev, nil))
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if got, want := ev.get(), []string{"start last", "ready last", "stop last"}; !slices.Equal(got, want) {
		t.Errorf("events %q, want %q", got, want)
	}
	if !strings.Contains(logs.String(), "did not stop in time") || !strings.Contains(logs.String(), "stuck") {
		t.Errorf("the log does not name the component left behind:\n%s", logs.String())
	}
	// Cancelled at the deadline although not waited for.
	<-firstStopped
}

func TestProbed(t *testing.T) {
	for _, tc := range []struct {
		name string
		// probe's result; the run always serves until cancelled.
		probeErr error
		// runErr, if set, is returned by run at once instead.
		runErr  error
		wantErr string
		ready   bool
	}{
		{name: "ready when the probe passes", ready: true},
		{name: "a failing probe cancels the run and is the error", probeErr: errBoom, wantErr: "c: not ready: boom"},
		{name: "a run that fails while probed is the error", runErr: errBoom, wantErr: "c: boom"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			runStopped := false
			run := func(ctx context.Context) error {
				if tc.runErr != nil {
					return tc.runErr
				}
				<-ctx.Done()
				runStopped = true
				return nil
			}
			probe := func(ctx context.Context) error {
				if tc.runErr != nil {
					// Probing until the run's failure cancels it.
					<-ctx.Done()
					return ctx.Err()
				}
				return tc.probeErr
			}
			ready := false
			err := Run(ctx, Config{Log: testLog(t, nil), Ready: func() { ready = true; cancel() }}, Service("c", Probed(run, probe)))
			if got := errString(err); got != tc.wantErr {
				t.Errorf("Run returned %q, want %q", got, tc.wantErr)
			}
			if ready != tc.ready {
				t.Errorf("ready = %v, want %v", ready, tc.ready)
			}
			if tc.runErr == nil && !runStopped {
				t.Error("the run was not cancelled")
			}
		})
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// testLog logs through t, and into w if given.
func testLog(t *testing.T, w *bytes.Buffer) *slog.Logger {
	var out = &tLogWriter{t: t, also: w}
	return slog.New(slog.NewTextHandler(out, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tLogWriter struct {
	t    *testing.T
	also *bytes.Buffer
}

func (w *tLogWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	if w.also != nil {
		w.also.Write(p)
	}
	return len(p), nil
}
