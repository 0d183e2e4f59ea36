// Package trickletest is a fake trickle server for tests: it behaves as
// spec/trickle.md says the go-livepeer server (v0.9) does, and records what
// it received.
//
// What it covers: explicit (CreateChannel) or automatic channel creation;
// segments streamed to readers while their POST is still writing; the last
// KeepSegments segments kept, 470 with Lp-Trickle-Latest for any other seq but
// the next write (which a GET waits for); seq -1 (the next write) and -2 (the
// current segment); GET <chan>/next; Lp-Trickle-Seq on answers;
// Lp-Trickle-Reset ending older open segments; DELETE of a seq (400 if not
// held) and of a channel (400 if unknown); Lp-Trickle-Closed for the readers
// and POSTs of a closed channel; 404 for unknown channels; the idle sweep;
// re-POST of a written seq answered 200 with its data dropped and the write
// position moved back; a segment whose POST failed left open until DELETEd;
// a segment ended before its first byte (DELETE, reset, slot taken, empty
// POST) served as 200 with no body; Connection: close after a POST that
// brought no byte and after a POST's 404;
// Legacy mode (no /next, no Lp-Trickle-Seq on POST, reset ignored); Restart
// (every channel lost, every connection cut, same address).
//
// Fault hooks: CutPost closes a POST's connection after N body bytes;
// CutReaders closes the connections of a channel's GETs; SetLatency slows
// every request of a method.
//
// Readers (Server.NewReader) behave as the real readers of an events
// channel do: go-livepeer's gateway, and livepeer-python-gateway's
// JSONLReader and ChannelReader, with their limits and their reasons to
// give up (spec/trickle.md, "Readers, as they really behave").
//
// What it does not do: the 100 Continue keep-alive of a preconnected POST
// (the edgerelay publisher does not preconnect), and the changefeed channel.
//
// Set InMemory to serve over net.Pipe connections (dial with
// Server.DialContext); such a server runs inside a testing/synctest bubble,
// where its idle sweep and the clients' timers use virtual time.
package trickletest
