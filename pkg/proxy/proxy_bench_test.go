package proxy

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
)

// BenchmarkProxyGET measures one proxied GET without a body, the hot path,
// through a real in-process worker.
func BenchmarkProxyGET(b *testing.B) {
	worker := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	}))
	defer worker.Close()
	px := New(newPool(worker.Listener.Addr().String()), Options{})
	defer px.CloseIdleConnections()
	req := httptest.NewRequest(http.MethodGet, "http://balancer/x", nil)

	b.ReportAllocs()
	for b.Loop() {
		rec := httptest.NewRecorder()
		px.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			b.Fatalf("got status %d; want %d", rec.Code, http.StatusOK)
		}
	}
}
