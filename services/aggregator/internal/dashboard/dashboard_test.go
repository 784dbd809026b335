package dashboard

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestServesPageAndBundledLibrary(t *testing.T) {
	mux := http.NewServeMux()
	Register(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	for path, want := range map[string]string{
		"/dashboard/":                         "<title>Understudy",
		"/dashboard/app.js":                   "/api/v1/experiments",
		"/dashboard/vendor/uPlot.iife.min.js": "uPlot",
	} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(b), want) {
			t.Fatalf("%s: %d, body without %q (run scripts/dashboard-assets.sh before building)", path, resp.StatusCode, want)
		}
		if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || strings.Contains(csp, "unsafe-inline") {
			t.Errorf("%s: Content-Security-Policy %q", path, csp)
		}
		if path == "/dashboard/app.js" && strings.Contains(string(b), "innerHTML") {
			t.Errorf("app.js uses innerHTML")
		}
	}
	if !Bundled() {
		t.Fatal("uPlot not bundled")
	}
	resp, err := http.Get(srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.Request.URL.Path != "/dashboard/" {
		t.Fatalf("/ went to %s", resp.Request.URL.Path)
	}
}
