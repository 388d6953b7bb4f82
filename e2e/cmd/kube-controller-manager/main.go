// Command kube-controller-manager is upstream's main, rebuilt from the pinned
// module so Deployments, namespaces, service-account tokens and garbage
// collection behave in e2e exactly as in a real cluster.
package main

import (
	"os"
	_ "time/tzdata" // CronJob time zones work without a system tzdata.

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"          // --logging-format=json, as upstream.
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // client-go metrics, as upstream.
	_ "k8s.io/component-base/metrics/prometheus/version"  // version metric, as upstream.
	"k8s.io/kubernetes/cmd/kube-controller-manager/app"
)

func main() {
	os.Exit(cli.Run(app.NewControllerManagerCommand()))
}
