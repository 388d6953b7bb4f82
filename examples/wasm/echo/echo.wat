;; A function with no toolchain: wasmtime compiles this text as it loads it.
;; It answers "hello, " followed by the request body, and logs each call through the sidecar.
(module
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "ottava" "log" (func $log (param i32 i32 i32)))
  (memory (export "memory") 2)
  (data (i32.const 0) "hello, ")
  (data (i32.const 16) "echo called")
  ;; 32: one iovec (pointer, length); 40: bytes read or written; 1024…: the buffer.
  (func (export "_start")
    (local $n i32)
    (call $log (i32.const 1) (i32.const 16) (i32.const 11))
    (i32.store (i32.const 32) (i32.const 0))
    (i32.store (i32.const 36) (i32.const 7))
    (drop (call $fd_write (i32.const 1) (i32.const 32) (i32.const 1) (i32.const 40)))
    (block $done
      (loop $more
        (i32.store (i32.const 32) (i32.const 1024))
        (i32.store (i32.const 36) (i32.const 64512))
        (br_if $done (call $fd_read (i32.const 0) (i32.const 32) (i32.const 1) (i32.const 40)))
        (local.set $n (i32.load (i32.const 40)))
        (br_if $done (i32.eqz (local.get $n)))
        (i32.store (i32.const 36) (local.get $n))
        (drop (call $fd_write (i32.const 1) (i32.const 32) (i32.const 1) (i32.const 40)))
        (br $more)))))
