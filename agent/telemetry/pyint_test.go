package telemetry

import (
	"encoding/json"
	"math"
	"math/big"
	"strings"
	"testing"
)

// Python's repr of floats, as stormlog writes a float timestamp into a
// session id (values from Python 3.11).
func TestPyFloatRepr(t *testing.T) {
	for f, want := range map[float64]string{
		1e16: "1e+16", 1234567890123456.0: "1234567890123456.0", 1e-05: "1e-05", 0.0001: "0.0001",
		math.Copysign(0, -1): "-0.0", 0: "0.0", 1e22: "1e+22", 1.5e300: "1.5e+300", 5e-324: "5e-324",
		1767908945.298: "1767908945.298", 0.1: "0.1", 100: "100.0", 1e-320: "1e-320",
		math.MaxFloat64: "1.7976931348623157e+308", 123456789.123456789: "123456789.12345679",
		12345678901234567.0: "1.2345678901234568e+16", -2.5e-7: "-2.5e-07",
		math.NaN(): "nan", math.Inf(1): "inf", math.Inf(-1): "-inf",
	} {
		if got := pyFloatRepr(f); got != want {
			t.Errorf("pyFloatRepr(%v) = %q, want %q", f, got, want)
		}
	}
}

// float() of an integer rounds to nearest even, and int() truncates
// exactly, as Python does.
func TestPyFloatTrunc(t *testing.T) {
	for lit, want := range map[string]string{
		"9007199254740993":     "9007199254740992",
		"18446744073709553664": "18446744073709551616",
		"-0.3e9":               "-300000000",
		"1e30":                 "1000000000000000019884624838656",
	} {
		f, isNum, ok := pyFloat(json.Number(lit))
		if !isNum || !ok {
			t.Fatalf("%s: not a number", lit)
		}
		n, ok := pyTrunc(f)
		if !ok || n.String() != want {
			t.Errorf("int(float(%s)) = %s, want %s", lit, n, want)
		}
	}
	// float(timestamp) * 1_000_000_000, then int(): what stormlog makes of
	// seconds.
	f, _, _ := pyFloat(json.Number("1767908945.298"))
	if n, _ := pyTrunc(f * 1e9); n.String() != "1767908945298000128" {
		t.Errorf("int(1767908945.298 * 1e9) = %s", n)
	}
	if _, _, ok := pyFloat(json.Number("1" + strings.Repeat("0", 400))); ok {
		t.Error("an integer too large for a float converted")
	}
	if _, isNum, _ := pyFloat(true); isNum {
		t.Error("a boolean is a number")
	}
	if _, ok := pyTrunc(math.Inf(1)); ok {
		t.Error("int(inf) converted")
	}
}

func TestPyIntArithmetic(t *testing.T) {
	max, min := int64Py(math.MaxInt64), int64Py(math.MinInt64)
	if got := max.sub(int64Py(-1)).String(); got != "9223372036854775808" {
		t.Errorf("max+1 = %s", got)
	}
	if got := min.sub(int64Py(1)).String(); got != "-9223372036854775809" {
		t.Errorf("min-1 = %s", got)
	}
	if got := int64Py(5).sub(int64Py(7)).String(); got != "-2" {
		t.Errorf("5-7 = %s", got)
	}
	b, _ := new(big.Int).SetString("18446744073709551616", 10)
	if bigPy(b).cmp(max) <= 0 || max.cmp(bigPy(b)) >= 0 || bigPy(b).sub(bigPy(b)).cmp64(0) != 0 {
		t.Error("big comparisons")
	}
	if x, prob := pyIntValue(json.Number("-18446744073709551616")); prob != "" || x.cmp(min) >= 0 {
		t.Errorf("%v %q", x, prob)
	}
}
