// Package testwait is the one polling helper the tests of every role use:
// For calls a condition every few milliseconds until it holds, and fails
// the test, naming what it waited for, once the timeout has passed.
//
// Poll for a positive event ("the leader has the sighting"), never sleep
// and then check that something did not happen: a sleep proves nothing when
// the machine is slow, and passes when the code it guards is gone.
//
//	testwait.For(t, testwait.Timeout, "the verdict stored", func() bool {
//		return st.Stats().Verdicts == 1
//	})
package testwait
