// A test function that reaches every host function and tries to leave its sandbox.
// tests/test_wasm_functions.py builds it with examples/wasm/counter/ottava.go beside it.
package main

import (
	"fmt"
	"io"
	"net"
	"os"
	"sort"
	"strings"
)

func main() {
	input, _ := io.ReadAll(os.Stdin)
	arg := string(input)
	switch os.Args[1] {
	case "state":
		if err := StateSave("statestore", arg, []byte("v1")); err != nil {
			fail(err)
		}
		before, found, _ := StateGet("statestore", arg)
		if err := StateDelete("statestore", arg); err != nil {
			fail(err)
		}
		_, after, _ := StateGet("statestore", arg)
		fmt.Printf("%s %v %v", before, found, after)
	case "config":
		value, found, err := ConfigGet("configstore", arg)
		if err != nil {
			fail(err)
		}
		fmt.Printf("%q %v", value, found)
	case "invoke": // the function named in the body, or echo
		target := "echo"
		if strings.HasPrefix(arg, "@") {
			target = arg[1:]
		}
		answer, err := Invoke(target, "greet", input)
		if err != nil {
			fail(err)
		}
		fmt.Printf("%s", answer)
	case "allocate": // as many MiB as the body says, touched so that they are really used
		var mib int
		fmt.Sscan(arg, &mib)
		blocks := make([][]byte, 0, mib)
		for i := 0; i < mib; i++ {
			block := make([]byte, 1<<20)
			block[len(block)-1] = 1
			blocks = append(blocks, block)
		}
		fmt.Printf("allocated %d MiB", len(blocks))
	case "error":
		_, _, err := StateGet("nosuchstore", "k")
		fmt.Printf("%v", err)
	case "sandbox":
		_, fileErr := os.ReadFile("/etc/hostname")
		_, netErr := net.Dial("tcp", "127.0.0.1:80")
		env := os.Environ()
		sort.Strings(env)
		fmt.Printf("file: %v\nnet: %v\nenv: %s\nargs: %s", fileErr != nil, netErr != nil, strings.Join(env, " "), strings.Join(os.Args, " "))
	default:
		fail(fmt.Errorf("unknown method %q", os.Args[1]))
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, err)
	os.Exit(1)
}
