// Package supervisor starts a process's components in order and stops them
// in reverse order, the way k3s starts its control plane and nomad its
// agent: each component is listed once, the list says what the next one
// waits for, and every failure reaches one shutdown path.
//
// A component's life:
//
//	            Run                 ready()
//	(listed) ────────► starting ───────────► running
//	                    │    │                 │  │
//	  a step returned   │    │ returned        │  │ the caller's ctx ended, or
//	  nil               ▼    ▼                 │  │ another component failed:
//	                  done  failed ◄───────────┘  │ cancelled, the last started
//	                          │     returned      ▼ first
//	                          │                stopping ──► stopped
//	                          ▼                   │
//	                  shutdown of the others      └──► left behind (stop deadline)
//
// Only the first failure is reported; what components return while they
// are stopped is logged at debug level.
//
// A step (Step) is work done once; it is done, not failed, when it returns
// nil, and the next component starts then.
//
// Components get contexts of their own, not the caller's: when the caller's
// context ends, the supervisor still stops them one by one, last first, so
// that a component outlives everything started after it (etcd outlives the
// apiserver that writes to it).
package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// RunFunc runs a component until ctx ends and then returns nil, or returns
// the error that stopped it. It calls ready once the component serves what
// the components after it need; calling ready again, or from another
// goroutine, or after returning, is harmless.
type RunFunc func(ctx context.Context, ready func()) error

type kind int

const (
	// service: the next component starts once this one called ready.
	service kind = iota
	// background: the next component starts at once.
	background
	// step: the next component starts once this one returned nil.
	step
)

// Component is one entry of a supervisor's list. Make it with Service,
// Background or Step.
type Component struct {
	name string
	run  RunFunc
	kind kind
}

// Name is the name the component has in logs and errors.
func (c Component) Name() string { return c.name }

// Service is a long-running component that the next one waits for: the
// next one starts once run called ready.
func Service(name string, run RunFunc) Component {
	return Component{name: name, run: run, kind: service}
}

// Background is a long-running component that the next one does not wait
// for: the next one starts as soon as run was called.
func Background(name string, run func(ctx context.Context) error) Component {
	return Component{name: name, run: func(ctx context.Context, _ func()) error { return run(ctx) }, kind: background}
}

// Step is work done once, such as creating API objects: the next component
// starts when do returned nil. An error from do is a failure like any other.
func Step(name string, do func(ctx context.Context) error) Component {
	return Component{name: name, run: func(ctx context.Context, _ func()) error { return do(ctx) }, kind: step}
}

// Probed makes a RunFunc of a component that signals nothing itself and a
// probe that blocks until the component serves (polling a health endpoint,
// waiting for an informer to sync). run and probe get the same context;
// ready is called when probe returns nil. When probe fails, run is
// cancelled and the probe's error is returned: a component that never
// becomes ready has failed. Give the probe its own timeout.
func Probed(run func(ctx context.Context) error, probe func(ctx context.Context) error) RunFunc {
	return func(ctx context.Context, ready func()) error {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		var probeErr error
		probed := make(chan struct{})
		go func() {
			defer close(probed)
			if err := probe(ctx); err != nil {
				// An error after the context ended is the probe being
				// stopped, not the component failing.
				if ctx.Err() == nil {
					probeErr = fmt.Errorf("not ready: %w", err)
					cancel()
				}
				return
			}
			ready()
		}()
		err := run(ctx)
		cancel()
		<-probed
		if probeErr != nil {
			return probeErr
		}
		return err
	}
}

// Config is how a supervisor runs its list.
type Config struct {
	// Log receives a line for each component started, ready and stopped
	// (debug level), how long the shutdown took (info) and the names of
	// those that did not stop in time (warning). Default: slog's default
	// logger.
	Log *slog.Logger
	// StopTimeout bounds the whole shutdown; components still running
	// then are left behind and logged. Default 15 s.
	StopTimeout time.Duration
	// Ready, if set, is called once every component was started, every
	// service called ready and every step returned.
	Ready func()
}

// ErrExited is the failure of a long-running component that returned nil
// before shutdown.
var ErrExited = errors.New("exited before shutdown")

// result is what a component's goroutine reports when Run returns.
type result struct {
	i   int
	err error
}

// member is a started component.
type member struct {
	Component
	cancel  context.CancelFunc
	ready   chan struct{}
	running bool
}

// Run starts components in list order, calls cfg.Ready once they are all
// started and ready, and blocks until ctx ends or a component fails. Then
// it stops every running component, last first, and returns the first
// failure, as "NAME: error", or nil when ctx ended.
func Run(ctx context.Context, cfg Config, components ...Component) error {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.StopTimeout <= 0 {
		cfg.StopTimeout = 15 * time.Second
	}
	s := &supervisor{
		log:     cfg.Log,
		members: make([]*member, 0, len(components)),
		// Every component reports once; a buffer that holds them all
		// never blocks one that returns after shutdown gave up on it.
		results: make(chan result, len(components)),
	}
	for i, c := range components {
		m := s.start(ctx, i, c)
		if err := s.waitStarted(ctx, m); err != nil || ctx.Err() != nil {
			return s.shutdown(err, cfg.StopTimeout)
		}
	}
	if cfg.Ready != nil {
		cfg.Ready()
	}
	for {
		select {
		case r := <-s.results:
			if err := s.returned(r); err != nil {
				return s.shutdown(err, cfg.StopTimeout)
			}
		case <-ctx.Done():
			return s.shutdown(nil, cfg.StopTimeout)
		}
	}
}

type supervisor struct {
	log     *slog.Logger
	members []*member
	results chan result
}

func (s *supervisor) start(parent context.Context, i int, c Component) *member {
	// The caller's values but not its cancellation: shutdown cancels each
	// component in turn.
	ctx, cancel := context.WithCancel(context.WithoutCancel(parent))
	m := &member{Component: c, cancel: cancel, ready: make(chan struct{}), running: true}
	s.members = append(s.members, m)
	var once sync.Once
	ready := func() { once.Do(func() { close(m.ready) }) }
	s.log.Debug("starting", "component", c.name)
	go func() {
		s.results <- result{i, c.run(ctx, ready)}
	}()
	return m
}

// waitStarted waits until m no longer holds the next component back. It
// returns the first failure of any component meanwhile, or nil when ctx
// ended (the caller then shuts down cleanly).
func (s *supervisor) waitStarted(ctx context.Context, m *member) error {
	var ready <-chan struct{}
	switch m.kind {
	case background:
		return nil
	case service:
		ready = m.ready
	}
	began := time.Now()
	for {
		select {
		case <-ready:
			s.log.Debug("ready", "component", m.name, "took", time.Since(began))
			return nil
		case r := <-s.results:
			if err := s.returned(r); err != nil {
				return err
			}
			if s.members[r.i] == m {
				// A step that returned nil.
				s.log.Debug("done", "component", m.name, "took", time.Since(began))
				return nil
			}
		case <-ctx.Done():
			return nil
		}
	}
}

// returned records a component's return before shutdown and says whether
// it is a failure: an error from anything, or nil from anything but a step.
func (s *supervisor) returned(r result) error {
	m := s.members[r.i]
	m.running = false
	switch {
	case r.err != nil:
		return fmt.Errorf("%s: %w", m.name, r.err)
	case m.kind != step:
		return fmt.Errorf("%s: %w", m.name, ErrExited)
	}
	return nil
}

// shutdown stops the running components, last first, each after the one
// started after it returned, within timeout in all, and returns first.
func (s *supervisor) shutdown(first error, timeout time.Duration) error {
	if first != nil {
		s.log.Debug("shutting down", "cause", first)
	}
	stopping := time.Now()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for i := len(s.members) - 1; i >= 0; i-- {
		m := s.members[i]
		if !m.running {
			continue
		}
		m.cancel()
		began := time.Now()
		for m.running {
			select {
			case r := <-s.results:
				s.members[r.i].running = false
				// Errors while stopping are the stop, not a cause.
				if r.err != nil {
					s.log.Debug("stopped with an error", "component", s.members[r.i].name, "err", r.err)
				}
			case <-deadline.C:
				var left []string
				for _, m := range s.members {
					if m.running {
						m.cancel()
						left = append(left, m.name)
					}
				}
				s.log.Warn("components did not stop in time; leaving them behind", "timeout", timeout, "running", left)
				return first
			}
		}
		s.log.Debug("stopped", "component", m.name, "took", time.Since(began))
	}
	s.log.Info("every component stopped", "took", time.Since(stopping))
	return first
}
