// Package agenttest runs the agents of HAProxy's agent check that tests put
// next to their backends: one scripted line per conn, on one port of several
// loopback IPs, since wslb finds a backend's agent on the backend's own IP.
package agenttest

import (
	"bufio"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/wslb/wslb/internal/tcptest"
)

// Silent is an answer that makes the agent read the request and then say
// nothing until the conn is closed: a hung agent.
const Silent = "\x00silent"

// Agent answers every conn on Port of each of its IPs with that IP's line.
type Agent struct {
	// Port is the agent port, the same on every IP.
	Port int
	// Sent receives each line a checker sent first (config agent.send),
	// without its newline; up to 64 are kept unread.
	Sent chan string
	send string // what the checker is configured to send; "": answer at once

	mu      sync.Mutex
	answers map[string]string // by IP
	servers map[string]*tcptest.Server
	asked   map[string]int
}

// Serve starts an agent on a free port of every IP in ips (loopback
// addresses such as 127.0.0.2), answering "" (close without a word) until
// Set says otherwise. When send is not "", the agent reads one line first
// and passes it on Sent. Everything closes when the test ends.
func Serve(t testing.TB, send string, ips ...string) *Agent {
	t.Helper()
	a := &Agent{Sent: make(chan string, 64), send: send, answers: map[string]string{}, servers: map[string]*tcptest.Server{}, asked: map[string]int{}}
	for i, ip := range ips {
		port := "0"
		if i > 0 {
			port = strconv.Itoa(a.Port)
		}
		s := tcptest.ServeOn(t, net.JoinHostPort(ip, port), func(c net.Conn) { a.serve(ip, c) })
		if i == 0 {
			_, p, _ := net.SplitHostPort(s.Addr())
			a.Port, _ = strconv.Atoi(p)
		}
		a.servers[ip] = s
	}
	return a
}

// Set makes the agent on ip answer line (a newline is added; Silent hangs).
func (a *Agent) Set(ip, line string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.answers[ip] = line
}

// Asked is how many conns the agent on ip has answered.
func (a *Agent) Asked(ip string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.asked[ip]
}

// Refuse closes the agent's listener on ip: dials to it are refused.
func (a *Agent) Refuse(ip string) { a.servers[ip].Close() }

func (a *Agent) serve(ip string, c net.Conn) {
	// A checker gives up after a second; this bounds a conn it left open.
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if a.send != "" {
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			return
		}
		select {
		case a.Sent <- line[:len(line)-1]:
		default:
		}
	}
	a.mu.Lock()
	answer := a.answers[ip]
	a.mu.Unlock()
	if answer == Silent {
		c.Read(make([]byte, 1)) // until the checker closes, or the deadline
	} else if answer != "" {
		c.Write([]byte(answer + "\n"))
	}
	a.mu.Lock()
	a.asked[ip]++
	a.mu.Unlock()
}
