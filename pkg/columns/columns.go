package columns

import (
	"fmt"
	"net/netip"

	"github.com/styx-inference/styx/pkg/verdict"
	styxv1 "github.com/styx-inference/styx/proto/styx/v1"
)

// AddrSize is the size of one address in an address blob.
const AddrSize = 16

// AppendAddr appends a as 16 bytes: IPv6, or IPv4 as IPv4-mapped IPv6.
func AppendAddr(dst []byte, a netip.Addr) []byte {
	b := a.As16()
	return append(dst, b[:]...)
}

// AddrCount returns how many addresses blob holds, and false when its
// length is not a multiple of AddrSize.
func AddrCount(blob []byte) (int, bool) {
	return len(blob) / AddrSize, len(blob)%AddrSize == 0
}

// Addr returns the i-th address of blob, IPv4-mapped addresses unmapped.
// blob must hold at least i+1 addresses.
func Addr(blob []byte, i int) netip.Addr {
	return netip.AddrFrom16([16]byte(blob[i*AddrSize : (i+1)*AddrSize])).Unmap()
}

// Addrs returns every address of blob, or an error when it is ragged.
func Addrs(blob []byte) ([]netip.Addr, error) {
	n, ok := AddrCount(blob)
	if !ok {
		return nil, fmt.Errorf("addresses of %d bytes, not a multiple of %d", len(blob), AddrSize)
	}
	out := make([]netip.Addr, n)
	for i := range out {
		out[i] = Addr(blob, i)
	}
	return out, nil
}

// Sighting is one sighting of a SightingBatch.
type Sighting struct {
	ID   uint64
	Addr netip.Addr
	Seen int64 // Unix nanoseconds
}

// AppendSighting appends one sighting to b's columns.
func AppendSighting(b *styxv1.SightingBatch, s Sighting) {
	b.Ids = append(b.Ids, s.ID)
	b.Addresses = AppendAddr(b.Addresses, s.Addr)
	b.SeenUnixNano = append(b.SeenUnixNano, s.Seen)
}

// SightingCount returns the number of sightings in b (its ids), and an
// error when the other columns do not line up with the ids.
func SightingCount(b *styxv1.SightingBatch) (int, error) {
	n := len(b.GetIds())
	if len(b.GetAddresses()) != n*AddrSize {
		return n, fmt.Errorf("malformed sighting batch: %d ids, %d bytes of addresses", n, len(b.GetAddresses()))
	}
	if len(b.GetSeenUnixNano()) != n {
		return n, fmt.Errorf("malformed sighting batch: %d ids, %d seen times", n, len(b.GetSeenUnixNano()))
	}
	return n, nil
}

// Sightings returns the sightings of b as rows.
func Sightings(b *styxv1.SightingBatch) ([]Sighting, error) {
	n, err := SightingCount(b)
	if err != nil {
		return nil, err
	}
	out := make([]Sighting, n)
	for i := range out {
		out[i] = Sighting{ID: b.Ids[i], Addr: Addr(b.Addresses, i), Seen: b.SeenUnixNano[i]}
	}
	return out, nil
}

// VerdictBuilder writes verdicts into VerdictColumns. The zero value is
// ready for use; Reset starts a new list.
type VerdictBuilder struct {
	c       *styxv1.VerdictColumns
	index   map[string]uint32
	nonzero [5]bool // proxy, type, risk, model, port, in column order
	last    string  // the string looked up last, and its index
	lastIdx uint32
}

// Reset starts an empty list with room for n verdicts.
func (b *VerdictBuilder) Reset(n int) {
	b.c = &styxv1.VerdictColumns{
		Proxy:            make([]bool, 0, n),
		Type:             make([]uint32, 0, n),
		Risk:             make([]uint32, 0, n),
		ModelVersion:     make([]uint32, 0, n),
		Port:             make([]uint32, 0, n),
		InferredUnixNano: make([]int64, 0, n),
	}
	if b.index == nil {
		b.index = make(map[string]uint32, 8)
	} else {
		clear(b.index)
	}
	b.nonzero = [5]bool{}
	b.last, b.lastIdx = "", 0
}

func (b *VerdictBuilder) str(s string) uint32 {
	if s == "" {
		return 0
	}
	if s == b.last && b.lastIdx != 0 {
		return b.lastIdx
	}
	k, ok := b.index[s]
	if !ok {
		b.c.Strings = append(b.c.Strings, s)
		k = uint32(len(b.c.Strings))
		b.index[s] = k
	}
	b.last, b.lastIdx = s, k
	return k
}

// Add appends v (its address is not written); nil is a zero verdict.
func (b *VerdictBuilder) Add(v *styxv1.Verdict) {
	b.add(v.GetProxy(), v.GetType(), v.GetRisk(), v.GetModelVersion(), v.GetPort(),
		v.GetInferredUnixNano(), v.GetEvidence(), v.GetError())
}

// AddVerdict appends v, which must not be nil: Add for the domain type, as
// a worker answers a batch.
func (b *VerdictBuilder) AddVerdict(v *verdict.Verdict) {
	b.add(v.Proxy, v.Type, v.Risk, v.ModelVersion, v.Port, v.InferredUnixNano(), v.Evidence, v.Error)
}

// add appends one verdict given field by field, so that Add and AddVerdict
// share it without converting one verdict type to the other (Add through
// VerdictOf, the inference time there and back, was a quarter slower).
func (b *VerdictBuilder) add(proxy bool, typ string, risk uint32, model string, port uint32,
	inferred int64, evidence []string, errText string) {
	if b.c == nil {
		b.Reset(0)
	}
	i := b.c.Count
	b.c.Count++
	typK, modelK := b.str(typ), b.str(model)
	b.c.Proxy = append(b.c.Proxy, proxy)
	b.c.Type = append(b.c.Type, typK)
	b.c.Risk = append(b.c.Risk, risk)
	b.c.ModelVersion = append(b.c.ModelVersion, modelK)
	b.c.Port = append(b.c.Port, port)
	b.c.InferredUnixNano = append(b.c.InferredUnixNano, inferred)
	b.nonzero[0] = b.nonzero[0] || proxy
	b.nonzero[1] = b.nonzero[1] || typK != 0
	b.nonzero[2] = b.nonzero[2] || risk != 0
	b.nonzero[3] = b.nonzero[3] || modelK != 0
	b.nonzero[4] = b.nonzero[4] || port != 0
	for _, e := range evidence {
		b.c.EvidenceOf = append(b.c.EvidenceOf, i)
		b.c.Evidence = append(b.c.Evidence, b.str(e))
	}
	if errText != "" {
		b.c.ErrorOf = append(b.c.ErrorOf, i)
		b.c.Error = append(b.c.Error, errText)
	}
}

// Columns returns the list, leaving out the columns whose every entry is
// zero; the builder must be Reset before it is used again.
func (b *VerdictBuilder) Columns() *styxv1.VerdictColumns {
	if b.c == nil {
		b.Reset(0)
	}
	c := b.c
	if !b.nonzero[0] {
		c.Proxy = nil
	}
	if !b.nonzero[1] {
		c.Type = nil
	}
	if !b.nonzero[2] {
		c.Risk = nil
	}
	if !b.nonzero[3] {
		c.ModelVersion = nil
	}
	if !b.nonzero[4] {
		c.Port = nil
	}
	allZero := true
	for _, t := range c.InferredUnixNano {
		if t != 0 {
			allZero = false
			break
		}
	}
	if allZero {
		c.InferredUnixNano = nil
	}
	b.c = nil
	return c
}

// EncodeVerdicts returns vs as VerdictColumns.
func EncodeVerdicts(vs []*styxv1.Verdict) *styxv1.VerdictColumns {
	var b VerdictBuilder
	b.Reset(len(vs))
	for _, v := range vs {
		b.Add(v)
	}
	return b.Columns()
}

// DecodeVerdicts checks that c holds n verdicts and returns them as rows
// in one slice (without addresses). A nil c is an empty list. n comes from
// the context (the batch's size), so a forged count allocates nothing.
func DecodeVerdicts(c *styxv1.VerdictColumns, n int) ([]styxv1.Verdict, error) {
	out, err := decodeRows(c, n, func(v *styxv1.Verdict) fields {
		return fields{&v.Proxy, &v.Type, &v.Risk, &v.ModelVersion, &v.Port, &v.Evidence, &v.Error}
	})
	if err != nil || len(c.GetInferredUnixNano()) == 0 {
		return out, err
	}
	for i := range out {
		out[i].InferredUnixNano = c.InferredUnixNano[i]
	}
	return out, nil
}

// DomainVerdicts is DecodeVerdicts returning the domain type, decoded
// straight from the columns (no wire rows in between).
func DomainVerdicts(c *styxv1.VerdictColumns, n int) ([]verdict.Verdict, error) {
	out, err := decodeRows(c, n, func(v *verdict.Verdict) fields {
		return fields{&v.Proxy, &v.Type, &v.Risk, &v.ModelVersion, &v.Port, &v.Evidence, &v.Error}
	})
	if err != nil || len(c.GetInferredUnixNano()) == 0 {
		return out, err
	}
	for i := range out {
		out[i].Inferred = verdict.UnixNano(c.InferredUnixNano[i])
	}
	return out, nil
}

// fields points at the fields of one verdict row, whatever the row's
// type, for decodeRows to write (the inference time, whose type differs,
// is the caller's).
type fields struct {
	proxy    *bool
	typ      *string
	risk     *uint32
	model    *string
	port     *uint32
	evidence *[]string
	err      *string
}

// decodeRows checks that c holds n verdicts and decodes every column but
// the inference time into rows of type T, through fieldsOf.
func decodeRows[T any](c *styxv1.VerdictColumns, n int, fieldsOf func(*T) fields) ([]T, error) {
	if int(c.GetCount()) != n {
		return nil, fmt.Errorf("%d verdicts, want %d", c.GetCount(), n)
	}
	if c == nil {
		return nil, nil
	}
	col := func(name string, l int) error {
		if l != 0 && l != n {
			return fmt.Errorf("verdict column %s has %d entries for %d verdicts", name, l, n)
		}
		return nil
	}
	for _, x := range []struct {
		name string
		l    int
	}{
		{"proxy", len(c.GetProxy())}, {"type", len(c.GetType())}, {"risk", len(c.GetRisk())},
		{"model_version", len(c.GetModelVersion())}, {"port", len(c.GetPort())},
		{"inferred_unix_nano", len(c.GetInferredUnixNano())},
	} {
		if err := col(x.name, x.l); err != nil {
			return nil, err
		}
	}
	strs := c.GetStrings()
	str := func(k uint32) (string, error) {
		if k == 0 {
			return "", nil
		}
		if int(k) > len(strs) {
			return "", fmt.Errorf("string index %d beyond %d strings", k, len(strs))
		}
		return strs[k-1], nil
	}
	if len(c.GetEvidenceOf()) != len(c.GetEvidence()) {
		return nil, fmt.Errorf("%d evidence owners for %d evidence entries", len(c.GetEvidenceOf()), len(c.GetEvidence()))
	}
	if len(c.GetErrorOf()) != len(c.GetError()) {
		return nil, fmt.Errorf("%d error owners for %d errors", len(c.GetErrorOf()), len(c.GetError()))
	}
	out := make([]T, n)
	var err error
	for i := range out {
		f := fieldsOf(&out[i])
		if len(c.Proxy) > 0 {
			*f.proxy = c.Proxy[i]
		}
		if len(c.Type) > 0 {
			if *f.typ, err = str(c.Type[i]); err != nil {
				return nil, err
			}
		}
		if len(c.Risk) > 0 {
			*f.risk = c.Risk[i]
		}
		if len(c.ModelVersion) > 0 {
			if *f.model, err = str(c.ModelVersion[i]); err != nil {
				return nil, err
			}
		}
		if len(c.Port) > 0 {
			*f.port = c.Port[i]
		}
	}
	if len(c.Evidence) > 0 {
		all := make([]string, len(c.Evidence))
		prev, start := uint32(0), 0
		for j, k := range c.Evidence {
			owner := c.EvidenceOf[j]
			if int(owner) >= n || owner < prev {
				return nil, fmt.Errorf("evidence %d names verdict %d (of %d, after %d)", j, owner, n, prev)
			}
			if all[j], err = str(k); err != nil {
				return nil, err
			}
			if owner != prev {
				if j > start {
					*fieldsOf(&out[prev]).evidence = all[start:j:j]
				}
				prev, start = owner, j
			}
		}
		*fieldsOf(&out[prev]).evidence = all[start:len(all):len(all)]
	}
	for j, owner := range c.GetErrorOf() {
		if int(owner) >= n || (j > 0 && owner <= c.ErrorOf[j-1]) {
			return nil, fmt.Errorf("error %d names verdict %d (of %d)", j, owner, n)
		}
		*fieldsOf(&out[owner]).err = c.Error[j]
	}
	return out, nil
}

// Verdicts is DecodeVerdicts returning pointers.
func Verdicts(c *styxv1.VerdictColumns, n int) ([]*styxv1.Verdict, error) {
	rows, err := DecodeVerdicts(c, n)
	if err != nil {
		return nil, err
	}
	out := make([]*styxv1.Verdict, len(rows))
	for i := range rows {
		out[i] = &rows[i]
	}
	return out, nil
}

// Outcome is one outcome of an OutcomeBatch.
type Outcome struct {
	SightingID uint64
	Kind       styxv1.OutcomeKind
	Verdict    *styxv1.Verdict // for OUTCOME_KIND_VERDICT
	Reason     string
}

// OutcomeBuilder writes outcomes into an OutcomeBatch. The zero value is
// ready for use.
type OutcomeBuilder struct {
	b        *styxv1.OutcomeBatch
	verdicts VerdictBuilder
	mixed    bool // some outcome is not a verdict
}

// Reset starts an empty batch with room for n outcomes.
func (o *OutcomeBuilder) Reset(n int) {
	o.b = &styxv1.OutcomeBatch{SightingIds: make([]uint64, 0, n), Kinds: make([]styxv1.OutcomeKind, 0, n)}
	o.verdicts.Reset(n)
	o.mixed = false
}

// Add appends one outcome; v is read only for OUTCOME_KIND_VERDICT.
func (o *OutcomeBuilder) Add(id uint64, kind styxv1.OutcomeKind, v *styxv1.Verdict, reason string) {
	if o.add(id, kind, reason) {
		o.verdicts.Add(v)
	} else {
		o.verdicts.Add(nil)
	}
}

// AddVerdict is Add for the domain type; v is read only for
// OUTCOME_KIND_VERDICT (nil there is a zero verdict).
func (o *OutcomeBuilder) AddVerdict(id uint64, kind styxv1.OutcomeKind, v *verdict.Verdict, reason string) {
	if o.add(id, kind, reason) && v != nil {
		o.verdicts.AddVerdict(v)
	} else {
		o.verdicts.Add(nil)
	}
}

// add appends an outcome's id, kind and reason; the caller appends its
// verdict, which is read only when add returns true (a verdict outcome).
func (o *OutcomeBuilder) add(id uint64, kind styxv1.OutcomeKind, reason string) bool {
	if o.b == nil {
		o.Reset(0)
	}
	i := uint32(len(o.b.SightingIds))
	o.b.SightingIds = append(o.b.SightingIds, id)
	o.b.Kinds = append(o.b.Kinds, kind)
	if reason != "" {
		o.b.ReasonOf = append(o.b.ReasonOf, i)
		o.b.Reason = append(o.b.Reason, reason)
	}
	if kind == styxv1.OutcomeKind_OUTCOME_KIND_VERDICT {
		return true
	}
	o.mixed = true
	return false
}

// Len is the number of outcomes added since Reset.
func (o *OutcomeBuilder) Len() int {
	if o.b == nil {
		return 0
	}
	return len(o.b.SightingIds)
}

// Batch returns the batch; the builder must be Reset before it is used
// again.
func (o *OutcomeBuilder) Batch() *styxv1.OutcomeBatch {
	if o.b == nil {
		o.Reset(0)
	}
	b := o.b
	if !o.mixed {
		b.Kinds = nil
	}
	b.Verdicts = o.verdicts.Columns()
	o.b = nil
	return b
}

// EncodeOutcomes returns outs as an OutcomeBatch.
func EncodeOutcomes(outs ...Outcome) *styxv1.OutcomeBatch {
	var b OutcomeBuilder
	b.Reset(len(outs))
	for _, o := range outs {
		b.Add(o.SightingID, o.Kind, o.Verdict, o.Reason)
	}
	return b.Batch()
}

// Outcomes checks b and returns its outcomes as rows. Outcomes that are
// not verdicts have a nil Verdict.
func Outcomes(b *styxv1.OutcomeBatch) ([]Outcome, error) {
	n := len(b.GetSightingIds())
	if k := len(b.GetKinds()); k != 0 && k != n {
		return nil, fmt.Errorf("malformed outcome batch: %d kinds for %d outcomes", k, n)
	}
	if len(b.GetReasonOf()) != len(b.GetReason()) {
		return nil, fmt.Errorf("malformed outcome batch: %d reason owners for %d reasons", len(b.GetReasonOf()), len(b.GetReason()))
	}
	vs, err := DecodeVerdicts(b.GetVerdicts(), n)
	if err != nil {
		return nil, fmt.Errorf("malformed outcome batch: %w", err)
	}
	out := make([]Outcome, n)
	for i, id := range b.GetSightingIds() {
		out[i] = Outcome{SightingID: id, Kind: styxv1.OutcomeKind_OUTCOME_KIND_VERDICT}
		if len(b.Kinds) > 0 {
			out[i].Kind = b.Kinds[i]
		}
		if out[i].Kind == styxv1.OutcomeKind_OUTCOME_KIND_VERDICT {
			out[i].Verdict = &vs[i]
		}
	}
	for j, owner := range b.GetReasonOf() {
		if int(owner) >= n {
			return nil, fmt.Errorf("malformed outcome batch: reason %d names outcome %d of %d", j, owner, n)
		}
		out[owner].Reason = b.Reason[j]
	}
	return out, nil
}
