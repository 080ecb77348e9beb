package kommander

// A rate limit for log lines that someone else can make us write: a peer or a stranger on
// the network should not be able to fill the disk through our logs (S32).

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"
)

// transportLogInterval is how often each kind of refusal may be logged by a transport.
const transportLogInterval = 10 * time.Second

// rateLog writes at most one line per message per interval. Lines beyond that are
// counted, and when the interval ends one more line reports how many were suppressed, so
// that a flood still shows, with its size, in two lines per interval. Messages are the
// keys, so callers pass constant messages and put what varies in the attributes; the
// number of keys then stays bounded by the number of call sites.
type rateLog struct {
	base  *slog.Logger // writes the summaries
	clock Clock
	every time.Duration

	mu     sync.Mutex
	closed bool
	keys   map[string]*rateLogKey
}

type rateLogKey struct {
	level      slog.Level
	next       time.Time // when a line may be written again
	suppressed int
	flush      Timer // pending summary, nil when none
}

func newRateLog(log *slog.Logger, clock Clock, every time.Duration) *rateLog {
	return &rateLog{base: log, clock: clock, every: every, keys: make(map[string]*rateLogKey)}
}

// log writes msg with args to l, unless a line with the same msg was written less than an
// interval ago; then it only counts it.
func (r *rateLog) log(l *slog.Logger, level slog.Level, msg string, args ...any) {
	now := r.clock.Now()
	r.mu.Lock()
	k := r.keys[msg]
	if k == nil {
		k = &rateLogKey{}
		r.keys[msg] = k
	}
	if now.Before(k.next) || r.closed {
		k.suppressed++
		k.level = max(k.level, level)
		if k.flush == nil && !r.closed {
			k.flush = r.clock.AfterFunc(k.next.Sub(now), func() { r.summarize(msg) })
		}
		r.mu.Unlock()
		return
	}
	k.next = now.Add(r.every)
	r.mu.Unlock()
	l.Log(context.Background(), level, msg, args...)
}

func (r *rateLog) warn(l *slog.Logger, msg string, args ...any) {
	r.log(l, slog.LevelWarn, msg, args...)
}

// summarize writes how many lines of msg were suppressed since the last one written.
func (r *rateLog) summarize(msg string) {
	r.mu.Lock()
	k := r.keys[msg]
	n, level := k.suppressed, k.level
	k.suppressed, k.level, k.flush = 0, 0, nil
	r.mu.Unlock()
	if n > 0 {
		r.base.Log(context.Background(), level, "log lines suppressed: "+msg, "suppressed", n, "interval", r.every)
	}
}

// close stops the pending summaries and writes them at once; lines logged afterwards are
// only counted.
func (r *rateLog) close() {
	r.mu.Lock()
	r.closed = true
	var pending []string
	for msg, k := range r.keys {
		if k.flush != nil {
			k.flush.Stop()
			pending = append(pending, msg)
		}
	}
	r.mu.Unlock()
	for _, msg := range pending {
		r.summarize(msg)
	}
}

// writer returns a writer for a log.Logger (net/http's ErrorLog) whose lines go through
// the rate limit under msg, the text of each line in attribute "err".
func (r *rateLog) writer(l *slog.Logger, msg string) io.Writer {
	return rateLogWriter{r, l, msg}
}

type rateLogWriter struct {
	r   *rateLog
	l   *slog.Logger
	msg string
}

func (w rateLogWriter) Write(p []byte) (int, error) {
	w.r.warn(w.l, w.msg, "err", strings.TrimSpace(string(p)))
	return len(p), nil
}
