package configs

import (
	"fmt"
	"regexp"
	"strings"
)

// exprInfo is what a PromQL expression refers to: found by a small lexer,
// not a full parser (promtool checks the syntax; this finds the names).
type exprInfo struct {
	metrics []string // metric names it selects
	labels  []string // label names it reads: matchers, grouping, vector matching, label_replace sources
	created []string // labels it creates (label_replace, label_join, count_values)
	without []string // labels an aggregation removes with without (...)
}

type tokKind int

const (
	tokIdent tokKind = iota
	tokString
	tokNumber
	tokPunct
)

type token struct {
	kind tokKind
	text string // for strings: the unquoted value
}

var twoCharOps = []string{"=~", "!~", "!=", "==", "<=", ">="}

func lexPromQL(s string) ([]token, error) {
	var toks []token
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case c == '#':
			for i < len(s) && s[i] != '\n' {
				i++
			}
		case isIdentStart(c):
			j := i + 1
			for j < len(s) && isIdentChar(s[j]) {
				j++
			}
			toks = append(toks, token{tokIdent, s[i:j]})
			i = j
		case c >= '0' && c <= '9' || c == '.':
			j := i + 1
			for j < len(s) && (isIdentChar(s[j]) || s[j] == '.') {
				j++
			}
			toks = append(toks, token{tokNumber, s[i:j]})
			i = j
		case c == '"' || c == '\'' || c == '`':
			j := i + 1
			var b strings.Builder
			for ; j < len(s) && s[j] != c; j++ {
				if s[j] == '\\' && c != '`' && j+1 < len(s) {
					j++
				}
				b.WriteByte(s[j])
			}
			if j >= len(s) {
				return nil, fmt.Errorf("unterminated string at %d", i)
			}
			toks = append(toks, token{tokString, b.String()})
			i = j + 1
		default:
			op := string(c)
			for _, two := range twoCharOps {
				if strings.HasPrefix(s[i:], two) {
					op = two
				}
			}
			toks = append(toks, token{tokPunct, op})
			i += len(op)
		}
	}
	return toks, nil
}

func isIdentStart(c byte) bool {
	return c == '_' || c == ':' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}

func isIdentChar(c byte) bool { return isIdentStart(c) || c >= '0' && c <= '9' }

// keywords are identifiers that are neither metrics nor labels.
var keywords = map[string]bool{
	"and": true, "or": true, "unless": true, "bool": true, "offset": true, "atan2": true,
	"inf": true, "nan": true, "Inf": true, "NaN": true,
}

// groupingWords take a parenthesised list of label names.
var groupingWords = map[string]bool{
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
}

var matchOps = map[string]bool{"=": true, "!=": true, "=~": true, "!~": true}

// aggregations may put their grouping before their argument: sum by (a) (x).
var aggregations = map[string]bool{
	"sum": true, "min": true, "max": true, "avg": true, "group": true, "stddev": true, "stdvar": true,
	"count": true, "count_values": true, "bottomk": true, "topk": true, "quantile": true,
	"limitk": true, "limit_ratio": true,
}

// analyzePromQL lists the metrics and labels an expression refers to.
func analyzePromQL(expr string) (exprInfo, error) {
	toks, err := lexPromQL(expr)
	if err != nil {
		return exprInfo{}, err
	}
	var info exprInfo
	type frame struct {
		open byte   // '(', '{' or '['
		fn   string // the function a '(' calls, if any
		arg  int    // argument index within a call
	}
	var stack []frame
	pendingFn := "" // an aggregation whose grouping comes before its '('
	top := func() *frame {
		if len(stack) == 0 {
			return nil
		}
		return &stack[len(stack)-1]
	}
	next := func(i int) token {
		if i+1 < len(toks) {
			return toks[i+1]
		}
		return token{}
	}
	for i := 0; i < len(toks); i++ {
		t := toks[i]
		switch t.kind {
		case tokPunct:
			switch t.text {
			case "(":
				stack = append(stack, frame{open: '(', fn: pendingFn})
				pendingFn = ""
			case "{":
				stack = append(stack, frame{open: '{'})
			case "[":
				stack = append(stack, frame{open: '['})
			case ")", "}", "]":
				if len(stack) == 0 {
					return info, fmt.Errorf("unbalanced %q", t.text)
				}
				stack = stack[:len(stack)-1]
			case ",":
				if f := top(); f != nil && f.open == '(' {
					f.arg++
				}
			}
		case tokString:
			f := top()
			if f == nil || f.open != '(' {
				continue
			}
			switch {
			case f.fn == "label_replace" && f.arg == 1, f.fn == "label_join" && f.arg == 1, f.fn == "count_values" && f.arg == 0:
				info.created = append(info.created, t.text)
			case f.fn == "label_replace" && f.arg == 3, f.fn == "label_join" && f.arg >= 3:
				info.labels = append(info.labels, t.text)
			}
		case tokIdent:
			if f := top(); f != nil && f.open == '{' {
				if n := next(i); n.kind == tokPunct && matchOps[n.text] {
					info.labels = append(info.labels, t.text)
					continue
				}
				return info, fmt.Errorf("unexpected %q in a label matcher", t.text)
			}
			if n := next(i); aggregations[t.text] && n.kind == tokIdent && (n.text == "by" || n.text == "without") {
				pendingFn = t.text
				continue
			}
			if n := next(i); n.kind == tokPunct && n.text == "(" {
				if groupingWords[t.text] {
					j := i + 2
					for ; j < len(toks) && !(toks[j].kind == tokPunct && toks[j].text == ")"); j++ {
						if toks[j].kind == tokIdent {
							info.labels = append(info.labels, toks[j].text)
							if t.text == "without" {
								info.without = append(info.without, toks[j].text)
							}
						}
					}
					i = j // past the ')'
					continue
				}
				stack = append(stack, frame{open: '(', fn: t.text})
				i++ // the '(' is consumed with its frame
				continue
			}
			if groupingWords[t.text] || keywords[t.text] {
				continue // group_left without a list
			}
			if f := top(); f != nil && f.open == '[' {
				continue // a subquery's or range's duration
			}
			info.metrics = append(info.metrics, t.text)
		}
	}
	if len(stack) != 0 {
		return info, fmt.Errorf("unbalanced %q", string(stack[len(stack)-1].open))
	}
	return info, nil
}

// grafanaVar matches Grafana's variable forms: $name, ${name}, ${name:fmt}, [[name]].
var grafanaVar = regexp.MustCompile(`\$\{([A-Za-z0-9_]+)(?::[^}]*)?\}|\$([A-Za-z0-9_]+)|\[\[([A-Za-z0-9_]+)\]\]`)

// expandGrafana replaces Grafana's variables with values Prometheus accepts:
// a duration for the interval variables, a match-anything regex for the
// dashboard's own.
func expandGrafana(expr string) string {
	return grafanaVar.ReplaceAllStringFunc(expr, func(m string) string {
		sub := grafanaVar.FindStringSubmatch(m)
		name := sub[1] + sub[2] + sub[3]
		switch name {
		case "__rate_interval", "__interval", "__range", "__range_s":
			if name == "__range_s" {
				return "3600"
			}
			return "5m"
		case "__interval_ms", "__range_ms":
			return "300000"
		}
		return ".*"
	})
}

var labelValuesQuery = regexp.MustCompile(`^\s*label_values\(\s*(.*?)\s*,\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)\s*$`)
