//go:build !unix || dragonfly

package pool

// alive reports whether an idle backend conn can carry another request. Without
// a portable non-blocking peek only bytes already read are detected (quiet);
// the caller's retry after a failed write covers the rest.
func alive(e idleConn) bool {
	return quiet(e)
}
