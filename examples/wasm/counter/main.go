// The counter function: each call increments "visits" in "statestore", publishes
// "visited" on "pubsub", and answers the new count. Build it with the standard toolchain:
//
//	GOOS=wasip1 GOARCH=wasm go build -o counter.wasm
package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

func main() {
	value, _, err := StateGet("statestore", "visits")
	if err != nil {
		fail(err)
	}
	count := 0
	if text := strings.Trim(string(value), "\" \n"); text != "" {
		if count, err = strconv.Atoi(text); err != nil {
			fail(fmt.Errorf("visits holds %q, not a number", text))
		}
	}
	count++
	if err := StateSave("statestore", "visits", []byte(strconv.Itoa(count))); err != nil {
		fail(err)
	}
	event := fmt.Sprintf(`{"visits": %d, "method": %q}`, count, os.Getenv("OTTAVA_METHOD"))
	if err := Publish("pubsub", "visited", []byte(event), "application/json"); err != nil {
		fail(err)
	}
	Log(1, fmt.Sprintf("visit %d", count))
	fmt.Print(count)
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, err)
	os.Exit(1)
}
