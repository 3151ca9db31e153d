package docker

import (
	"context"
	"time"

	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"

	"github.com/capsule-cloud/capsule/drivers"
)

var _ drivers.RuntimeWatcher = (*Driver)(nil)

// WatchRuntime implements drivers.RuntimeWatcher with dockerd's event
// stream: the stream ends when dockerd stops, is killed or restarts, and
// dockerd is pinged (backing off up to 5 s) until it answers again; then
// restarted is called and the stream re-opened. With live-restore (how
// Capsule runs dockerd) the servers kept running meanwhile; without it,
// or after a crash that took the containers, the agent resumes them.
// Only daemon events are asked for, so a busy host's container events do
// not flow here for nothing.
func (d *Driver) WatchRuntime(ctx context.Context, restarted func()) {
	const maxDelay = 5 * time.Second
	lost := false
	delay := 100 * time.Millisecond
	for ctx.Err() == nil {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := d.cli.Ping(pctx)
		cancel()
		if err != nil {
			if !lost {
				d.log.Warn("dockerd does not answer; waiting for it", "host", d.opts.Host, "err", err)
			}
			lost = true
			if !sleepCtx(ctx, delay) {
				return
			}
			delay = min(delay*2, maxDelay)
			continue
		}
		delay = 100 * time.Millisecond
		if lost {
			d.log.Info("dockerd answers again", "host", d.opts.Host)
			d.forgetInfo()
			restarted()
			lost = false
		}
		err = d.followEvents(ctx)
		if ctx.Err() != nil {
			return
		}
		d.log.Warn("dockerd event stream ended; dockerd stopped or restarted", "host", d.opts.Host, "err", err)
		lost = true
	}
}

// followEvents reads dockerd's daemon events until the stream ends and
// returns why.
func (d *Driver) followEvents(ctx context.Context) error {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	msgs, errs := d.cli.Events(sctx, events.ListOptions{Filters: filters.NewArgs(filters.Arg("type", string(events.DaemonEventType)))})
	for {
		select {
		case <-msgs:
		case err := <-errs:
			return err
		}
	}
}

// sleepCtx waits for d or ctx's end, whichever comes first, and reports
// whether ctx is still live.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
