package kafkasink

import (
	"context"
	"fmt"
	"net"
	"sync"
)

// pipeNet is an in-memory network of listeners whose connections are
// net.Pipe pairs. A kfake cluster listening on it and a client dialing
// through it block durably, so both run inside a synctest bubble, where the
// sink's deadlines pass in virtual time.
type pipeNet struct {
	mu        sync.Mutex
	listeners map[string]*pipeListener
	next      int
}

func newPipeNet() *pipeNet { return &pipeNet{listeners: make(map[string]*pipeListener)} }

// listen is a kfake.ListenFn: each call gets the next 127.0.0.1 port.
func (n *pipeNet) listen(_, _ string) (net.Listener, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.next++
	addr := fmt.Sprintf("127.0.0.1:%d", 40000+n.next)
	l := &pipeListener{addr: pipeAddr(addr), conns: make(chan net.Conn), closed: make(chan struct{})}
	n.listeners[addr] = l
	return l, nil
}

// dial is a kgo.Dialer.
func (n *pipeNet) dial(ctx context.Context, _, addr string) (net.Conn, error) {
	n.mu.Lock()
	l := n.listeners[addr]
	n.mu.Unlock()
	if l == nil {
		return nil, fmt.Errorf("dial %s: connection refused", addr)
	}
	client, server := net.Pipe()
	select {
	case l.conns <- server:
		return client, nil
	case <-l.closed:
		return nil, fmt.Errorf("dial %s: connection refused", addr)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

type pipeListener struct {
	addr   pipeAddr
	conns  chan net.Conn
	once   sync.Once
	closed chan struct{}
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *pipeListener) Addr() net.Addr { return l.addr }

type pipeAddr string

func (a pipeAddr) Network() string { return "pipe" }
func (a pipeAddr) String() string  { return string(a) }
