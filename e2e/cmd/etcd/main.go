// Command etcd is the etcd server of go.etcd.io/etcd/server/v3 (3.6.x), the
// storage of the e2e kube-apiserver. Debian's etcd is older than what current
// kube-apiserver supports, and release binaries cannot be downloaded here.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
