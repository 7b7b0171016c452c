//go:build linux

package integration

// Multi-process tests: the built styx-scheduler and styx-worker binaries run
// as child processes against an etcd embedded in the test process, with a
// cluster node in process that counts the outcome of every sighting. The
// processes are killed (SIGKILL) or stopped (SIGSTOP) mid-run to check
// promises 1, 6 and 7 of the design brief: every sighting ends in exactly
// one outcome, a dead worker's lease and batches go within the TTL plus a
// small margin, a standby scheduler takes over, and a result for a batch
// already reassigned is never accepted.

import (
	"syscall"
	"testing"
	"time"

	"github.com/styx-inference/styx/pkg/keyspace"
	"github.com/styx-inference/styx/pkg/testwait"
)

// TestKillWorkerMidRun kills one of three workers with SIGKILL while it holds
// batches: its registration leaves etcd within the lease TTL plus 1 s, its
// batches go to the other workers, and every sighting gets exactly one
// outcome.
func TestKillWorkerMidRun(t *testing.T) {
	c := newProcCluster(t)
	s := c.startScheduler("sched-1")
	c.waitLeading(s)
	ids := []string{"kill-w1", "kill-w2", "kill-w3"}
	workers := make([]*procChild, len(ids))
	for i, id := range ids {
		// Two examining goroutines per worker (GOMAXPROCS 2) at 300 ms a
		// batch of 256: the run lasts a few seconds, batches are always out.
		workers[i] = c.startWorker(id, 300*time.Millisecond)
	}
	c.waitWorkersReady(s, ids...)
	n := c.startNode("node-1")

	addrs := procAddrs(0, 20_000)
	n.submit(t, addrs)

	victim, victimID := workers[0], ids[0]
	testwait.For(t, 60*time.Second, "outcomes arriving while "+victimID+" holds batches", func() bool {
		if n.tally.count() < 1000 {
			return false
		}
		w := c.workerStatus(s, victimID)
		return w != nil && w.InFlight > 0
	})
	before := n.tally.count()
	killedAt := victim.signal(t, syscall.SIGKILL)

	gone := c.waitKeyGone(keyspace.WorkerKey(victimID), killedAt, 30*time.Second)
	t.Logf("worker %s: registration left etcd %s after kill -9 (lease TTL %s, bound TTL+1s = %s); %d of %d outcomes had arrived",
		victimID, gone.Round(time.Millisecond), procTTL, procTTL+time.Second, before, len(addrs))
	if gone > procTTL+time.Second+procSlack {
		t.Errorf("worker key left etcd %s after kill -9, want within TTL + 1s (%s, plus %s polling slack)", gone, procTTL+time.Second, procSlack)
	}

	n.waitResolved(t, 60*time.Second, len(addrs))
	time.Sleep(300 * time.Millisecond) // let a late duplicate, if any, arrive
	n.checkExactlyOnce(t, addrs)

	reassigned := c.mustEvent(s, "reassigned")
	losses := c.mustEvent(s, "lease_losses")
	stale := c.mustEvent(s, "stale_results")
	// A worker killed with SIGKILL sends nothing late: stale results here
	// come only from a batch answered while its reassignment was under way.
	t.Logf("scheduler: %.0f batches reassigned, %.0f lease losses, %.0f stale results ignored", reassigned, losses, stale)
	if reassigned < 1 {
		t.Errorf("no batch was reassigned although %s was killed holding batches", victimID)
	}
	if losses < 1 {
		t.Errorf("the scheduler counted no lease loss after %s was killed", victimID)
	}
}

// TestKillLeaderSchedulerMidRun kills the leading scheduler with SIGKILL
// mid-run: the standby leads within the lease TTL plus 2 s, the node
// re-sends what was pending to it, and every sighting gets exactly one
// outcome.
func TestKillLeaderSchedulerMidRun(t *testing.T) {
	c := newProcCluster(t)
	a := c.startScheduler("sched-a")
	c.waitLeading(a)
	b := c.startScheduler("sched-b")
	ids := []string{"failover-w1", "failover-w2"}
	for _, id := range ids {
		c.startWorker(id, 200*time.Millisecond)
	}
	c.waitWorkersReady(a, ids...)
	n := c.startNode("node-1")

	addrs := procAddrs(0, 20_000)
	n.submit(t, addrs)
	testwait.For(t, 60*time.Second, "some outcomes", func() bool { return n.tally.count() >= 2000 })

	li, err := c.leader()
	if err != nil {
		t.Fatal(err)
	}
	var lead, standby *procScheduler
	switch li.ID {
	case a.id:
		lead, standby = a, b
	case b.id:
		lead, standby = b, a
	default:
		t.Fatalf("leader %q is neither %s nor %s", li.ID, a.id, b.id)
	}
	if st, err := c.status(standby); err != nil || st.Leader {
		t.Fatalf("standby %s before the kill: %v, %v", standby.id, st, err)
	}
	before := n.tally.count()
	killedAt := lead.signal(t, syscall.SIGKILL)

	// Poll the standby until it says it leads (its coordinator runs); note
	// when etcd names it, too.
	var elected time.Duration
	deadline := killedAt.Add(30 * time.Second)
	for {
		if elected == 0 {
			if li, err := c.leader(); err == nil && li.ID == standby.id {
				elected = time.Since(killedAt)
			}
		}
		st, err := c.status(standby)
		now := time.Now()
		if err == nil && st.Leader {
			took := now.Sub(killedAt)
			t.Logf("standby %s leads (term %d) %s after kill -9 of %s; etcd named it after %s (lease TTL %s, bound TTL+2s = %s); %d of %d outcomes had arrived",
				standby.id, st.Term, took.Round(time.Millisecond), lead.id, elected.Round(time.Millisecond), procTTL, procTTL+2*time.Second, before, len(addrs))
			if took > procTTL+2*time.Second+procSlack {
				t.Errorf("standby led %s after the kill, want within TTL + 2s (%s, plus %s polling slack)", took, procTTL+2*time.Second, procSlack)
			}
			break
		}
		if now.After(deadline) {
			t.Fatalf("standby %s not leading 30s after the leader was killed (last status %v, %v)", standby.id, st, err)
		}
		time.Sleep(procPoll)
	}

	n.waitResolved(t, 60*time.Second, len(addrs))
	time.Sleep(300 * time.Millisecond)
	n.checkExactlyOnce(t, addrs)
	if st := n.node.Stats(); st.Resent == 0 {
		t.Errorf("the node re-sent nothing to the new leader although %d of %d outcomes were missing at the kill", len(addrs)-before, len(addrs))
	}
}

// TestStoppedWorkerStaleResultsIgnored stops (SIGSTOP) a worker that holds
// batches for longer than its lease TTL: its registration leaves etcd, the
// leader requeues its batches to the other worker, which resolves every
// sighting. Then the worker is continued (SIGCONT): the batches it held are
// stale, and no result of theirs may be accepted — no sighting gets a second
// outcome. The worker must notice the lost lease, drop those batches and
// register again. What is under test here is the real worker's own guard:
// it drops what it held, so the leader usually sees no late result at all.
// The leader's refusal of late results that do arrive is proven with a
// worker that sends them (scheduler's TestWorkerLeaseExpiryRequeues) and
// rule by rule in the ledger's tests.
func TestStoppedWorkerStaleResultsIgnored(t *testing.T) {
	c := newProcCluster(t)
	s := c.startScheduler("sched-1")
	c.waitLeading(s)
	const victimID, healthyID = "stale-slow", "stale-ok"
	// The victim holds each batch for 2.5 s, long enough to be stopped
	// holding it; the healthy worker answers at once.
	victim := c.startWorker(victimID, 2500*time.Millisecond)
	c.startWorker(healthyID, 10*time.Millisecond)
	c.waitWorkersReady(s, victimID, healthyID)
	n := c.startNode("node-1")

	addrs := procAddrs(0, 5000)
	n.submit(t, addrs)
	var held uint32
	testwait.For(t, 30*time.Second, victimID+" holding batches", func() bool {
		if w := c.workerStatus(s, victimID); w != nil && w.InFlight > 0 {
			held = w.InFlight
			return true
		}
		return false
	})
	stoppedAt := victim.signal(t, syscall.SIGSTOP)

	gone := c.waitKeyGone(keyspace.WorkerKey(victimID), stoppedAt, 30*time.Second)
	t.Logf("worker %s (holding %d batches) stopped; its registration left etcd %s later (lease TTL %s)", victimID, held, gone.Round(time.Millisecond), procTTL)
	if gone > procTTL+time.Second+procSlack {
		t.Errorf("stopped worker's key left etcd %s after SIGSTOP, want within TTL + 1s (%s, plus %s polling slack)", gone, procTTL+time.Second, procSlack)
	}
	// Every sighting is resolved by the healthy worker while the victim is
	// still stopped: nothing is pending or in flight any more, so any
	// result the leader accepts from now on until new sightings come would
	// be one of the victim's stale batches.
	n.waitResolved(t, 60*time.Second, len(addrs))
	if r := c.mustEvent(s, "reassigned"); r < 1 {
		t.Fatalf("the leader reassigned no batch of the stopped worker (held %d)", held)
	}
	st, err := c.status(s)
	if err != nil {
		t.Fatal(err)
	}
	if p := st.GetPool(); p.GetPending() != 0 || p.GetInFlight() != 0 {
		t.Fatalf("pool not idle after every sighting was resolved: %v", p)
	}
	for _, w := range st.Workers {
		if w.WorkerId == victimID {
			t.Fatalf("the leader still lists the stopped worker: %v", w)
		}
	}
	resultsBefore := c.mustEvent(s, "results")
	if d := time.Since(stoppedAt); d < procTTL+time.Second {
		time.Sleep(procTTL + time.Second - d)
	}
	victim.signal(t, syscall.SIGCONT)

	// The victim finds its lease gone, ends its sessions (dropping what it
	// had not sent yet), registers again, and the leader opens a new
	// session with it.
	victim.waitLog(t, 30*time.Second, "registration lost, ending sessions")
	testwait.For(t, 30*time.Second, victimID+" registered again", func() bool { return c.keyExists(keyspace.WorkerKey(victimID)) })
	c.waitWorkersReady(s, victimID)
	time.Sleep(time.Second) // room for a stale result to reach the leader, were one sent

	resultsAfter := c.mustEvent(s, "results")
	stale := c.mustEvent(s, "stale_results")
	dropped := 0.0
	for _, e := range victim.logEntries("session closed") {
		if v, ok := e["dropped_batches"].(float64); ok {
			dropped += v
		}
	}
	t.Logf("after SIGCONT: worker %s dropped %.0f of its stale batches unsent; scheduler: %.0f stale results ignored, results accepted %.0f before and %.0f after SIGCONT",
		victimID, dropped, stale, resultsBefore, resultsAfter)
	if resultsAfter != resultsBefore {
		t.Errorf("the leader accepted %.0f results after the stopped worker was continued, with nothing in flight: stale results were accepted", resultsAfter-resultsBefore)
	}
	if w := c.workerStatus(s, victimID); w == nil || w.BatchesDone != 0 || w.AddressesDone != 0 {
		t.Errorf("leader's view of %s after SIGCONT, before new work: %v (want 0 batches done)", victimID, w)
	}
	n.checkExactlyOnce(t, addrs)

	// With the continued worker back in the fleet, more sightings are each
	// resolved exactly once.
	more := procAddrs(len(addrs), 2000)
	n.submit(t, more)
	n.waitResolved(t, 60*time.Second, len(addrs)+len(more))
	time.Sleep(300 * time.Millisecond)
	n.checkExactlyOnce(t, append(addrs, more...))
	if w := c.workerStatus(s, victimID); w == nil || w.State != "ready" {
		t.Errorf("%s after the second round: %v", victimID, w)
	}
}
