package natsauth

import (
	"fmt"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/styx-inference/styx/pkg/pki"
	"github.com/styx-inference/styx/pkg/verdictlog"
)

// Subjects the permissions name.
const (
	// LogSubjects covers every subject of the verdict log's streams
	// (verdictlog.SubjectClean, SubjectProxy, SubjectAttacks).
	LogSubjects = "styx.log.>"
	// JSAPI is the prefix of the JetStream API.
	JSAPI = "$JS.API."
	// Inboxes are the reply subjects of requests: JetStream API answers,
	// publish acknowledgements and the messages a pull consumer delivers.
	Inboxes = "_INBOX.>"
)

// Permissions returns the NATS permissions of a role: nil (everything) for
// admins, an error for a role that may not use the verdict log at all.
//
//	role              publish                                   subscribe
//	scheduler         styx.log.>, $JS.API.>                     _INBOX.>
//	node, worker      $JS.API.INFO,                             _INBOX.>
//	                  $JS.API.STREAM.INFO.<stream>,
//	                  $JS.API.CONSUMER.{CREATE,MSG.NEXT,INFO,DELETE}.<stream>.>
//	                  (for the log's streams); denied: styx.log.>, stream
//	                  create/update/delete/purge, message delete
//	admin             everything                                everything
//	trainer, etcd,    refused
//	nats
//
// Nodes and workers read the log through ordered consumers: an ordered
// consumer creates an ephemeral consumer, pulls from it, asks for its
// information, and deletes it and creates another after a gap or a
// reconnection. Subject permissions cannot tell a pull consumer from a
// push consumer, which delivers to any subject its creator names, also a
// subject of the other log stream. The publisher must therefore mark each
// message with the stream it belongs to (the Nats-Expected-Stream header,
// jetstream.WithExpectStream), so that the other stream refuses copies.
func Permissions(role pki.Role) (*server.Permissions, error) {
	switch role {
	case pki.Admin:
		return nil, nil
	case pki.Scheduler:
		return &server.Permissions{
			Publish:   &server.SubjectPermission{Allow: []string{LogSubjects, JSAPI + ">"}},
			Subscribe: &server.SubjectPermission{Allow: []string{Inboxes}},
		}, nil
	case pki.Node, pki.Worker:
		allow := []string{JSAPI + "INFO"}
		for _, s := range verdictlog.Streams {
			allow = append(allow,
				JSAPI+"STREAM.INFO."+s,
				JSAPI+"CONSUMER.CREATE."+s+".>",
				JSAPI+"CONSUMER.MSG.NEXT."+s+".>",
				JSAPI+"CONSUMER.INFO."+s+".>",
				JSAPI+"CONSUMER.DELETE."+s+".>",
			)
		}
		// The allow list already leaves these out; denying them as well
		// keeps them out should the allow list ever be widened.
		deny := []string{LogSubjects}
		for _, op := range []string{"STREAM.CREATE.>", "STREAM.UPDATE.>", "STREAM.DELETE.>", "STREAM.PURGE.>", "STREAM.MSG.DELETE.>"} {
			deny = append(deny, JSAPI+op)
		}
		return &server.Permissions{
			Publish:   &server.SubjectPermission{Allow: allow, Deny: deny},
			Subscribe: &server.SubjectPermission{Allow: []string{Inboxes}},
		}, nil
	default:
		return nil, fmt.Errorf("role %q may not use the verdict log", role)
	}
}
