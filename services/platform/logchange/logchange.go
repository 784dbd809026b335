// Package logchange logs a repeating condition once per change. A loop that retries the same
// failure every few hundred milliseconds would otherwise flood the log with one line per try;
// with it, the first failure is logged, repeats of the same message are not, and a different
// message (or the first failure after Clear) is logged again.
package logchange

import (
	"log/slog"
	"sync"
)

// Warner logs errors at Warn level once per change of message. The zero value is ready to
// use and safe for concurrent use.
type Warner struct {
	mu   sync.Mutex
	last string
}

// Warn logs msg with err (key "err") and args when err's message differs from the last one
// logged, and reports whether it logged. A nil err logs nothing and changes nothing.
func (w *Warner) Warn(logger *slog.Logger, msg string, err error, args ...any) bool {
	if err == nil {
		return false
	}
	text := err.Error()
	w.mu.Lock()
	changed := text != w.last
	w.last = text
	w.mu.Unlock()
	if changed {
		logger.Warn(msg, append([]any{"err", err}, args...)...)
	}
	return changed
}

// Clear records that the condition is over: the next error is logged even if its message is
// the same as the last one.
func (w *Warner) Clear() {
	w.mu.Lock()
	w.last = ""
	w.mu.Unlock()
}
