// Package verdictlog is STYX's verdict log on NATS JetStream: the streams
// and their retention, the leader's publisher and the followers' consumer.
//
// Two streams, one per retention class, because a stream's MaxAge is its
// only retention that every JetStream server (2.9 and later) enforces:
//
//	STYX_CLEAN  styx.log.clean    verdicts that found no proxy   --clean-retention (1 h)
//	STYX_PROXY  styx.log.proxy    proxy verdicts                 --proxy-retention (30 d)
//	            styx.log.attacks  attack reports
//
// Every message is a styx.v1.LogBatch (the verdicts of one worker result
// of one class, or the attack reports of one ReportAttacks call) published
// with the message id "<term>.<seq>", so a batch published again after a
// lost acknowledgement is stored once (within the stream's duplicate
// window). A follower keeps one cursor per stream: the sequence of the last
// message it applied. The streams do not depend on which scheduler leads.
package verdictlog

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/styx-inference/styx/pkg/pki"
)

// Stream and subject names.
const (
	StreamClean = "STYX_CLEAN"
	StreamProxy = "STYX_PROXY"

	SubjectClean   = "styx.log.clean"
	SubjectProxy   = "styx.log.proxy"
	SubjectAttacks = "styx.log.attacks"
)

// Streams names both streams, the order followers start them in.
var Streams = []string{StreamProxy, StreamClean}

// Defaults of the retention policy.
const (
	DefaultCleanRetention = time.Hour
	DefaultProxyRetention = 30 * 24 * time.Hour
	DefaultDuplicates     = 2 * time.Minute
)

// Policy is the retention policy of the streams. Nodes apply the same
// retention to their stores.
type Policy struct {
	// CleanRetention is how long verdicts that found no proxy are kept.
	CleanRetention time.Duration
	// ProxyRetention is how long proxy verdicts and attack reports are kept.
	ProxyRetention time.Duration
	// Replicas is each stream's replica count (1, or 3 on a cluster).
	Replicas int
	// Duplicates is the window in which a message id is stored once.
	Duplicates time.Duration
}

// DefaultPolicy is the product's policy: clean verdicts 1 h, proxies and
// attack reports 30 days, one replica.
func DefaultPolicy() Policy {
	return Policy{CleanRetention: DefaultCleanRetention, ProxyRetention: DefaultProxyRetention, Replicas: 1, Duplicates: DefaultDuplicates}
}

// Validate reports a policy error.
func (p Policy) Validate() error {
	switch {
	case p.CleanRetention <= 0:
		return fmt.Errorf("verdictlog: clean retention %s must be positive", p.CleanRetention)
	case p.ProxyRetention < p.CleanRetention:
		return fmt.Errorf("verdictlog: proxy retention %s is shorter than clean retention %s", p.ProxyRetention, p.CleanRetention)
	case p.Replicas < 1 || p.Replicas > 5:
		return fmt.Errorf("verdictlog: replicas %d not in 1..5", p.Replicas)
	case p.Duplicates < 0:
		return fmt.Errorf("verdictlog: duplicate window %s is negative", p.Duplicates)
	}
	return nil
}

// StreamConfigs returns the two streams' configurations.
func (p Policy) StreamConfigs() []jetstream.StreamConfig {
	dup := p.Duplicates
	if dup == 0 {
		dup = DefaultDuplicates
	}
	// The duplicate window may not exceed a stream's MaxAge.
	cleanDup := min(dup, p.CleanRetention)
	return []jetstream.StreamConfig{
		{
			Name: StreamProxy, Description: "STYX proxy verdicts and attack reports",
			Subjects: []string{SubjectProxy, SubjectAttacks}, Storage: jetstream.FileStorage,
			Retention: jetstream.LimitsPolicy, Discard: jetstream.DiscardOld,
			MaxAge: p.ProxyRetention, Replicas: p.Replicas, Duplicates: dup,
		},
		{
			Name: StreamClean, Description: "STYX verdicts that found no proxy",
			Subjects: []string{SubjectClean}, Storage: jetstream.FileStorage,
			Retention: jetstream.LimitsPolicy, Discard: jetstream.DiscardOld,
			MaxAge: p.CleanRetention, Replicas: p.Replicas, Duplicates: cleanDup,
		},
	}
}

// Ensure creates both streams, or updates them to the policy. Every
// scheduler calls it at start; the calls are idempotent.
func Ensure(ctx context.Context, js jetstream.JetStream, p Policy) error {
	if err := p.Validate(); err != nil {
		return err
	}
	for _, sc := range p.StreamConfigs() {
		if _, err := js.CreateOrUpdateStream(ctx, sc); err != nil {
			return fmt.Errorf("verdictlog: stream %s: %w", sc.Name, err)
		}
	}
	return nil
}

// Connect opens a NATS connection that reconnects forever and logs each
// disconnection, reconnection and error. It returns at once even when the
// server is not up yet (the connection keeps trying).
func Connect(url, name string, log zerolog.Logger, extra ...nats.Option) (*nats.Conn, error) {
	if url == "" {
		return nil, errors.New("verdictlog: empty NATS URL")
	}
	opts := []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.RetryOnFailedConnect(true),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.DisconnectErrHandler(func(c *nats.Conn, err error) {
			if err == nil || c.IsClosed() {
				return // closed on purpose
			}
			log.Warn().Err(err).Msg("verdict log: disconnected from NATS, reconnecting")
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			log.Info().Str("url", c.ConnectedUrlRedacted()).Msg("verdict log: reconnected to NATS")
		}),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			log.Error().Err(err).Msg("verdict log: NATS error")
		}),
	}
	nc, err := nats.Connect(url, append(opts, extra...)...)
	if err != nil {
		return nil, fmt.Errorf("verdictlog: connect %s: %w", url, err)
	}
	return nc, nil
}

// TLS returns the NATS options of a client with identity src: mutual TLS
// with a NATS server of this cluster's CA. None for a nil src (plaintext).
func TLS(src *pki.Source) []nats.Option {
	if src == nil {
		return nil
	}
	return []nats.Option{nats.Secure(src.ClientConfig(pki.AnyOf(pki.NATS)))}
}
