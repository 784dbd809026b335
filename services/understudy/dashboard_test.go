package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// syncBuffer is a bytes.Buffer safe for a writer goroutine and a reading test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// chromium returns Debian's Chromium, or skips (fails under CI=true) without it.
func chromium(t *testing.T) string {
	t.Helper()
	for _, p := range []string{"/usr/bin/chromium", "/usr/bin/chromium-browser"} {
		if _, err := exec.LookPath(p); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("chromium not installed (scripts/bootstrap.sh --browser installs Debian's package)")
	}
	t.Skip("chromium not installed (scripts/bootstrap.sh --browser)")
	return ""
}

// TestDashboardInBrowser runs a short demo, then drives headless Chromium against its dashboard:
// every chart must have data, the verdict and the alert history must show, and a screenshot is
// saved (to $UNDERSTUDY_SCREENSHOT when set, else into the test's temp dir).
func TestDashboardInBrowser(t *testing.T) {
	exe := chromium(t)
	addr, err := freeAddr("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var stdout, stderr syncBuffer
	done := make(chan int, 1)
	// The whole demo runs in-process under the race detector, which serves about 30 requests/s
	// on 2 cores: beyond that every queue grows and joins time out, so the rate stays below it,
	// and the run is long enough for the drift alerts (1,000 samples, held 3 evaluations) to fire.
	args := []string{"--duration=100s", "--rate=25", "--service-time=1ms", "--label-delay=5s", "--window=2s", "--addr=" + addr, "--data-dir=" + t.TempDir()}
	// Names are data: hostile ones must show as text and run nothing (not for the screenshot).
	hostile := os.Getenv("UNDERSTUDY_SCREENSHOT") == ""
	const hostileExperiment = `fraud<img src=x onerror="window.__pwned=1">`
	const hostileCandidate = `candidate<svg onload="window.__pwned=2">`
	if hostile {
		args = append(args, "--experiment="+hostileExperiment, "--candidate-name="+hostileCandidate)
	}
	go func() { done <- runDemo(ctx, args, &stdout, &stderr) }()
	defer func() {
		cancel()
		if code := <-done; code != 0 {
			t.Errorf("demo exited %d\n%s", code, stderr.String())
		}
	}()
	// The demo serves the dashboard once its report is printed.
	deadline := time.Now().Add(4 * time.Minute)
	for !strings.Contains(stderr.String(), "Ctrl-C to stop") {
		if time.Now().After(deadline) {
			t.Fatalf("demo never reached its dashboard\nstdout:\n%s\nstderr:\n%s", stdout.String(), stderr.String())
		}
		select {
		case code := <-done:
			done <- code
			t.Fatalf("demo exited %d early\nstdout:\n%s\nstderr:\n%s", code, stdout.String(), stderr.String())
		case <-time.After(200 * time.Millisecond):
		}
	}
	resp, err := http.Get("http://" + addr + "/api/v1/experiments")
	if err != nil {
		t.Fatal(err)
	}
	var exps struct{ Experiments []json.RawMessage }
	_ = json.NewDecoder(resp.Body).Decode(&exps)
	_ = resp.Body.Close()
	if len(exps.Experiments) != 1 {
		t.Fatalf("experiments %v", exps)
	}

	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(exe), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-component-update", true), chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1400, 1800))
	actx, acancel := chromedp.NewExecAllocator(context.Background(), opts...)
	defer acancel()
	bctx, bcancel := chromedp.NewContext(actx)
	defer bcancel()
	bctx, tcancel := context.WithTimeout(bctx, 90*time.Second)
	defer tcancel()

	charts := []string{"latency", "drift", "errors", "agreement", "accuracy", "distribution"}
	points, xs := make([]string, len(charts)), make([]string, len(charts))
	if err := chromedp.Do(bctx,
		chromedp.Navigate("http://"+addr+"/dashboard/?range=15m"),
		chromedp.WaitVisible(chromedp.CSS(`body[data-loaded="true"]`)),
	); err != nil {
		t.Fatalf("browser: %v\ndemo stderr:\n%s", err, stderr.String())
	}
	for i, c := range charts {
		res, err := chromedp.Run(bctx, chromedp.AttributeValue(chromedp.CSS(`#chart-`+c), "data-points"))
		if err != nil {
			t.Fatalf("chart %s: %v", c, err)
		}
		points[i] = res.Value
		if res, err = chromedp.Run(bctx, chromedp.AttributeValue(chromedp.CSS(`#chart-`+c), "data-x")); err != nil {
			t.Fatalf("chart %s: %v", c, err)
		}
		xs[i] = res.Value
	}
	verdict, err := chromedp.Run(bctx, chromedp.Text(chromedp.CSS(`#verdict`)))
	if err != nil {
		t.Fatal(err)
	}
	cards, err := chromedp.Run(bctx, chromedp.Text(chromedp.CSS(`#cards`)))
	if err != nil {
		t.Fatal(err)
	}
	alerts, err := chromedp.Run(bctx, chromedp.Evaluate[int](`document.querySelectorAll("#alerts tbody tr td.firing").length`))
	if err != nil {
		t.Fatal(err)
	}
	canvases, err := chromedp.Run(bctx, chromedp.Evaluate[int](`document.querySelectorAll(".chart canvas").length`))
	if err != nil || canvases != len(charts) {
		t.Fatalf("%d charts drew a canvas, want %d: %v", canvases, len(charts), err)
	}
	if hostile {
		pwned, err := chromedp.Run(bctx, chromedp.Evaluate[string](`String(window.__pwned === undefined ? "" : window.__pwned)`))
		if err != nil || pwned != "" {
			t.Errorf("a hostile name ran script (window.__pwned=%q): %v", pwned, err)
		}
		shown, err := chromedp.Run(bctx, chromedp.Evaluate[string](`document.querySelector("#experiment").value + "|" + document.querySelector("#shadow").value`))
		if err != nil || shown != hostileExperiment+"|"+hostileCandidate {
			t.Errorf("selectors show %q, want the names as text: %v", shown, err)
		}
		injected, err := chromedp.Run(bctx, chromedp.Evaluate[int](`document.querySelectorAll("main img, main svg, header img, header svg").length`))
		if err != nil || injected != 0 {
			t.Errorf("%d injected elements in the page: %v", injected, err)
		}
	}
	// The segment ranking puts the demo's drifted segment (feature 0 >= 1) first.
	seg, err := chromedp.Run(bctx, chromedp.Evaluate[[]string](`[document.querySelector("#segments").dataset.first || "", document.querySelector("#segments").dataset.rows || "", document.querySelector("#segment-key").value]`))
	if err != nil || len(seg) != 3 {
		t.Fatalf("segment ranking: %v %v", seg, err)
	}
	if seg[0] != ">= 1" || seg[2] != "feature_0" {
		t.Errorf("segment ranking of %s: first %q of %s rows, want the drifted segment >= 1 first", seg[2], seg[0], seg[1])
	}
	// Drill-down: a click in the middle of the drift chart opens that window's examples, each
	// with the request and both answers' bodies side by side.
	at, err := chromedp.Run(bctx, chromedp.Evaluate[[]float64](`(() => { const r = document.querySelector("#chart-drift .u-over").getBoundingClientRect(); return [r.left + r.width / 2, r.top + r.height / 2]; })()`))
	if err != nil || len(at) != 2 {
		t.Fatalf("drift chart overlay: %v %v", at, err)
	}
	if err := chromedp.Do(bctx, chromedp.MouseClickXY(at[0], at[1]), chromedp.WaitVisible(chromedp.CSS(`#examples[data-count]:not([data-count=""])`))); err != nil {
		t.Fatalf("click on the drift chart: %v", err)
	}
	drill, err := chromedp.Run(bctx, chromedp.Evaluate[[]string](`[document.querySelector("#examples").dataset.count, String(document.querySelectorAll("#examples .example .sides pre").length), document.querySelector("#examples-body").textContent]`))
	if err != nil || len(drill) != 3 {
		t.Fatalf("examples after the click: %v %v", drill, err)
	}
	if n, _ := strconv.Atoi(drill[0]); n == 0 || drill[1] != strconv.Itoa(3*n) || !strings.Contains(drill[2], `"inputs"`) || !strings.Contains(drill[2], `"outputs"`) {
		t.Errorf("a click on a point shows %s examples with %s bodies; want some, each with request, champion and shadow bodies:\n%.600s", drill[0], drill[1], drill[2])
	}
	png, err := chromedp.Run(bctx, chromedp.FullScreenshot(100)) // quality 100: PNG
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range charts {
		if n, _ := strconv.Atoi(points[i]); n == 0 {
			t.Errorf("chart %s has no data (data-points=%q)", c, points[i])
		}
		// A time series of one point would be a dot on an empty axis: a 40 s run in 2 s windows
		// must give many.
		if n, _ := strconv.Atoi(xs[i]); n < 10 {
			t.Errorf("chart %s has %s x values, want at least 10", c, xs[i])
		}
	}
	if !strings.Contains(cards, "model versions") {
		t.Errorf("the cards name no model versions: %q", cards)
	}
	if !strings.Contains(verdict, "candidate") {
		t.Errorf("verdict %q", verdict)
	}
	if alerts == 0 {
		t.Errorf("alert history shows no firing transition")
	}
	out := os.Getenv("UNDERSTUDY_SCREENSHOT")
	if out == "" {
		out = filepath.Join(t.TempDir(), "dashboard.png")
	}
	if err := os.WriteFile(out, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot (%d KiB) in %s", len(png)/1024, out)
}
