package stats

import (
	_ "embed"
	"net/http"
	"strconv"
	"strings"
)

// dashboardHTML is the live page: one file, its CSS and script inline, so
// the binary serves it with nothing to fetch from another site. It polls
// the same path with ?format=json once a second.
//
//go:embed dashboard.html
var dashboardHTML []byte

// dashboardCSP lets the page run its own inline script and style, and
// fetch only from the balancer it came from.
const dashboardCSP = "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:; connect-src 'self'"

// wantsHTML reports whether r gets the dashboard rather than JSON.
// ?format=html and ?format=json decide outright; any other format is
// ignored. Otherwise it is HTML only when Accept names text/html and
// does not prefer application/json, by quality, then by order. Wildcards
// count for neither, so curl's */* and a missing Accept get JSON.
func wantsHTML(r *http.Request) bool {
	switch r.URL.Query().Get("format") {
	case "html":
		return true
	case "json":
		return false
	}
	return prefersHTML(r.Header.Values("Accept"))
}

// prefersHTML applies wantsHTML's rule to the values of Accept headers.
func prefersHTML(accept []string) bool {
	htmlQ, htmlAt := -1.0, 0
	jsonQ, jsonAt := -1.0, 0
	at := 0
	for _, value := range accept {
		for part := range strings.SplitSeq(value, ",") {
			typ, q, ok := mediaRange(part)
			if !ok {
				continue
			}
			at++
			switch typ {
			case "text/html":
				if q > htmlQ {
					htmlQ, htmlAt = q, at
				}
			case "application/json":
				if q > jsonQ {
					jsonQ, jsonAt = q, at
				}
			}
		}
	}
	if htmlQ <= 0 {
		return false
	}
	return htmlQ > jsonQ || htmlQ == jsonQ && htmlAt < jsonAt
}

// mediaRange parses one element of Accept, "type/subtype;q=0.8", into its
// lower-case type and its quality (1 when absent). ok is false for an
// empty element or one with a broken quality.
func mediaRange(s string) (typ string, q float64, ok bool) {
	typ, params, _ := strings.Cut(s, ";")
	typ = strings.ToLower(strings.TrimSpace(typ))
	if typ == "" {
		return "", 0, false
	}
	q = 1
	for param := range strings.SplitSeq(params, ";") {
		name, value, _ := strings.Cut(param, "=")
		if !strings.EqualFold(strings.TrimSpace(name), "q") {
			continue
		}
		f, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err != nil || f < 0 || f > 1 {
			return "", 0, false
		}
		q = f
	}
	return typ, q, true
}

// serveDashboard writes the page. The caller has checked the method and
// set Cache-Control and Vary.
func serveDashboard(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", dashboardCSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Length", strconv.Itoa(len(dashboardHTML)))
	w.Write(dashboardHTML)
}
