package spool

import "errors"

// ErrNotDurable is wrapped by the error Append returns when its records were
// accepted but are held in memory only, because the disk spool cannot be
// written (disk full, I/O error). The records are readable and will be moved
// to disk when writes succeed again; a crash before then loses them. The agent
// answers such a batch with "durable": false.
var ErrNotDurable = errors.New("spool: records held in memory only, not durable")

// ErrLocked is wrapped by Open, Inspect and Dump when another process (or
// another Spool in this process) holds the spool file's lock.
var ErrLocked = errors.New("spool: file locked by another edgerelay")

// ErrCorrupt is wrapped by Inspect and Dump when the file is damaged. Open
// never returns it: it moves a damaged file aside and starts empty.
var ErrCorrupt = errors.New("spool: file corrupt")
