package main

import (
	"strings"
	"testing"
)

func TestParseArtilleryJSON(t *testing.T) {
	got, err := parseArtilleryJSON([]byte(readTestdata(t, "artillery_report.json")))
	if err != nil {
		t.Fatal(err)
	}
	want := artilleryResult{Codes200: 1949, Requests: 1960, OtherCodes: 1, ErrorsTotal: 10, VUsersFailed: 2,
		P99: 1863.5, Median: 620.1, Rate: 61}
	if got != want {
		t.Errorf("got %+v; want %+v", got, want)
	}
	if got.Failed() != 11 {
		t.Errorf("Failed() = %d; want 11", got.Failed())
	}
}

func TestParseArtilleryText(t *testing.T) {
	// Only the Summary report counts, not the periodic block before it.
	got, err := parseArtilleryText(readTestdata(t, "artillery_stdout.txt"))
	if err != nil {
		t.Fatal(err)
	}
	want := artilleryResult{Codes200: 1997, Requests: 2002, OtherCodes: 2, ErrorsTotal: 3, VUsersFailed: 3,
		P99: 12.1, Median: 1, Rate: 310}
	if got != want {
		t.Errorf("got %+v; want %+v", got, want)
	}
}

func TestParseArtilleryRejects(t *testing.T) {
	tests := []struct {
		name, in, wantErr string
		json              bool
	}{
		{"not JSON", "{", "artillery report", true},
		{"no aggregate", `{"intermediate": []}`, "no aggregate", true},
		{"no summary", "Phase started: unnamed\n", "no Summary report", false},
		{"empty summary", "Summary report @ 15:09:41(+0000)\n----\n", "without http.requests", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var err error
			if tt.json {
				_, err = parseArtilleryJSON([]byte(tt.in))
			} else {
				_, err = parseArtilleryText(tt.in)
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("got error %v; want one containing %q", err, tt.wantErr)
			}
		})
	}
}
