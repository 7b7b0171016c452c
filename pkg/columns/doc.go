// Package columns reads and writes the columnar wire forms of STYX's batch
// messages (styx.v1 SightingBatch, Batch, Result and OutcomeBatch): packed
// ids, one blob of 16-byte addresses, and verdicts as VerdictColumns, whose
// repeated strings are stored once. Nodes, the scheduler and workers all
// use it, so that every side checks the columns the same way. It is also
// the edge between the wire verdict (styx.v1 Verdict) and the domain one
// (pkg/verdict): VerdictOf and VerdictProto convert a row.
//
//	var b columns.VerdictBuilder
//	b.Reset(len(addrs))
//	for i := range verdicts { b.AddVerdict(&verdicts[i]) } // or b.Add(pv)
//	res.Verdicts = b.Columns()
//	...
//	vs, err := columns.Verdicts(res.GetVerdicts(), len(addrs)) // rows again, checked
package columns
