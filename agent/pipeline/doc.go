// Package pipeline is the way from the sources to the spool: a bounded
// drop-oldest Ring and the one spool writer behind it.
//
// Producers call Submit (and wait on the returned Waiter for durability) or
// Emit (the agent's own sources, which never wait). The writer takes groups
// from the ring, commits each in one spool transaction, hands it to the
// Committed hook (the session channels) and then releases the waiters, so a
// producer hears "stored" only after its events are in the spool and on
// their session's channel log.
//
// It owns one goroutine (the writer: Start to Close/Wait) and the Counters
// of everything dropped before the spool. It touches nothing but the store
// it is given; it knows neither the sinks nor the local API.
package pipeline
