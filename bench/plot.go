package main

import (
	"fmt"
	"os"
	"slices"
	"strconv"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// plotScenarioA draws scenario a on simple: one bar per target that has
// a figure. It reports false, writing nothing, when none has.
func plotScenarioA(res *results, path string) (bool, error) {
	var names []string
	var vals plotter.Values
	for _, t := range aTargets {
		s := res.get(key{Scenario: "a", Target: t, Endpoint: "simple"})
		if s.OK {
			names = append(names, t)
			vals = append(vals, s.RPS)
		}
	}
	if len(vals) == 0 {
		return false, nil
	}
	p := plot.New()
	p.Title.Text = "/operacion-simple, 64 connections, 2 workers (median req/s)"
	p.Y.Label.Text = "requests per second"
	p.Y.Min = 0
	p.Y.Max = slices.Max(vals) * 1.15 // room for the value labels
	p.Y.Tick.Marker = plainTicks
	bars, err := plotter.NewBarChart(vals, vg.Points(40))
	if err != nil {
		return false, err
	}
	bars.Color = plotutil.Color(1)
	bars.LineStyle.Width = 0
	grid := plotter.NewGrid()
	grid.Vertical.Width = 0
	var at plotter.XYLabels
	for i, v := range vals {
		at.XYs = append(at.XYs, plotter.XY{X: float64(i), Y: v})
		at.Labels = append(at.Labels, fmtRPS(v))
	}
	labels, err := plotter.NewLabels(at)
	if err != nil {
		return false, err
	}
	for i := range labels.TextStyle {
		labels.TextStyle[i].XAlign = draw.XCenter
	}
	labels.Offset = vg.Point{Y: vg.Points(4)}
	p.Add(grid, bars, labels)
	p.NominalX(names...)
	if err := p.Save(vg.Length(len(names)*90+120), 4*vg.Inch, path); err != nil {
		return false, err
	}
	return true, nil
}

// plotSweep draws a scenario-e sweep as two panels side by side:
// requests per second and p99 against the swept parameter, one line per
// engine that has figures. logX spreads 1..512 connections evenly.
func plotSweep(res *results, scen, xLabel string, logX bool, path string) (bool, error) {
	type line struct {
		engine   string
		rps, p99 plotter.XYs
	}
	var lines []line
	var xs []float64
	for _, e := range engines {
		l := line{engine: e}
		for _, s := range res.Series {
			if s.Scenario != scen || s.Target != e {
				continue
			}
			sm := s.summary()
			if !sm.OK {
				continue
			}
			x := float64(s.Param)
			l.rps = append(l.rps, plotter.XY{X: x, Y: sm.RPS})
			l.p99 = append(l.p99, plotter.XY{X: x, Y: sm.P99.Seconds() * 1000})
			if !slices.Contains(xs, x) {
				xs = append(xs, x)
			}
		}
		if len(l.rps) > 0 {
			slices.SortFunc(l.rps, func(a, b plotter.XY) int { return cmpFloat(a.X, b.X) })
			slices.SortFunc(l.p99, func(a, b plotter.XY) int { return cmpFloat(a.X, b.X) })
			lines = append(lines, l)
		}
	}
	if len(lines) == 0 {
		return false, nil
	}
	slices.Sort(xs)
	var ticks plot.ConstantTicks
	for _, x := range xs {
		ticks = append(ticks, plot.Tick{Value: x, Label: strconv.FormatFloat(x, 'f', -1, 64)})
	}
	panel := func(title, yLabel string, pick func(line) plotter.XYs) (*plot.Plot, error) {
		p := plot.New()
		p.Title.Text = title
		p.X.Label.Text = xLabel
		p.Y.Label.Text = yLabel
		p.Y.Min = 0
		p.Y.Tick.Marker = plainTicks
		p.X.Tick.Marker = ticks
		if logX && xs[0] > 0 {
			p.X.Scale = plot.LogScale{}
		}
		p.Add(plotter.NewGrid())
		for i, l := range lines {
			ln, pts, err := plotter.NewLinePoints(pick(l))
			if err != nil {
				return nil, err
			}
			ln.Color = plotutil.Color(i)
			pts.Color = plotutil.Color(i)
			pts.Shape = plotutil.Shape(i)
			p.Add(ln, pts)
			p.Legend.Add(l.engine, ln, pts)
		}
		p.Legend.Top = true
		p.Legend.Left = true
		p.Legend.XOffs = vg.Millimeter * 3
		return p, nil
	}
	pr, err := panel(fmt.Sprintf("/operacion-simple: throughput vs %s", xLabel), "requests per second", func(l line) plotter.XYs { return l.rps })
	if err != nil {
		return false, err
	}
	pl, err := panel(fmt.Sprintf("/operacion-simple: p99 vs %s", xLabel), "p99 latency (ms)", func(l line) plotter.XYs { return l.p99 })
	if err != nil {
		return false, err
	}
	img := vgimg.New(11*vg.Inch, 4*vg.Inch)
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: 1, Cols: 2, PadX: vg.Millimeter * 6, PadTop: vg.Millimeter * 2, PadBottom: vg.Millimeter * 2,
		PadLeft: vg.Millimeter * 2, PadRight: vg.Millimeter * 4}
	canvases := plot.Align([][]*plot.Plot{{pr, pl}}, tiles, dc)
	pr.Draw(canvases[0][0])
	pl.Draw(canvases[0][1])
	f, err := os.Create(path)
	if err != nil {
		return false, err
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		f.Close()
		return false, err
	}
	return true, f.Close()
}

// plainTicks are gonum's default ticks without the trailing ".00".
var plainTicks = plot.TickerFunc(func(lo, hi float64) []plot.Tick {
	ts := plot.DefaultTicks{}.Ticks(lo, hi)
	for i := range ts {
		if ts[i].Label != "" {
			ts[i].Label = strconv.FormatFloat(ts[i].Value, 'f', -1, 64)
		}
	}
	return ts
})

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
