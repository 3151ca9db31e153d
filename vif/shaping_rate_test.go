//go:build ratetest

package vif

import (
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Rate tests (build tag ratetest): they measure what a shaped NIC gets
// against a tolerance, so deploy/test.sh runs them on their own, on a
// quiet machine.

// TestRateShaping: a server with quota:vif_inbound_average and
// outbound_average of 1250 KB/s (10 Mbit/s) gets TCP at that rate each
// way, without loss; unshaped it is much faster.
func TestRateShaping(t *testing.T) {
	_, _, p := setup(t)
	// Only a is shaped: a->b measures a's outbound shaping, b->a its
	// inbound.
	sp := plugShapedPair(t, p)
	const rate = shapedRate
	sn, a, b, replug := sp.subnet, sp.a, sp.b, sp.replug

	shaped := func(t *testing.T, from, to netnsT, ip string) {
		t.Helper()
		r0 := tcpRetrans(t, from)
		got := throughput(t, from, to, ip, 4*time.Second)
		r1 := tcpRetrans(t, from)
		t.Logf("%s -> %s: %.0f KB/s of TCP payload (limit %d KB/s on the wire); %d of %d segments retransmitted",
			from.name, to.name, got/1000, rate, r1.retrans-r0.retrans, r1.out-r0.out)
		if got < rate*1000*0.85 || got > rate*1000*1.15 {
			t.Errorf("rate %.0f KB/s, want %d ± 15%%", got/1000, rate)
		}
		// Shaping, not policing: the sender is held back by a queue. Out
		// of the server nothing is lost (the server's own qdisc pushes
		// back on its TCP); into it, OVS's userspace datapath drops what
		// overflows its packet socket's send buffer while the qdisc holds
		// packets (~1% measured), which TCP rides out at the rate. A
		// policer loses far more (an IFB the datapath bypasses: ~17%).
		if lost := r1.retrans - r0.retrans; lost*20 > r1.out-r0.out {
			t.Errorf("%d of %d segments retransmitted: loss-driven, not shaped", lost, r1.out-r0.out)
		}
	}
	unshaped := func(t *testing.T, from, to netnsT, ip string) {
		t.Helper()
		got := throughput(t, from, to, ip, 2*time.Second)
		t.Logf("%s -> %s unshaped: %.0f KB/s", from.name, to.name, got/1000)
		if got < 4*rate*1000 {
			t.Errorf("unshaped rate %.0f KB/s, want well above %d KB/s (else the shaped test proves nothing)", got/1000, rate)
		}
	}

	t.Run("out", func(t *testing.T) { shaped(t, a, b, sn+"11") })
	t.Run("in", func(t *testing.T) { shaped(t, b, a, sn+"10") })
	t.Run("removed", func(t *testing.T) {
		replug(nil)
		unshaped(t, a, b, sn+"11")
		unshaped(t, b, a, sn+"10")
	})
}

// throughput sends TCP from namespace from to a listener in namespace to on
// ip for d, and returns the payload rate the receiver saw, in bytes per
// second, from its first byte to the end of the stream.
func throughput(t *testing.T, from, to netnsT, ip string, d time.Duration) float64 {
	t.Helper()
	l := listenIn(t, to, ip)
	defer l.Close()
	type result struct {
		n           int64
		first, last time.Time
		err         error
	}
	done := make(chan result, 1)
	go func() {
		var r result
		c, err := l.Accept()
		if err != nil {
			r.err = err
			done <- r
			return
		}
		defer c.Close()
		_ = c.SetReadDeadline(time.Now().Add(d + 30*time.Second))
		buf := make([]byte, 256<<10)
		for {
			k, err := c.Read(buf)
			if k > 0 {
				if r.first.IsZero() {
					r.first = time.Now()
				}
				r.n += int64(k)
				r.last = time.Now()
			}
			if err != nil {
				if !errors.Is(err, io.EOF) {
					r.err = err
				}
				break
			}
		}
		done <- r
	}()
	var c net.Conn
	if err := inNamespace(from.handle(t), func() error {
		var err error
		c, err = net.DialTimeout("tcp", l.Addr().String(), 5*time.Second)
		return err
	}); err != nil {
		t.Fatalf("dial from %s: %v", from.name, err)
	}
	buf := make([]byte, 64<<10)
	_ = c.SetWriteDeadline(time.Now().Add(d))
	for {
		if _, err := c.Write(buf); err != nil {
			break // the deadline: stop sending, let the queued data drain
		}
	}
	// Close sends what is still queued, then FIN; the receiver's window
	// runs to its last byte.
	c.Close()
	r := <-done
	if r.err != nil {
		t.Fatalf("receive in %s: %v", to.name, r.err)
	}
	secs := r.last.Sub(r.first).Seconds()
	if secs < d.Seconds()/2 {
		t.Fatalf("received %d bytes in %.2f s", r.n, secs)
	}
	return float64(r.n) / secs
}

type tcpCounters struct{ out, retrans int64 }

// tcpRetrans reads the TCP segment counters of namespace n.
func tcpRetrans(t *testing.T, n netnsT) tcpCounters {
	t.Helper()
	var names, values []string
	for _, line := range strings.Split(run(t, "ip", "netns", "exec", n.name, "cat", "/proc/net/snmp"), "\n") {
		if !strings.HasPrefix(line, "Tcp: ") {
			continue
		}
		if names == nil {
			names = strings.Fields(line)
		} else {
			values = strings.Fields(line)
		}
	}
	var c tcpCounters
	for i := range min(len(names), len(values)) {
		v, _ := strconv.ParseInt(values[i], 10, 64)
		switch names[i] {
		case "OutSegs":
			c.out = v
		case "RetransSegs":
			c.retrans = v
		}
	}
	return c
}
