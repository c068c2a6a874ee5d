//go:build !unix

package l7

import "time"

func processCPU() (time.Duration, int64, bool) { return 0, 0, false }
