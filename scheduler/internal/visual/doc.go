// Package visual is the scheduler's live visualiser: a page (embedded
// HTML, CSS and JavaScript, no build step) and a Server-Sent Events stream
// that feeds it.
//
// One Hub per scheduler builds a Model of what the scheduler sees: its
// role (leading, or following and who leads), the pool's figures and rates,
// and every worker with its credits, batches in flight, throughput and
// model. The Hub blocks on a go-memdb watch set (the workers and
// submitters tables) and on the scheduler's role-change channel, then takes
// a snapshot; it builds at most one Model per MinInterval (4 a second by
// default) and only while someone watches. Each stream keeps the Model it
// last sent and writes only the difference to the newest one (a full frame
// first, and whenever the role or term changes), so a slow client skips
// intermediate Models instead of queueing them.
package visual
