// The import file of Ottava's host functions: copy it next to your function's main.go.
// It needs no SDK: each host function is a WebAssembly import of the module "ottava",
// taking pointers and lengths into this module's memory (docs/wasm.md).
package main

import (
	"errors"
	"unsafe"
)

//go:wasmimport ottava state_get
func stateGet(store unsafe.Pointer, storeLen uint32, key unsafe.Pointer, keyLen uint32) int32

//go:wasmimport ottava state_save
func stateSave(store unsafe.Pointer, storeLen uint32, key unsafe.Pointer, keyLen uint32, value unsafe.Pointer, valueLen uint32) int32

//go:wasmimport ottava state_delete
func stateDelete(store unsafe.Pointer, storeLen uint32, key unsafe.Pointer, keyLen uint32) int32

//go:wasmimport ottava publish
func publish(pubsub unsafe.Pointer, pubsubLen uint32, topic unsafe.Pointer, topicLen uint32, data unsafe.Pointer, dataLen uint32, contentType unsafe.Pointer, contentTypeLen uint32) int32

//go:wasmimport ottava invoke
func invoke(appID unsafe.Pointer, appIDLen uint32, method unsafe.Pointer, methodLen uint32, data unsafe.Pointer, dataLen uint32) int32

//go:wasmimport ottava config_get
func configGet(store unsafe.Pointer, storeLen uint32, key unsafe.Pointer, keyLen uint32) int32

//go:wasmimport ottava log
func logLine(level uint32, text unsafe.Pointer, textLen uint32)

//go:wasmimport ottava result_read
func resultRead(buffer unsafe.Pointer, bufferLen uint32) int32

//go:wasmimport ottava error_read
func errorRead(buffer unsafe.Pointer, bufferLen uint32) int32

const notFound = -1

func str(s string) (unsafe.Pointer, uint32) {
	return unsafe.Pointer(unsafe.StringData(s)), uint32(len(s))
}

func buf(b []byte) (unsafe.Pointer, uint32) {
	return unsafe.Pointer(unsafe.SliceData(b)), uint32(len(b))
}

// result turns a host function's answer into its data: found is false for "not found".
func result(n int32) (data []byte, found bool, err error) {
	if n == notFound {
		return nil, false, nil
	}
	if n < 0 {
		text := make([]byte, 4096)
		p, l := buf(text)
		return nil, false, errors.New(string(text[:errorRead(p, l)]))
	}
	data = make([]byte, n)
	if n > 0 {
		p, l := buf(data)
		resultRead(p, l)
	}
	return data, true, nil
}

func status(n int32) error {
	_, _, err := result(n)
	return err
}

// StateGet reads a key of a state store; found is false when the key has no value.
func StateGet(store, key string) (value []byte, found bool, err error) {
	sp, sl := str(store)
	kp, kl := str(key)
	return result(stateGet(sp, sl, kp, kl))
}

// StateSave writes a key of a state store.
func StateSave(store, key string, value []byte) error {
	sp, sl := str(store)
	kp, kl := str(key)
	vp, vl := buf(value)
	return status(stateSave(sp, sl, kp, kl, vp, vl))
}

// StateDelete removes a key of a state store.
func StateDelete(store, key string) error {
	sp, sl := str(store)
	kp, kl := str(key)
	return status(stateDelete(sp, sl, kp, kl))
}

// Publish sends an event to a topic; contentType "" means application/json.
func Publish(pubsub, topic string, data []byte, contentType string) error {
	pp, pl := str(pubsub)
	tp, tl := str(topic)
	dp, dl := buf(data)
	cp, cl := str(contentType)
	return status(publish(pp, pl, tp, tl, dp, dl, cp, cl))
}

// Invoke calls a method of an app (or of another function) and returns its answer.
func Invoke(appID, method string, data []byte) ([]byte, error) {
	ap, al := str(appID)
	mp, ml := str(method)
	dp, dl := buf(data)
	answer, _, err := result(invoke(ap, al, mp, ml, dp, dl))
	return answer, err
}

// ConfigGet reads a key of a configuration store; found is false when it has none.
func ConfigGet(store, key string) (value string, found bool, err error) {
	sp, sl := str(store)
	kp, kl := str(key)
	data, found, err := result(configGet(sp, sl, kp, kl))
	return string(data), found, err
}

// Log writes a line to the sidecar's log: level 0 debug, 1 info, 2 warning, 3 error.
func Log(level uint32, text string) {
	p, l := str(text)
	logLine(level, p, l)
}
