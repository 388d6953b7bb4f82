// Command podcheck is the e2e node's test workload, a static binary small
// enough to make an image of on the fly. It serves HTTP for kubelet probes and
// logs every request it gets (so a test sees that the kubelet really probed
// it), and with -apiserver it calls the apiserver the way in-cluster clients
// do: at $KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT (the `kubernetes`
// Service's ClusterIP, injected by the kubelet), trusting the mounted CA and
// presenting the pod's ServiceAccount token.
//
//	GET /healthz      200 while the process serves
//	GET /ready        200 once the apiserver was reached (always with no -apiserver), else 503
//	GET /status/NNN   answers with status NNN (a probe that fails on purpose)
package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

const saDir = "/var/run/secrets/kubernetes.io/serviceaccount"

func main() {
	listen := flag.String("listen", ":8080", "HTTP address to serve")
	apiserver := flag.Bool("apiserver", false, "reach the apiserver through the kubernetes Service, then report ready")
	flag.Parse()
	log.SetFlags(log.LstdFlags | log.LUTC)

	var ready atomic.Bool
	ready.Store(!*apiserver)
	if *apiserver {
		go func() {
			for {
				if err := checkAPIServer(); err != nil {
					log.Printf("apiserver: not reached yet: %v", err)
					time.Sleep(time.Second)
					continue
				}
				ready.Store(true)
				return
			}
		}()
	}

	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
	mux.HandleFunc("/ready", func(w http.ResponseWriter, _ *http.Request) {
		if !ready.Load() {
			http.Error(w, "apiserver not reached yet", http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ready\n")
	})
	mux.HandleFunc("/status/", func(w http.ResponseWriter, r *http.Request) {
		code, err := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/status/"))
		if err != nil || code < 200 || code > 599 {
			code = http.StatusBadRequest
		}
		w.WriteHeader(code)
	})
	logged := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		log.Printf("http: %s %s from %s user-agent %q", r.Method, r.URL.Path, r.RemoteAddr, r.UserAgent())
		mux.ServeHTTP(w, r)
	})
	log.Printf("http: serving on %s", *listen)
	log.Fatal(http.ListenAndServe(*listen, logged))
}

// checkAPIServer asks the apiserver who this pod is (a SelfSubjectReview
// authenticates the token) and which release it runs, and logs both.
func checkAPIServer() error {
	host, port := os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT")
	if host == "" || port == "" {
		return fmt.Errorf("KUBERNETES_SERVICE_HOST/PORT are not set")
	}
	caPEM, err := os.ReadFile(saDir + "/ca.crt")
	if err != nil {
		return err
	}
	token, err := os.ReadFile(saDir + "/token")
	if err != nil {
		return err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		return fmt.Errorf("no certificate in %s/ca.crt", saDir)
	}
	client := &http.Client{
		Timeout:   5 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}},
	}
	base := "https://" + net.JoinHostPort(host, port)
	call := func(method, path string, body []byte, out any) error {
		req, err := http.NewRequest(method, base+path, bytes.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		data, _ := io.ReadAll(resp.Body)
		if resp.StatusCode/100 != 2 {
			return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, data)
		}
		return json.Unmarshal(data, out)
	}
	var version struct {
		GitVersion string `json:"gitVersion"`
	}
	if err := call("GET", "/version", nil, &version); err != nil {
		return err
	}
	var review struct {
		Status struct {
			UserInfo struct {
				Username string `json:"username"`
			} `json:"userInfo"`
		} `json:"status"`
	}
	body := []byte(`{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}`)
	if err := call("POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews", body, &review); err != nil {
		return err
	}
	log.Printf("apiserver: reached %s (kubernetes %s) as %s", base, version.GitVersion, review.Status.UserInfo.Username)
	return nil
}
