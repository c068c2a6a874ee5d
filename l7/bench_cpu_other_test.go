//go:build !unix

package l7

import "time"

func processCPU() (time.Duration, bool) { return 0, false }
