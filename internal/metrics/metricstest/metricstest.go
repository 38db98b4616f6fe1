// Package metricstest helps tests of the metrics listener: scrape and lint
// /metrics, check the status page's HTML, and render it in a real headless
// Chromium.
package metricstest

import (
	"bytes"
	"errors"
	"fmt"
	"image"
	"image/png"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"golang.org/x/net/html"
	"golang.org/x/net/html/atom"
)

// Get fetches url and returns the body; a status other than 200 fails t.
func Get(t testing.TB, url string) []byte {
	t.Helper()
	c := &http.Client{Timeout: 30 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s\n%s", url, resp.Status, b)
	}
	return b
}

// Metrics is one scrape, by family name.
type Metrics map[string]*dto.MetricFamily

// Scrape fetches base+"metrics", parses it and lints it with promlint: a
// problem fails t.
func Scrape(t testing.TB, base string) (Metrics, []byte) {
	t.Helper()
	body := Get(t, strings.TrimSuffix(base, "/")+"/metrics")
	if problems, err := promlint.New(bytes.NewReader(body)).Lint(); err != nil {
		t.Fatalf("promlint: %v", err)
	} else {
		for _, p := range problems {
			if strings.HasPrefix(p.Metric, "fincrypt_") {
				t.Errorf("promlint: %s: %s", p.Metric, p.Text)
			}
		}
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("parsing /metrics: %v\n%s", err, body)
	}
	return Metrics(fams), body
}

// Value is the value of the family's metric with the given labels
// (name=value pairs; none: the first metric); a histogram gives its count.
// ok is false if there is no such metric.
func (m Metrics) Value(name string, labels ...string) (float64, bool) {
	f := m[name]
	if f == nil {
		return 0, false
	}
next:
	for _, mt := range f.Metric {
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, lp := range mt.Label {
				if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case mt.Counter != nil:
			return mt.Counter.GetValue(), true
		case mt.Gauge != nil:
			return mt.Gauge.GetValue(), true
		case mt.Histogram != nil:
			return float64(mt.Histogram.GetSampleCount()), true
		case mt.Untyped != nil:
			return mt.Untyped.GetValue(), true
		}
	}
	return 0, false
}

// Must is Value, failing t if the metric is missing.
func (m Metrics) Must(t testing.TB, name string, labels ...string) float64 {
	t.Helper()
	v, ok := m.Value(name, labels...)
	if !ok {
		t.Fatalf("metric %s%v missing", name, labels)
	}
	return v
}

// voidElements have no end tag in HTML5.
var voidElements = map[atom.Atom]bool{atom.Meta: true, atom.Link: true, atom.Br: true, atom.Hr: true, atom.Img: true,
	atom.Input: true, atom.Col: true, atom.Area: true, atom.Base: true, atom.Embed: true, atom.Source: true, atom.Track: true, atom.Wbr: true}

// ValidHTML checks a page strictly as the status page is written: an HTML5
// doctype first, <html lang>, <meta charset="utf-8"> and a non-empty
// <title> in <head>, every non-void element closed in order, no void
// element closed, no external resource (src, <link>, a stylesheet or
// script from elsewhere), no script at all.
func ValidHTML(page []byte) error {
	z := html.NewTokenizer(bytes.NewReader(page))
	var stack []string
	sawDoctype, sawLang, sawCharset, sawTitle, first := false, false, false, false, true
	inTitle := false
	for {
		tt := z.Next()
		switch tt {
		case html.ErrorToken:
			if z.Err() != io.EOF {
				return z.Err()
			}
			switch {
			case len(stack) > 0:
				return fmt.Errorf("unclosed elements at the end: %v", stack)
			case !sawDoctype:
				return fmt.Errorf("no doctype")
			case !sawLang:
				return fmt.Errorf("no <html lang>")
			case !sawCharset:
				return fmt.Errorf("no <meta charset=utf-8>")
			case !sawTitle:
				return fmt.Errorf("no title")
			}
			return nil
		case html.DoctypeToken:
			if !first || !strings.EqualFold(string(z.Text()), "html") {
				return fmt.Errorf("doctype %q not first or not html", z.Text())
			}
			sawDoctype = true
		case html.TextToken:
			if inTitle && strings.TrimSpace(string(z.Text())) != "" {
				sawTitle = true
			}
			if first && strings.TrimSpace(string(z.Text())) == "" {
				continue
			}
		case html.StartTagToken, html.SelfClosingTagToken:
			tok := z.Token()
			if first {
				return fmt.Errorf("<%s> before the doctype", tok.Data)
			}
			attrs := map[string]string{}
			for _, a := range tok.Attr {
				if _, dup := attrs[a.Key]; dup {
					return fmt.Errorf("<%s>: attribute %s twice", tok.Data, a.Key)
				}
				attrs[a.Key] = a.Val
				if a.Key == "src" {
					return fmt.Errorf("<%s src=%q>: no external resources", tok.Data, a.Val)
				}
			}
			switch tok.DataAtom {
			case atom.Html:
				sawLang = attrs["lang"] != ""
			case atom.Meta:
				if strings.EqualFold(attrs["charset"], "utf-8") {
					sawCharset = true
				}
			case atom.Link, atom.Script, atom.Iframe, atom.Object:
				return fmt.Errorf("<%s>: no scripts or external resources", tok.Data)
			case atom.A:
				if h := attrs["href"]; strings.Contains(h, "://") || strings.HasPrefix(h, "//") {
					return fmt.Errorf("<a href=%q>: link to another site", h)
				}
			}
			if voidElements[tok.DataAtom] {
				continue
			}
			if tt == html.SelfClosingTagToken {
				return fmt.Errorf("<%s/>: not a void element", tok.Data)
			}
			stack = append(stack, tok.Data)
			inTitle = tok.DataAtom == atom.Title
		case html.EndTagToken:
			tok := z.Token()
			if voidElements[tok.DataAtom] {
				return fmt.Errorf("</%s>: a void element has no end tag", tok.Data)
			}
			if len(stack) == 0 || stack[len(stack)-1] != tok.Data {
				return fmt.Errorf("</%s> does not close %v", tok.Data, stack)
			}
			stack = stack[:len(stack)-1]
			inTitle = false
		}
		first = false
	}
}

// Chromium finds the headless browser, or skips t saying why.
func Chromium(t testing.TB) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Skip("chromium is not installed (scripts/deps.sh chromium installs Debian's package as root)")
	return ""
}

// Render loads url in a headless Chromium and returns the DOM after
// rendering and a screenshot of width x height pixels.
func Render(t testing.TB, url string, width, height int) (dom string, shot image.Image) {
	t.Helper()
	bin := Chromium(t)
	dir := t.TempDir()
	args := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
		fmt.Sprintf("--window-size=%d,%d", width, height)}
	runs := 0
	// once runs Chromium once, with a profile of its own; crashed says it
	// died of a signal it did not get from the timer.
	once := func(extra []string) (out []byte, crashed bool) {
		runs++
		profile := "--user-data-dir=" + filepath.Join(dir, fmt.Sprintf("profile%d", runs))
		cmd := exec.Command(bin, append(append(append([]string{profile}, args...), extra...), url)...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		cmd.Env = append(os.Environ(), "HOME="+dir)
		done := make(chan struct{})
		timer := time.AfterFunc(90*time.Second, func() {
			if cmd.Process != nil {
				cmd.Process.Kill()
			}
			close(done)
		})
		out, err := cmd.Output()
		if !timer.Stop() {
			<-done
			t.Fatalf("chromium %v: no result in 90s\n%s", extra, stderr.String())
		}
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			if ws, ok := exit.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				t.Logf("chromium %v crashed (%v), running it again\n%s", extra, err, stderr.String())
				return nil, true
			}
		}
		if err != nil {
			t.Fatalf("chromium %v: %v\n%s", extra, err, stderr.String())
		}
		return out, false
	}
	// A browser that crashes (a clean-clone CI run saw a segmentation
	// fault under load) is run again, up to three times: what is tested is
	// the page it renders.
	run := func(extra ...string) []byte {
		for range 2 {
			if out, crashed := once(extra); !crashed {
				return out
			}
		}
		out, crashed := once(extra)
		if crashed {
			t.Fatalf("chromium %v crashed three times", extra)
		}
		return out
	}
	dom = string(run("--dump-dom"))
	png1 := filepath.Join(dir, "shot.png")
	run("--screenshot=" + png1)
	f, err := os.Open(png1)
	if err != nil {
		t.Fatalf("chromium wrote no screenshot: %v", err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	return dom, img
}

// Colours counts the distinct colours of img (up to limit).
func Colours(img image.Image, limit int) int {
	seen := map[[4]uint32]bool{}
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y += 2 {
		for x := b.Min.X; x < b.Max.X; x += 2 {
			r, g, bl, a := img.At(x, y).RGBA()
			seen[[4]uint32{r, g, bl, a}] = true
			if len(seen) >= limit {
				return len(seen)
			}
		}
	}
	return len(seen)
}
