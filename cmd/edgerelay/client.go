package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/coder/websocket"

	"github.com/livepeer/edgerelay/agent"
)

// apiClient reaches a running agent's local API over its unix socket (the
// default) or TCP.
type apiClient struct {
	http  *http.Client
	base  string // "http://host:port" or "http://edgerelay" for the socket
	token string
}

func clientFlags(fs *flag.FlagSet) func() (*apiClient, error) {
	socket := fs.String("socket", "", "the agent's unix socket `PATH` (default: where 'edgerelay run' would put it)")
	addr := fs.String("addr", "", "the agent's TCP address `HOST:PORT`, instead of the socket")
	token := fs.String("token", "", "bearer `TOKEN` (default $EDGERELAY_INGEST_TOKEN)")
	return func() (*apiClient, error) {
		cfg, _ := agent.Load(nil, os.Getenv, io.Discard) // only for the default addresses
		c := &apiClient{token: *token}
		if c.token == "" {
			c.token = os.Getenv("EDGERELAY_INGEST_TOKEN")
		}
		sock := *socket
		if sock == "" && *addr == "" {
			if _, err := os.Stat(cfg.Socket); err == nil {
				sock = cfg.Socket
			} else if cfg.Listen != "" {
				*addr = cfg.Listen
			} else {
				return nil, fmt.Errorf("no socket at %s and TCP is off; use --socket or --addr", cfg.Socket)
			}
		}
		tr := &http.Transport{}
		if sock != "" {
			tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", sock)
			}
			c.base = "http://edgerelay"
		} else {
			c.base = "http://" + *addr
		}
		c.http = &http.Client{Transport: tr}
		return c, nil
	}
}

func (c *apiClient) header() http.Header {
	h := http.Header{}
	if c.token != "" {
		h.Set("Authorization", "Bearer "+c.token)
	}
	return h
}

// refused says what a 401 from the agent means: the token it was given, or
// not given.
func (c *apiClient) refused() string {
	if c.token == "" {
		return "the agent requires a token (HTTP 401): set EDGERELAY_INGEST_TOKEN or pass --token"
	}
	return "the agent refused the token (HTTP 401): set EDGERELAY_INGEST_TOKEN (or --token) to the agent's token"
}

// answerError describes an answer other than 200 (or 101 for tail).
func (c *apiClient) answerError(resp *http.Response) string {
	if resp.StatusCode == http.StatusUnauthorized {
		return c.refused()
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	msg := fmt.Sprintf("the agent answered HTTP %d", resp.StatusCode)
	if b := strings.TrimSpace(string(body)); b != "" {
		msg += ": " + b
	}
	return msg
}

const statsUsage = `usage: edgerelay stats [--socket PATH | --addr HOST:PORT] [--token TOKEN]

Prints the running agent's counters (GET /v1/stats) as JSON: what it
received, delivered, dropped and holds, per source and per sink.
`

const tailUsage = `usage: edgerelay tail [--type T[,T...]] [--socket PATH | --addr HOST:PORT] [--token TOKEN]

Prints the envelopes the running agent accepts, one JSON object a line, as
they arrive (GET /v1/tail), until interrupted.
`

func cmdStats(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("edgerelay stats", statsUsage)
	mk := clientFlags(fs)
	if code, done := parseFlags(fs, args, stdout, stderr); done {
		return code
	}
	if fs.NArg() > 0 {
		return usageError(fs, stderr, "unexpected arguments %q", fs.Args())
	}
	c, err := mk()
	if err != nil {
		fmt.Fprintln(stderr, "edgerelay stats:", err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/v1/stats", nil)
	req.Header = c.header()
	resp, err := c.http.Do(req)
	if err != nil {
		fmt.Fprintln(stderr, "edgerelay stats: is the agent running?", err)
		return 1
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintln(stderr, "edgerelay stats:", c.answerError(resp))
		return 1
	}
	var v any
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		fmt.Fprintln(stderr, "edgerelay stats: the agent's answer is not JSON:", err)
		return 1
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	enc.Encode(v)
	return 0
}

func cmdTail(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("edgerelay tail", tailUsage)
	mk := clientFlags(fs)
	types := fs.String("type", "", "only envelopes of these `TYPES` (comma-separated)")
	if code, done := parseFlags(fs, args, stdout, stderr); done {
		return code
	}
	if fs.NArg() > 0 {
		return usageError(fs, stderr, "unexpected arguments %q", fs.Args())
	}
	c, err := mk()
	if err != nil {
		fmt.Fprintln(stderr, "edgerelay tail:", err)
		return 1
	}
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer cancel()
	u := strings.Replace(c.base, "http://", "ws://", 1) + "/v1/tail"
	if *types != "" {
		u += "?type=" + url.QueryEscape(*types)
	}
	conn, resp, err := websocket.Dial(ctx, u, &websocket.DialOptions{HTTPClient: c.http, HTTPHeader: c.header()})
	if err != nil {
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
			fmt.Fprintln(stderr, "edgerelay tail:", c.answerError(resp))
		} else {
			fmt.Fprintln(stderr, "edgerelay tail: is the agent running?", err)
		}
		return 1
	}
	defer conn.CloseNow()
	conn.SetReadLimit(16 << 20)
	for {
		_, msg, err := conn.Read(ctx)
		if err != nil {
			if ctx.Err() != nil || websocket.CloseStatus(err) == websocket.StatusGoingAway || websocket.CloseStatus(err) == websocket.StatusNormalClosure {
				return 0
			}
			fmt.Fprintln(stderr, "edgerelay tail:", err)
			return 1
		}
		stdout.Write(msg)
		io.WriteString(stdout, "\n")
	}
}
