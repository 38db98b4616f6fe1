package metrics_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fincrypt/fincrypt/internal/metrics"
	"github.com/fincrypt/fincrypt/internal/metrics/metricstest"
)

func TestCheckAddr(t *testing.T) {
	for _, c := range []struct {
		addr   string
		public bool
		ok     bool
	}{
		{"127.0.0.1:9100", false, true},
		{"127.0.0.2:0", false, true},
		{"[::1]:9100", false, true},
		{"localhost:9100", false, true},
		{"0.0.0.0:9100", false, false},
		{":9100", false, false},
		{"192.168.1.5:9100", false, false},
		{"[::]:9100", false, false},
		{"example.com:9100", false, false},
		{"0.0.0.0:9100", true, true},
		{"127.0.0.1", false, false}, // no port
		{"", false, false},
	} {
		err := metrics.CheckAddr(c.addr, c.public)
		if (err == nil) != c.ok {
			t.Errorf("CheckAddr(%q, public=%v) = %v, want ok=%v", c.addr, c.public, err, c.ok)
		}
		if err != nil && !c.public && strings.Contains(c.addr, ":9100") && !errors.Is(err, metrics.ErrNotLoopback) {
			t.Errorf("CheckAddr(%q): %v does not say it is not loopback", c.addr, err)
		}
	}
	if _, err := metrics.Listen(metrics.Options{Addr: "0.0.0.0:0", Registry: prometheus.NewRegistry()}); !errors.Is(err, metrics.ErrNotLoopback) {
		t.Fatalf("Listen on 0.0.0.0 without Public: %v", err)
	}
}

func samplePage() *metrics.Page {
	return &metrics.Page{Title: "Fincrypt test <page>", Subtitle: "sub & title", Refresh: 5,
		Warnings: []string{"not protected: escrow ran out <b>now</b>"},
		Sections: []metrics.Section{
			{Heading: "Facts", Facts: []metrics.Fact{metrics.F("Pieces", "42"), metrics.F("Evil", `<script>alert(1)</script>"'`)}},
			{Heading: "Table", Table: &metrics.Table{Head: []string{"A", "B"}, Rows: [][]string{{"1", "2"}, {"3", "<i>4</i>"}}}},
			{Heading: "Empty", Table: &metrics.Table{Head: []string{"A"}}, Empty: "Nothing yet."},
		}}
}

// TestServer: /metrics serves the registry (lint-clean), / the page as
// valid HTML with every value escaped, anything else 404.
func TestServer(t *testing.T) {
	reg := metrics.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "fincrypt_test_events_total", Help: "Test events."})
	reg.MustRegister(c)
	c.Add(3)
	srv, stop, err := metrics.Start(metrics.Options{Addr: "127.0.0.1:0", Registry: reg,
		Page: func(context.Context) (*metrics.Page, error) { return samplePage(), nil }})
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	m, _ := metricstest.Scrape(t, srv.URL())
	if v := m.Must(t, "fincrypt_test_events_total"); v != 3 {
		t.Fatalf("fincrypt_test_events_total = %v, want 3", v)
	}
	if _, ok := m.Value("go_goroutines"); !ok {
		t.Error("no Go runtime metrics")
	}
	page := metricstest.Get(t, srv.URL())
	if err := metricstest.ValidHTML(page); err != nil {
		t.Fatalf("page: %v\n%s", err, page)
	}
	for _, bad := range []string{"<script>", "<b>now", "<i>4"} {
		if strings.Contains(string(page), bad) {
			t.Errorf("page contains unescaped %q", bad)
		}
	}
	for _, want := range []string{"escrow ran out", "Pieces", "42", "Nothing yet.", `http-equiv="refresh" content="5"`} {
		if !strings.Contains(string(page), want) {
			t.Errorf("page lacks %q", want)
		}
	}
	resp, err := httpGet(srv.URL() + "other")
	if err != nil || resp != 404 {
		t.Errorf("GET /other: %v %v, want 404", resp, err)
	}
}

// TestValidHTMLCatches: the checker fails on what it is meant to catch.
func TestValidHTMLCatches(t *testing.T) {
	good := `<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>x</title></head><body><p>a</p></body></html>`
	if err := metricstest.ValidHTML([]byte(good)); err != nil {
		t.Fatalf("good page: %v", err)
	}
	for name, bad := range map[string]string{
		"no doctype":  strings.Replace(good, "<!DOCTYPE html>", "", 1),
		"no lang":     strings.Replace(good, ` lang="en"`, "", 1),
		"no charset":  strings.Replace(good, `<meta charset="utf-8">`, "", 1),
		"no title":    strings.Replace(good, "<title>x</title>", "", 1),
		"unbalanced":  strings.Replace(good, "</p>", "", 1),
		"misnested":   strings.Replace(good, "<p>a</p>", "<p><b>a</p></b>", 1),
		"script":      strings.Replace(good, "<p>a</p>", "<script>x</script>", 1),
		"external":    strings.Replace(good, "<p>a</p>", `<img src="http://x/y.png">`, 1),
		"stylesheet":  strings.Replace(good, "<title>x</title>", `<title>x</title><link rel="stylesheet" href="x.css">`, 1),
		"void closed": strings.Replace(good, "<p>a</p>", "<br></br>", 1),
	} {
		if err := metricstest.ValidHTML([]byte(bad)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// TestPageInChromium renders the page in a real headless Chromium: the
// text is there after rendering, and the screenshot has the asked size and
// is not blank.
func TestPageInChromium(t *testing.T) {
	metricstest.Chromium(t)
	srv, stop, err := metrics.Start(metrics.Options{Addr: "127.0.0.1:0", Registry: metrics.NewRegistry(),
		Page: func(context.Context) (*metrics.Page, error) { return samplePage(), nil }})
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	dom, shot := metricstest.Render(t, srv.URL(), 800, 600)
	for _, want := range []string{"Fincrypt test &lt;page&gt;", "escrow ran out", "Nothing yet.", "Pieces"} {
		if !strings.Contains(dom, want) {
			t.Errorf("rendered DOM lacks %q:\n%s", want, dom)
		}
	}
	if b := shot.Bounds(); b.Dx() != 800 || b.Dy() != 600 {
		t.Errorf("screenshot is %v, want 800x600", b)
	}
	if n := metricstest.Colours(shot, 16); n < 4 {
		t.Errorf("screenshot has %d colours: blank", n)
	}
}
