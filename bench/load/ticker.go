package load

import (
	"runtime"
	"sync"
	"time"
)

// ticker wakes an open-loop sender every period. Go's timers are woken
// by the network poller, whose wait has millisecond resolution: on an idle
// process time.Sleep(250µs) measured about 1.1 ms here, which turned the
// sender's smooth schedule into bursts a millisecond apart. The ticker
// sleeps with the kernel's high-resolution timer on a thread of its own
// instead (preciseSleep), and only its wake-up crosses to the sender.
type ticker struct {
	c    chan struct{}
	quit chan struct{}
	wg   sync.WaitGroup
}

func startTicker(period time.Duration) *ticker {
	t := &ticker{c: make(chan struct{}, 1), quit: make(chan struct{})}
	t.wg.Go(func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		for {
			preciseSleep(period)
			select {
			case <-t.quit:
				return
			case t.c <- struct{}{}:
			default: // the sender has not taken the last tick yet
			}
		}
	})
	return t
}

func (t *ticker) stop() {
	close(t.quit)
	t.wg.Wait()
}
