// Package rungroup runs a daemon's services together: each in its own
// goroutine, all stopped when the first one fails or the context ends.
package rungroup

import (
	"context"
	"fmt"
	"sync"
)

// Group is a set of named services sharing one context.
type Group struct {
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
	first  error
}

// New returns a group whose services stop when ctx ends.
func New(ctx context.Context) *Group {
	ctx, cancel := context.WithCancel(ctx)
	return &Group{ctx: ctx, cancel: cancel}
}

// Go starts fn. An error it returns while the group is still running stops
// every other service and is what Wait returns, named after the service; an
// error after the group was stopped is the stop itself and is dropped.
func (g *Group) Go(name string, fn func(context.Context) error) {
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		if err := fn(g.ctx); err != nil && g.ctx.Err() == nil {
			g.once.Do(func() { g.first = fmt.Errorf("%s: %w", name, err) })
			g.cancel()
		}
	}()
}

// Wait blocks until every service returned, and returns the first failure.
func (g *Group) Wait() error {
	g.wg.Wait()
	g.cancel()
	return g.first
}
