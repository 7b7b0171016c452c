package verdictlog_test

import (
	"context"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/styx-inference/styx/pkg/verdictlog"
	styxv1 "github.com/styx-inference/styx/proto/styx/v1"
)

// benchBatch is a worker result's size.
const benchBatch = 1024

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func benchVerdicts(n int) []*styxv1.Verdict {
	vs := make([]*styxv1.Verdict, n)
	for i := range vs {
		vs[i] = &styxv1.Verdict{
			Address: []byte{198, 18, byte(i >> 8), byte(i)}, Proxy: i%50 == 0, Type: "VPN", Risk: 33,
			ModelVersion: "bench-s2", InferredUnixNano: time.Now().UnixNano(),
		}
	}
	return vs
}

// BenchmarkPublishAndApply publishes b.N results of 1,024 verdicts through
// a Publisher to an in-process JetStream server and follows them with a
// Follower whose Apply only counts: the log's own cost per verdict, both
// ends and the server together (CPU of the whole process).
func BenchmarkPublishAndApply(b *testing.B) {
	_, js := logServerTB(b)
	p := verdictlog.NewPublisher(js, verdictlog.PublisherConfig{}, zerolog.Nop())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pubDone := make(chan struct{})
	go func() { defer close(pubDone); _ = p.Run(ctx) }()
	var applied atomic.Int64
	f, err := verdictlog.NewFollower(verdictlog.FollowerConfig{
		JS:     js,
		Cursor: func(string) (uint64, error) { return 0, nil },
		Apply: func(_ string, msgs []verdictlog.Message) error {
			for _, m := range msgs {
				applied.Add(int64(len(m.Batch.GetVerdicts())))
			}
			return nil
		},
	}, zerolog.Nop())
	if err != nil {
		b.Fatal(err)
	}
	folDone := make(chan struct{})
	go func() { defer close(folDone); _ = f.Run(ctx) }()
	vs := benchVerdicts(benchBatch)
	var stored atomic.Int64
	b.ResetTimer()
	c0, t0 := cpuTime(), time.Now()
	for range b.N {
		p.Verdicts(1, vs, func() { stored.Add(1) })
	}
	want := int64(b.N * benchBatch)
	for stored.Load() < int64(b.N) || applied.Load() < want {
		time.Sleep(time.Millisecond)
	}
	wall, cpu := time.Since(t0), cpuTime()-c0
	b.StopTimer()
	b.ReportMetric(float64(cpu.Nanoseconds())/1e3/float64(want), "cpu-µs/verdict")
	b.ReportMetric(float64(want)/wall.Seconds(), "verdicts/s")
	cancel()
	<-pubDone
	<-folDone
}
