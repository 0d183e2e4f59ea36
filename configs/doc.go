// Package configs holds no code. Its tests check the monitoring files shipped
// beside it: the Prometheus rules in prometheus/ (with promtool, when it is
// installed) and the Grafana dashboard in grafana/ (its PromQL parses, and
// names only metrics and labels a running agent exposes).
package configs
