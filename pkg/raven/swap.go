package raven

import (
	"net/netip"
	"sync/atomic"

	"github.com/styx-inference/styx/pkg/verdict"
)

// Swap is an Engine whose engine can be replaced while it serves: the
// cluster node's query path holds one, and the model follower installs
// each newly published model into it. Examine sees either the old or the
// new engine, never a mix.
type Swap struct{ cur atomic.Pointer[engineBox] }

type engineBox struct{ Engine }

// NewSwap returns a Swap serving e.
func NewSwap(e Engine) *Swap {
	s := &Swap{}
	s.Set(e)
	return s
}

// Set installs e for every later call.
func (s *Swap) Set(e Engine) { s.cur.Store(&engineBox{e}) }

// Current returns the engine in use.
func (s *Swap) Current() Engine { return s.cur.Load().Engine }

// Examine implements Engine.
func (s *Swap) Examine(a netip.Addr) verdict.Verdict { return s.cur.Load().Examine(a) }

// ModelVersion implements Engine.
func (s *Swap) ModelVersion() string { return s.cur.Load().ModelVersion() }
