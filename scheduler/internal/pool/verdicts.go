package pool

import (
	"encoding/binary"
	"strings"

	"github.com/styx-inference/styx/pkg/verdict"
)

// NewVerdicts returns an empty pool of verdicts whose recent window keeps
// them compact: a record of 16 bytes per address, with the rest of the
// verdict interned (see verdictTable). A verdict the window answers with
// is a copy equal to the one completed, its Evidence shared with the
// other verdicts of its shape (never modify it). Completed verdicts must
// not be nil.
func NewVerdicts(cfg Config) (*Pool[*verdict.Verdict], error) {
	p, _, err := newVerdicts(cfg)
	return p, err
}

// newVerdicts is NewVerdicts also returning the window's table.
func newVerdicts(cfg Config) (*Pool[*verdict.Verdict], *verdictTable, error) {
	t := &verdictTable{index: make(map[string]uint32)}
	p, err := newPool(cfg, codec[*verdict.Verdict, record]{pack: t.pack, unpack: t.unpack, release: t.release})
	return p, t, err
}

// record is a verdict in the recent window: what varies from address to
// address, and the index of the rest (its shape). No pointers, so a window
// of a million records is one allocation the collector does not scan.
type record struct {
	inferred int64 // Unix nanoseconds; 0 for an unknown inference time
	shape    uint32
	port     uint32
}

// shape is a verdict without its inference time and port: the fields
// that repeat across addresses (a model version, a type, a risk, and an
// evidence list drawn from a small set, so that a window of a million
// verdicts has a few thousand shapes).
type shape struct {
	v    verdict.Verdict // Port and Inferred zero
	key  string          // v's shapeKey, for release to forget it
	refs int             // records that name this shape
}

// verdictTable is the codec of NewVerdicts' window: it interns shapes,
// counting the records that use each, so that it holds only the shapes
// of the verdicts in the window (a shape no record names is forgotten and
// its slot reused).
type verdictTable struct {
	shapes []shape
	free   []uint32          // unused slots of shapes
	index  map[string]uint32 // shapeKey -> slot
	key    []byte            // scratch for shapeKey
}

func (t *verdictTable) pack(v *verdict.Verdict) record {
	t.key = appendShapeKey(t.key[:0], v)
	id, ok := t.index[string(t.key)]
	if !ok {
		id = t.add(v, string(t.key))
	}
	t.shapes[id].refs++
	return record{inferred: v.InferredUnixNano(), shape: id, port: v.Port}
}

// add interns v's shape under key. Its strings are copied, so that the
// table keeps nothing of the message a verdict was decoded from.
func (t *verdictTable) add(v *verdict.Verdict, key string) uint32 {
	s := shape{key: key, v: verdict.Verdict{
		Proxy:        v.Proxy,
		Type:         strings.Clone(v.Type),
		Risk:         v.Risk,
		ModelVersion: strings.Clone(v.ModelVersion),
		Error:        strings.Clone(v.Error),
	}}
	if v.Evidence != nil {
		s.v.Evidence = make([]string, len(v.Evidence))
		for i, e := range v.Evidence {
			s.v.Evidence[i] = strings.Clone(e)
		}
	}
	var id uint32
	if n := len(t.free); n > 0 {
		id, t.free = t.free[n-1], t.free[:n-1]
		t.shapes[id] = s
	} else {
		id = uint32(len(t.shapes))
		t.shapes = append(t.shapes, s)
	}
	t.index[key] = id
	return id
}

func (t *verdictTable) unpack(r record) *verdict.Verdict {
	v := t.shapes[r.shape].v
	v.Port, v.Inferred = r.port, verdict.UnixNano(r.inferred)
	return &v
}

func (t *verdictTable) release(r record) {
	s := &t.shapes[r.shape]
	s.refs--
	if s.refs == 0 {
		delete(t.index, s.key)
		*s = shape{}
		t.free = append(t.free, r.shape)
	}
}

// appendShapeKey appends the bytes that tell v's shape from every other:
// its flags, its risk, then its strings, each after its length.
func appendShapeKey(b []byte, v *verdict.Verdict) []byte {
	var flags byte
	if v.Proxy {
		flags |= 1
	}
	// nil and empty evidence differ. Mutation testing: == is an
	// equivalent mutant (the flag would mark empty evidence rather than
	// nil, which tells them apart as well).
	if v.Evidence != nil {
		flags |= 2
	}
	b = append(b, flags)
	b = binary.AppendUvarint(b, uint64(v.Risk))
	b = appendString(b, v.Type)
	b = appendString(b, v.ModelVersion)
	b = appendString(b, v.Error)
	for _, e := range v.Evidence {
		b = appendString(b, e)
	}
	return b
}

func appendString(b []byte, s string) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}
