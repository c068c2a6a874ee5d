//go:build race

package main

// raceEnabled: this test binary runs under the race detector, whose own
// memory (shadow and per-goroutine state) grows with the load and is never
// given back, so RSS says nothing about wslb's.
const raceEnabled = true
