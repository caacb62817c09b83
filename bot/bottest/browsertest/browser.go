// Package browsertest drives Debian's Chromium through the DevTools
// protocol (github.com/chromedp/chromedp) for tests of the local chat
// page: what a person sees and presses, in a real browser.
package browsertest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// Browser is a headless Chromium with one tab.
type Browser struct {
	t   testing.TB
	ctx context.Context
	// Shots, when set, is the folder Shot writes screenshots into.
	Shots string
}

// Path finds Chromium: $CHROMIUM, or Debian's package.
func Path() (string, error) {
	if p := os.Getenv("CHROMIUM"); p != "" {
		return p, nil
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("chromium is not installed: run `make test` (it installs it) or `apt-get install chromium`")
}

// Start runs Chromium headless, as the machine allows (no sandbox as
// root, no background networking: the network is closed) with a fresh
// profile, and stops it when the test ends.
func Start(t testing.TB) *Browser {
	t.Helper()
	path, err := Path()
	if err != nil {
		t.Fatal(err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("lang", "zh-CN"),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1000, 900),
	)
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(alloc)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	// The first action starts the browser and belongs to ctx itself: a
	// step's timeout context would close the browser when it ends.
	started := make(chan error, 1)
	go func() { started <- chromedp.Do(ctx, chromedp.Navigate("about:blank")) }()
	select {
	case err := <-started:
		if err != nil {
			t.Fatalf("start %s: %v", path, err)
		}
	case <-time.After(stepTimeout):
		t.Fatalf("start %s: no answer in %s", path, stepTimeout)
	}
	return &Browser{t: t, ctx: ctx}
}

// stepTimeout bounds every step: a page that never shows what is
// awaited fails the test instead of hanging it.
const stepTimeout = 20 * time.Second

// Do runs actions as one step, failing the test (with what the page
// showed) if they do not finish within the step timeout.
func (b *Browser) Do(what string, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, stepTimeout)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		b.t.Fatalf("%s: %v\npage text:\n%s", what, err, b.Text("body"))
	}
}

// Open loads url in the tab.
func (b *Browser) Open(url string) {
	b.t.Helper()
	b.Do("open "+url, chromedp.Navigate(url))
}

// Text is what the element shows (empty when it is not there).
func (b *Browser) Text(sel string) string {
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	s, _ := chromedp.Run(ctx, chromedp.Evaluate[string](fmt.Sprintf(`(document.querySelector(%q)||{}).innerText||""`, sel)))
	return s
}

// Eval evaluates a JavaScript expression to a string.
func (b *Browser) Eval(expr string) string {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, stepTimeout)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](expr))
	if err != nil {
		b.t.Fatalf("evaluate %s: %v", expr, err)
	}
	return s
}

// poll waits until a JavaScript expression is true.
func poll(expr string) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		_, err := chromedp.Poll[bool](expr, chromedp.WithPollingInterval(50*time.Millisecond))(ctx, t)
		return err
	})
}

// WaitText waits until the element's text contains want.
func (b *Browser) WaitText(sel, want string) {
	b.t.Helper()
	js := fmt.Sprintf(`((document.querySelector(%q)||{}).innerText||"").includes(%q)`, sel, want)
	b.Do(fmt.Sprintf("wait for %q in %s", want, sel), poll(js))
}

// WaitJS waits until a JavaScript expression is true.
func (b *Browser) WaitJS(what, expr string) {
	b.t.Helper()
	b.Do(what, poll(expr))
}

// ClickButton presses the first button inside sel whose label contains
// label.
func (b *Browser) ClickButton(sel, label string) {
	b.t.Helper()
	js := fmt.Sprintf(`(() => { const b = [...document.querySelectorAll(%q + " button")].find((b) => b.innerText.includes(%q) && !b.disabled); if (!b) return false; b.click(); return true; })()`, sel, label)
	b.Do(fmt.Sprintf("press %q in %s", label, sel), poll(js))
}

// Type types text into the element and, with enter, submits it.
func (b *Browser) Type(sel, text string, enter bool) {
	b.t.Helper()
	if enter {
		text += "\r"
	}
	b.Do("type into "+sel, chromedp.SendKeys(chromedp.CSS(sel), text, chromedp.NodeVisible))
}

// Shot writes a screenshot of the page (as a person sees it) as
// <Shots>/<name>.png, when Shots is set.
func (b *Browser) Shot(name string) {
	b.t.Helper()
	if b.Shots == "" {
		return
	}
	b.Do("let the page settle", chromedp.Sleep(150*time.Millisecond))
	ctx, cancel := context.WithTimeout(b.ctx, stepTimeout)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		b.t.Fatalf("screenshot %s: %v", name, err)
	}
	if err := os.MkdirAll(b.Shots, 0o755); err != nil {
		b.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(b.Shots, strings.ReplaceAll(name, " ", "-")+".png"), png, 0o644); err != nil {
		b.t.Fatal(err)
	}
}
