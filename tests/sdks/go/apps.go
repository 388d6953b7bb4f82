package main

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"github.com/dapr/go-sdk/service/common"
	daprgrpc "github.com/dapr/go-sdk/service/grpc"
	daprhttp "github.com/dapr/go-sdk/service/http"
)

// The app's subscriptions: both apps declare the same ones, through their SDK's API
// (service/grpc answers ListTopicSubscriptions, service/http serves GET /dapr/subscribe).
// The handler of each records the route it was called on (the event's topic attribute
// may name the original topic on a dead-letter delivery) and answers by route:
var subscriptions = []*common.Subscription{
	// success
	{PubsubName: "pubsub", Topic: "orders", Route: "/orders"},
	// the first delivery of each event asks for a retry: the SDK turns (true, err) into
	// RETRY over HTTP and into a gRPC error over gRPC; either way it must come again
	{PubsubName: "pubsub", Topic: "flaky", Route: "/flaky"},
	// a routing rule (CEL, from Match) beside the default route
	{PubsubName: "pubsub", Topic: "routed", Route: "/routed"},
	{PubsubName: "pubsub", Topic: "routed", Route: "/routed-big", Match: "event.data.n > 2", Priority: 1},
	// (false, err) is DROP: the event goes to the dead-letter topic
	{PubsubName: "pubsub", Topic: "poison", Route: "/poison", DeadLetterTopic: "poison-dead"},
	{PubsubName: "pubsub", Topic: "poison-dead", Route: "/poison-dead"},
}

func runGRPCApp() {
	service, err := daprgrpc.NewService(net.JoinHostPort("127.0.0.1", appPort()))
	if err != nil {
		fail("grpc-app: %v", err)
	}
	serveApp("grpc", service)
}

func runHTTPApp() {
	serveApp("http", daprhttp.NewService(net.JoinHostPort("127.0.0.1", appPort())))
}

func appPort() string {
	port := os.Getenv("APP_PORT") // set by `ottava run --app-port P -- COMMAND`
	if port == "" {
		fail("APP_PORT is not set: run the app as `ottava run --app-port P -- dapr-sdk-go %s`", os.Args[1])
	}
	return port
}

func serveApp(kind string, service common.Service) {
	app := &app{kind: kind, events: os.Getenv("EVENTS_FILE"), seen: map[string]int{}}
	for _, sub := range subscriptions {
		if err := service.AddTopicEventHandler(sub, app.handler(sub.Route)); err != nil {
			fail("%s-app: subscribing to %s: %v", kind, sub.Topic, err)
		}
	}
	if err := service.AddServiceInvocationHandler("echo", app.echo); err != nil {
		fail("%s-app: %v", kind, err)
	}
	if err := service.AddServiceInvocationHandler("fail", app.refuse); err != nil {
		fail("%s-app: %v", kind, err)
	}

	// `ottava run` forwards SIGTERM to the app: stop serving and exit 0.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	go func() {
		<-ctx.Done()
		_ = service.GracefulStop()
	}()
	if err := service.Start(); err != nil && ctx.Err() == nil { // after a signal, Start returns the closed server's error
		fail("%s-app: %v", kind, err)
	}
}

type app struct {
	kind   string
	events string
	mu     sync.Mutex
	seen   map[string]int // deliveries per route and event id
}

func (a *app) handler(route string) common.TopicEventHandler {
	return func(_ context.Context, e *common.TopicEvent) (retry bool, err error) {
		a.mu.Lock()
		defer a.mu.Unlock()
		a.seen[route+" "+e.ID]++
		delivery := a.seen[route+" "+e.ID]
		a.record(map[string]any{
			"app":          a.kind,
			"route":        route,
			"pubsub":       e.PubsubName,
			"topic":        e.Topic,
			"id":           e.ID,
			"data":         e.Data,
			"content_type": e.DataContentType,
			"delivery":     delivery,
		})
		switch {
		case route == "/flaky" && delivery == 1:
			return true, errors.New("the first delivery asks for a retry")
		case route == "/poison":
			return false, errors.New("this event can never be handled")
		}
		return false, nil
	}
}

func (a *app) record(line map[string]any) {
	if a.events == "" {
		return
	}
	out, err := os.OpenFile(a.events, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		fail("%s-app: %v", a.kind, err)
	}
	defer out.Close()
	if err := json.NewEncoder(out).Encode(line); err != nil {
		fail("%s-app: %v", a.kind, err)
	}
}

// echo answers with what the app received, so the caller sees what crossed both sidecars.
func (a *app) echo(_ context.Context, in *common.InvocationEvent) (*common.Content, error) {
	body, err := json.Marshal(map[string]string{
		"app":          a.kind,
		"verb":         in.Verb,
		"query":        in.QueryString,
		"content_type": in.ContentType,
		"data":         string(in.Data),
	})
	if err != nil {
		return nil, err
	}
	return &common.Content{Data: body, ContentType: "application/json"}, nil
}

func (a *app) refuse(context.Context, *common.InvocationEvent) (*common.Content, error) {
	return nil, errors.New("refused by the " + a.kind + " app")
}
