// Command kubelet is upstream's kubelet main, rebuilt from the pinned module so
// the e2e node runs the same release as its control plane: pods really run (in
// containerd) and are really probed.
package main

import (
	"context"
	"os"

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"          // --logging-format=json, as upstream.
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // client-go metrics, as upstream.
	_ "k8s.io/component-base/metrics/prometheus/version"  // version metric, as upstream.
	"k8s.io/kubernetes/cmd/kubelet/app"
)

func main() {
	os.Exit(cli.Run(app.NewKubeletCommand(context.Background())))
}
