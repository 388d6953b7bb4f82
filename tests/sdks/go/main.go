// Command dapr-sdk-go is the Go side of tests/test_sdk_go.py: apps and a client written
// with the official Dapr Go SDK (github.com/dapr/go-sdk), unmodified, as a user writes them.
//
//	dapr-sdk-go grpc-app          an app built on service/grpc, listening on $APP_PORT
//	dapr-sdk-go http-app          an app built on service/http, listening on $APP_PORT
//	dapr-sdk-go client CHECK ...  one client scenario against the sidecar of $DAPR_GRPC_PORT
//	dapr-sdk-go --version         the SDK version it was built with
//
// One binary with subcommands, so one cached build serves every program of the suite.
// The client prints what it observed as JSON lines on stdout (errors included, as text)
// and leaves the judging to the test; the apps record each delivery they get as a JSON
// line in $EVENTS_FILE.
package main

import (
	"fmt"
	"os"
	"runtime/debug"
)

const sdkModule = "github.com/dapr/go-sdk"

func main() {
	if len(os.Args) < 2 {
		fail("usage: dapr-sdk-go grpc-app | http-app | client CHECK ARGS... | --version")
	}
	switch os.Args[1] {
	case "--version":
		fmt.Println(sdkVersion())
	case "grpc-app":
		runGRPCApp()
	case "http-app":
		runHTTPApp()
	case "client":
		runClient(os.Args[2:])
	default:
		fail("unknown command %q", os.Args[1])
	}
}

// sdkVersion is the go-sdk version this binary was built against, from its build info.
func sdkVersion() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	for _, dep := range info.Deps {
		if dep.Path == sdkModule {
			return dep.Version
		}
	}
	return "unknown"
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "dapr-sdk-go: "+format+"\n", args...)
	os.Exit(2)
}
