// Command pause is the e2e node's sandbox ("infra") container: it holds the
// pod's namespaces open and does nothing else. As PID 1 of the pod it ignores
// SIGCHLD (so the kernel reaps any orphan re-parented to it) and exits at once
// on SIGINT or SIGTERM, so a pod stops without waiting for a grace period.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signal.Ignore(syscall.SIGCHLD)
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	<-stop
}
