// promtool for the tests: checks and unit-tests the chart's PrometheusRule
// alerts (tools/promtool/build.sh builds it; tests/test_monitoring.py runs it).
module ottava.tools/promtool

go 1.26.7

require github.com/prometheus/prometheus v0.316.0 // indirect
