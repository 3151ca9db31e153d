package agent

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// instanceLocks serializes operations per instance id: a stop and a
// delete of one instance never interleave, while different instances run
// concurrently. Entries are reference counted so the map only holds ids
// that someone holds or waits for.
type instanceLocks struct {
	mu sync.Mutex
	m  map[string]*lockEntry
	// watchers collect the ids whose lock an operation asks for while
	// they are registered (see watch).
	watchers map[*lockWatch]struct{}
}

type lockWatch struct{ ids map[string]bool }

type lockEntry struct {
	ch   chan struct{} // one token: holding it is holding the lock
	refs int
}

func newInstanceLocks() *instanceLocks {
	return &instanceLocks{m: map[string]*lockEntry{}, watchers: map[*lockWatch]struct{}{}}
}

// watch records every id an operation (lock, not tryLock: background
// work that changes no power state) asks the lock of from now until stop
// is called; touched reports whether id was. Reconcile uses it so that an
// observation taken before an operation that started and finished
// meanwhile is not reported as the instance's state (busy alone misses
// an operation that ended before it is asked).
func (l *instanceLocks) watch() (touched func(id string) bool, stop func()) {
	w := &lockWatch{ids: map[string]bool{}}
	l.mu.Lock()
	l.watchers[w] = struct{}{}
	l.mu.Unlock()
	touched = func(id string) bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		return w.ids[id]
	}
	stop = func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		delete(l.watchers, w)
	}
	return touched, stop
}

// lock takes id's lock, waiting until it is free or ctx ends (a channel,
// not a sync.Mutex, so a waiter can give up).
func (l *instanceLocks) lock(ctx context.Context, id string) (unlock func(), err error) {
	l.mu.Lock()
	e, ok := l.m[id]
	if !ok {
		e = &lockEntry{ch: make(chan struct{}, 1)}
		l.m[id] = e
	}
	e.refs++
	for w := range l.watchers {
		w.ids[id] = true
	}
	l.mu.Unlock()

	release := func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		e.refs--
		if e.refs == 0 {
			delete(l.m, id)
		}
	}
	select {
	case e.ch <- struct{}{}:
	case <-ctx.Done():
		release()
		return nil, fmt.Errorf("agent: wait for the lock of instance %s: %w", id, ctx.Err())
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			<-e.ch
			release()
		})
	}, nil
}

// tryLock takes id's lock only if nobody holds or awaits it: background
// work (reconcile's network repair) gives way to operations.
func (l *instanceLocks) tryLock(id string) (unlock func(), ok bool) {
	l.mu.Lock()
	if _, busy := l.m[id]; busy {
		l.mu.Unlock()
		return nil, false
	}
	e := &lockEntry{ch: make(chan struct{}, 1), refs: 1}
	e.ch <- struct{}{}
	l.m[id] = e
	l.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			<-e.ch
			l.mu.Lock()
			defer l.mu.Unlock()
			e.refs--
			if e.refs == 0 {
				delete(l.m, id)
			}
		})
	}, true
}

// busy reports whether an operation on id holds or awaits its lock.
func (l *instanceLocks) busy(id string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	_, ok := l.m[id]
	return ok
}

// held reports how many ids have a lock entry (tests check nothing leaks).
func (l *instanceLocks) held() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.m)
}

// tombstones remembers instances deleted on this host for a while, so a
// build that loses the race against its own delete (both dispatched at
// once, the delete took the lock first) cannot resurrect the container.
type tombstones struct {
	ttl time.Duration
	mu  sync.Mutex
	m   map[string]time.Time
}

func newTombstones(ttl time.Duration) *tombstones {
	return &tombstones{ttl: ttl, m: map[string]time.Time{}}
}

func (t *tombstones) add(id string, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for k, at := range t.m {
		if now.Sub(at) > t.ttl {
			delete(t.m, k)
		}
	}
	t.m[id] = now
}

func (t *tombstones) has(id string, now time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	at, ok := t.m[id]
	return ok && now.Sub(at) <= t.ttl
}

// errStopping makes a message that arrives while the agent stops go back
// to the queue for the next agent run.
var errStopping = errors.New("agent: stopping")

// inflight counts running handlers so Run can wait for them on stop. A
// WaitGroup does not fit: the bus may still hand over a message after
// Wait started, which a WaitGroup forbids.
type inflight struct {
	mu       sync.Mutex
	n        int
	stopping bool
	idle     chan struct{} // closed when stopping and n reaches 0
}

func newInflight() *inflight { return &inflight{idle: make(chan struct{})} }

// enter registers a handler; it fails once stop began.
func (f *inflight) enter() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stopping {
		return errStopping
	}
	f.n++
	return nil
}

func (f *inflight) leave() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n--
	if f.stopping && f.n == 0 {
		close(f.idle)
	}
}

// stop refuses new handlers and returns a channel closed when the running
// ones are done.
func (f *inflight) stop() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.stopping {
		f.stopping = true
		if f.n == 0 {
			close(f.idle)
		}
	}
	return f.idle
}
