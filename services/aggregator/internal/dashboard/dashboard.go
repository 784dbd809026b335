// Package dashboard serves the aggregator's web dashboard: one static page (HTML, CSS, and
// JavaScript that reads the read API of package api from the same origin) with its charting
// library, uPlot, installed from npm by scripts/dashboard-assets.sh into static/vendor and
// embedded in the binary at build time, so the page works offline and loads nothing from a CDN.
// The page sends the API's bearer token when the API requires one.
package dashboard

import (
	"embed"
	"io/fs"
	"net/http"
)

//go:embed static
var static embed.FS

// ContentSecurityPolicy is sent with every dashboard file: scripts, styles and data from the
// aggregator's own origin only, no inline script, no framing. Even a name that slipped past
// escaping could not run script.
const ContentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// Handler serves the dashboard's files with ContentSecurityPolicy; mount it with its prefix
// stripped (Register does).
func Handler() http.Handler {
	sub, _ := fs.Sub(static, "static") // the directory is embedded, so Sub cannot fail
	files := http.FileServerFS(sub)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", ContentSecurityPolicy)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		files.ServeHTTP(w, r)
	})
}

// Register serves the dashboard under /dashboard/ and redirects / there.
func Register(mux *http.ServeMux) {
	mux.Handle("GET /dashboard/", http.StripPrefix("/dashboard/", Handler()))
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/dashboard/", http.StatusFound)
	})
}

// Bundled reports whether the charting library was bundled (scripts/dashboard-assets.sh ran
// before the build); without it the page loads but cannot draw charts.
func Bundled() bool {
	_, err := fs.Stat(static, "static/vendor/uPlot.iife.min.js")
	return err == nil
}
