// Command kube-apiserver is upstream's kube-apiserver main, rebuilt here so the
// e2e control plane comes from the pinned k8s.io/kubernetes module rather than
// from a downloaded release binary (which this project cannot fetch).
package main

import (
	"os"
	_ "time/tzdata" // CronJob time zones work without a system tzdata.

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"          // --logging-format=json, as upstream.
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // client-go metrics, as upstream.
	_ "k8s.io/component-base/metrics/prometheus/version"  // version metric, as upstream.
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() {
	os.Exit(cli.Run(app.NewAPIServerCommand()))
}
