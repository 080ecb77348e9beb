package kommander

import (
	"bytes"
	"log"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// lineLog is a logger whose lines a test can read back.
type lineLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *lineLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *lineLog) logger() *slog.Logger { return slog.New(slog.NewTextHandler(l, nil)) }

// lines returns the lines written so far that contain substr.
func (l *lineLog) lines(substr string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, line := range strings.Split(l.buf.String(), "\n") {
		if line != "" && strings.Contains(line, substr) {
			out = append(out, line)
		}
	}
	return out
}

// TestRateLogWritesOneLinePerIntervalAndCountsTheRest (S32): a flood of the same warning
// writes its first line, then after the interval one line with the number suppressed; other
// messages have their own allowance.
func TestRateLogWritesOneLinePerIntervalAndCountsTheRest(t *testing.T) {
	var out lineLog
	clock := NewFakeClock(time.Time{})
	r := newRateLog(out.logger(), clock, 10*time.Second)
	for i := 0; i < 1000; i++ {
		r.warn(out.logger(), "handshake refused", "i", i)
		clock.Advance(time.Millisecond) // 1000 lines in one second
	}
	r.warn(out.logger(), "batch refused")
	if got := out.lines("handshake refused"); len(got) != 1 || !strings.Contains(got[0], "i=0") {
		t.Fatalf("during the flood: %q, want only the first line", got)
	}
	if got := out.lines("batch refused"); len(got) != 1 {
		t.Fatalf("another message was held back by the flood: %q", got)
	}
	clock.Advance(10 * time.Second)
	got := out.lines("handshake refused")
	if len(got) != 2 || !strings.Contains(got[1], "suppressed=999") || !strings.Contains(got[1], "level=WARN") {
		t.Fatalf("after the interval: %q, want a second line with suppressed=999", got)
	}
	if n := len(out.lines("batch refused")); n != 1 {
		t.Fatalf("a message that was not repeated got %d lines, want 1 and no summary", n)
	}
	// Quiet for an interval: the next line is written at once, with no summary pending.
	r.warn(out.logger(), "handshake refused", "i", "again")
	if got := out.lines("handshake refused"); len(got) != 3 || !strings.Contains(got[2], "i=again") {
		t.Fatalf("after the flood ended: %q", got)
	}
	if n := clock.Waiters(); n != 0 {
		t.Fatalf("%d timers pending with nothing suppressed", n)
	}
	// close writes what is pending at once and stops the timers.
	r.warn(out.logger(), "handshake refused")
	r.close()
	if got := out.lines("handshake refused"); len(got) != 4 || !strings.Contains(got[3], "suppressed=1") {
		t.Fatalf("after close: %q", got)
	}
	if n := clock.Waiters(); n != 0 {
		t.Fatalf("%d timers pending after close", n)
	}
	r.warn(out.logger(), "handshake refused")
	clock.Advance(time.Minute)
	if n := len(out.lines("handshake refused")); n != 4 {
		t.Fatalf("%d lines after close, want none more", n)
	}
}

// TestRateLogWriterLimitsALogLogger: net/http's ErrorLog (a log.Logger) goes through the
// same limit.
func TestRateLogWriterLimitsALogLogger(t *testing.T) {
	var out lineLog
	clock := NewFakeClock(time.Time{})
	r := newRateLog(out.logger(), clock, time.Second)
	l := log.New(r.writer(out.logger(), "http server error"), "", 0)
	for i := 0; i < 50; i++ {
		l.Printf("http: TLS handshake error from 10.0.0.%d:1234: EOF", i)
	}
	clock.Advance(time.Second)
	got := out.lines("http server error")
	if len(got) != 2 || !strings.Contains(got[0], "10.0.0.0:1234") || !strings.Contains(got[1], "suppressed=49") {
		t.Fatalf("lines: %q", got)
	}
}
