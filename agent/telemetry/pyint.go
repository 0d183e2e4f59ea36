package telemetry

import (
	"encoding/json"
	"math"
	"math/big"
	"strconv"
	"strings"
)

// pyInt is an integer as Python holds it: any size. Nearly every value fits
// an int64 (big is nil); counters beyond that are kept exactly (spec: an
// integer beyond 64 bits is still an integer).
type pyInt struct {
	n   int64
	big *big.Int // non-nil when the value does not fit an int64
}

func int64Py(n int64) pyInt { return pyInt{n: n} }

// bigPy makes a pyInt of b, small when it fits.
func bigPy(b *big.Int) pyInt {
	if b.IsInt64() {
		return pyInt{n: b.Int64()}
	}
	return pyInt{big: b}
}

func (x pyInt) toBig() *big.Int {
	if x.big != nil {
		return x.big
	}
	return big.NewInt(x.n)
}

// cmp compares x and y: -1, 0 or +1.
func (x pyInt) cmp(y pyInt) int {
	if x.big == nil && y.big == nil {
		switch {
		case x.n < y.n:
			return -1
		case x.n > y.n:
			return 1
		}
		return 0
	}
	return x.toBig().Cmp(y.toBig())
}

func (x pyInt) cmp64(n int64) int { return x.cmp(pyInt{n: n}) }

func (x pyInt) sub(y pyInt) pyInt {
	if x.big == nil && y.big == nil {
		d := x.n - y.n
		// No overflow when the signs of x and -y differ or d keeps x's sign.
		if (x.n >= 0) != (y.n >= 0) && (d >= 0) != (x.n >= 0) {
			return bigPy(new(big.Int).Sub(x.toBig(), y.toBig()))
		}
		return pyInt{n: d}
	}
	return bigPy(new(big.Int).Sub(x.toBig(), y.toBig()))
}

// String is the decimal digits, as Python's str(int).
func (x pyInt) String() string {
	if x.big != nil {
		return x.big.String()
	}
	return strconv.FormatInt(x.n, 10)
}

func (x pyInt) number() json.Number { return json.Number(x.String()) }

// int64 returns the value when it fits.
func (x pyInt) int64() (int64, bool) { return x.n, x.big == nil }

// pyIntValue reads a JSON integer as Python's isinstance(v, int) sees it: a
// boolean is not one, nor a number written with a fraction or an exponent.
// prob is "" on success, else why not, phrased to follow "must be an
// integer, ".
func pyIntValue(v any) (x pyInt, prob string) {
	switch v := v.(type) {
	case json.Number:
		s := string(v)
		if strings.ContainsAny(s, ".eE") {
			return x, "got a number with a fraction or exponent (" + s + ")"
		}
		n, err := strconv.ParseInt(s, 10, 64)
		if err == nil {
			return pyInt{n: n}, ""
		}
		b, ok := new(big.Int).SetString(s, 10)
		if !ok {
			return x, "got " + strconv.Quote(s)
		}
		return bigPy(b), ""
	case int64:
		return pyInt{n: v}, ""
	case int:
		return pyInt{n: int64(v)}, ""
	case NonFinite:
		return x, "got " + v.String()
	default:
		return x, "got " + kind(v)
	}
}

// pyFloat is float(v) of a JSON number, as Python computes it: an integer is
// rounded to the nearest float64 (ok is false when it is too large, where
// Python raises OverflowError); a decimal is read as float64 (out of range:
// ±Inf, as Python's float does). isNum is false for anything but a number
// (a boolean is not one).
func pyFloat(v any) (f float64, isNum, ok bool) {
	switch v := v.(type) {
	case json.Number:
		s := string(v)
		if !strings.ContainsAny(s, ".eE") {
			if n, err := strconv.ParseInt(s, 10, 64); err == nil {
				return float64(n), true, true // Go rounds to nearest even, as Python does
			}
			b, okb := new(big.Int).SetString(s, 10)
			if !okb {
				return 0, true, false
			}
			f, _ := new(big.Float).SetInt(b).Float64() // exact, then one rounding
			if math.IsInf(f, 0) {
				return f, true, false
			}
			return f, true, true
		}
		f, err := strconv.ParseFloat(s, 64)
		if err != nil && !isRangeErr(err) {
			return 0, true, false
		}
		return f, true, true
	case NonFinite:
		return float64(v), true, true
	case int64:
		return float64(v), true, true
	case int:
		return float64(v), true, true
	}
	return 0, false, false
}

func isRangeErr(err error) bool {
	ne, ok := err.(*strconv.NumError)
	return ok && ne.Err == strconv.ErrRange
}

// pyTrunc is Python's int(f): f truncated toward zero, exactly. ok is false
// for NaN and ±Inf, where Python raises.
func pyTrunc(f float64) (pyInt, bool) {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return pyInt{}, false
	}
	t := math.Trunc(f)
	if t >= -(1<<63) && t < 1<<63 {
		return pyInt{n: int64(t)}, true
	}
	b, _ := new(big.Float).SetFloat64(t).Int(nil)
	return bigPy(b), true
}

// pyFloatRepr is Python's repr(f) (and str(f)): the shortest digits that
// read back as f, in fixed notation when the decimal exponent is in
// [-4, 16), else as d.ddde±XX.
func pyFloatRepr(f float64) string {
	switch {
	case math.IsNaN(f):
		return "nan"
	case math.IsInf(f, 1):
		return "inf"
	case math.IsInf(f, -1):
		return "-inf"
	case f == 0:
		if math.Signbit(f) {
			return "-0.0"
		}
		return "0.0"
	}
	s := strconv.FormatFloat(f, 'e', -1, 64) // -d.ddde±XX
	sign := ""
	if s[0] == '-' {
		sign, s = "-", s[1:]
	}
	mant, expS, _ := strings.Cut(s, "e")
	exp, _ := strconv.Atoi(expS)
	digits := strings.Replace(mant, ".", "", 1)
	decpt := exp + 1 // digits d1d2… times 10^(decpt-len)
	if decpt > -4 && decpt <= 16 {
		switch {
		case decpt <= 0:
			return sign + "0." + strings.Repeat("0", -decpt) + digits
		case decpt >= len(digits):
			return sign + digits + strings.Repeat("0", decpt-len(digits)) + ".0"
		default:
			return sign + digits[:decpt] + "." + digits[decpt:]
		}
	}
	out := sign + digits[:1]
	if len(digits) > 1 {
		out += "." + digits[1:]
	}
	e := exp
	es := "+"
	if e < 0 {
		es, e = "-", -e
	}
	ed := strconv.Itoa(e)
	if len(ed) < 2 {
		ed = "0" + ed
	}
	return out + "e" + es + ed
}

// pyStr is Python's str(v) of a decoded JSON value, for the parts of
// stormlog's stable session id. ok is false for values whose text this
// package does not reproduce (objects and arrays), which never reach an
// accepted record's id.
func pyStr(v any) (string, bool) {
	switch v := v.(type) {
	case string:
		return v, true
	case bool:
		if v {
			return "True", true
		}
		return "False", true
	case json.Number:
		if x, prob := pyIntValue(v); prob == "" {
			return x.String(), true
		}
		f, _, ok := pyFloat(v)
		return pyFloatRepr(f), ok
	case NonFinite:
		return pyFloatRepr(float64(v)), true
	case int64:
		return strconv.FormatInt(v, 10), true
	case int:
		return strconv.Itoa(v), true
	}
	return "", false
}
