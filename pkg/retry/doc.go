// Package retry is what every role's reconnect and retry loops share: one
// backoff policy (NewBackoff, on github.com/cenkalti/backoff) and one sleep
// that ends with its context (Sleep).
//
// A loop resets the backoff when an attempt made progress, so that a
// connection that served for an hour and then broke is retried at once
// rather than after the longest wait:
//
//	bo := retry.NewBackoff(100*time.Millisecond, 5*time.Second)
//	for {
//		progressed, err := session(ctx)
//		if progressed {
//			bo.Reset()
//		}
//		log.Warn().Err(err).Msg("stream ended, reconnecting")
//		if !retry.Sleep(ctx, bo.NextBackOff()) {
//			return
//		}
//	}
package retry
