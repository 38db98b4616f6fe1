package metrics

import (
	"html/template"
	"io"
	"time"
)

// Page is a status page: a title, warnings and sections of facts and
// tables. Every daemon fills one from its status structs; one template
// renders them all, server-side, with inline CSS and no external assets.
type Page struct {
	Title    string
	Subtitle string
	Refresh  int      // seconds between automatic reloads (0: none)
	Warnings []string // shown first, highlighted (e.g. the escrow warning)
	Errors   []string
	Sections []Section
	Now      time.Time
}

// Section is a heading with facts (name: value) and an optional table.
type Section struct {
	Heading string
	Facts   []Fact
	Table   *Table
	Empty   string // shown instead of an empty table
}

// Fact is one named value.
type Fact struct{ Name, Value string }

// Table is a table with a header row.
type Table struct {
	Head []string
	Rows [][]string
}

var pageTemplate = template.Must(template.New("page").Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
{{- if .Refresh}}
<meta http-equiv="refresh" content="{{.Refresh}}">
{{- end}}
<title>{{.Title}}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #1d1d1f; background: #fafafa; }
h1 { font-size: 1.4em; margin: 0 0 .2em 0; }
h2 { font-size: 1.1em; margin: 1.4em 0 .4em 0; border-bottom: 1px solid #ccc; }
p.sub { color: #555; margin: 0 0 1em 0; }
.warn { background: #fff3cd; border: 1px solid #e0b84c; padding: .5em .8em; margin: .5em 0; }
.err { background: #f8d7da; border: 1px solid #d9534f; padding: .5em .8em; margin: .5em 0; }
dl { display: grid; grid-template-columns: max-content auto; gap: .2em 1.2em; margin: 0; }
dt { color: #555; }
dd { margin: 0; font-variant-numeric: tabular-nums; }
table { border-collapse: collapse; margin-top: .5em; }
th, td { padding: .25em .8em; border-bottom: 1px solid #ddd; text-align: left; font-variant-numeric: tabular-nums; }
th { background: #eee; }
footer { margin-top: 2em; color: #777; font-size: .85em; }
</style>
</head>
<body>
<h1>{{.Title}}</h1>
{{- if .Subtitle}}
<p class="sub">{{.Subtitle}}</p>
{{- end}}
{{- range .Errors}}
<p class="err">{{.}}</p>
{{- end}}
{{- range .Warnings}}
<p class="warn">{{.}}</p>
{{- end}}
{{- range .Sections}}
<section>
<h2>{{.Heading}}</h2>
{{- if .Facts}}
<dl>
{{- range .Facts}}
<dt>{{.Name}}</dt><dd>{{.Value}}</dd>
{{- end}}
</dl>
{{- end}}
{{- if .Table}}{{if .Table.Rows}}
<table>
<thead><tr>{{range .Table.Head}}<th>{{.}}</th>{{end}}</tr></thead>
<tbody>
{{- range .Table.Rows}}
<tr>{{range .}}<td>{{.}}</td>{{end}}</tr>
{{- end}}
</tbody>
</table>
{{- else if .Empty}}
<p>{{.Empty}}</p>
{{- end}}{{end}}
</section>
{{- end}}
<footer>As of {{.Now.Format "2006-01-02 15:04:05 MST"}}. Metrics for Prometheus: <a href="/metrics">/metrics</a>.</footer>
</body>
</html>
`))

// Render writes the page as HTML.
func (p *Page) Render(w io.Writer) error {
	if p.Now.IsZero() {
		p.Now = time.Now().UTC()
	}
	return pageTemplate.Execute(w, p)
}

// F is a Fact.
func F(name, value string) Fact { return Fact{Name: name, Value: value} }
