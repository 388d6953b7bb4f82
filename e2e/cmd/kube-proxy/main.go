// Command kube-proxy is upstream's main, rebuilt from the pinned module, so pods
// on the e2e node reach Services (the `kubernetes` Service above all) through
// their ClusterIPs, as in a real cluster.
package main

import (
	"os"

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"          // --logging-format=json, as upstream.
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // client-go metrics, as upstream.
	_ "k8s.io/component-base/metrics/prometheus/version"  // version metric, as upstream.
	"k8s.io/kubernetes/cmd/kube-proxy/app"
)

func main() {
	os.Exit(cli.Run(app.NewProxyCommand()))
}
