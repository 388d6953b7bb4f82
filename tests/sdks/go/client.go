package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"os"
	"sort"
	"time"

	dapr "github.com/dapr/go-sdk/client"
	"github.com/dapr/go-sdk/service/common"
)

// Each check runs the SDK calls of one scenario and prints what it observed, one JSON
// object per line; an SDK error is observed too (as its text), not a failure of the
// program. The program fails (exit 1, message on stderr) only when the SDK cannot be
// used at all, e.g. dapr.NewClient gives up on the sidecar.
var checks = map[string]func(ctx context.Context, c dapr.Client, args []string){
	"state-etag":        stateETag,
	"state-bulk":        stateBulk,
	"state-transaction": stateTransaction,
	"publish":           publish,
	"stream":            stream,
	"configuration":     configuration,
	"lock":              lock,
	"secrets":           secrets,
	"metadata":          metadata,
	"invoke":            invoke,
}

func runClient(args []string) {
	if len(args) == 0 || checks[args[0]] == nil {
		fail("usage: dapr-sdk-go client CHECK ARGS... (checks: %v)", checkNames())
	}
	// The SDK logs to stdout by default; stdout carries this program's JSON.
	dapr.SetLogger(log.New(os.Stderr, "", 0))
	c, err := dapr.NewClient() // $DAPR_GRPC_ENDPOINT, else 127.0.0.1:$DAPR_GRPC_PORT
	if err != nil {
		fmt.Fprintf(os.Stderr, "dapr-sdk-go client: %v\n", err)
		os.Exit(1)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	checks[args[0]](ctx, c, args[1:])
}

func checkNames() []string {
	names := make([]string, 0, len(checks))
	for name := range checks {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

func emit(observed map[string]any) {
	line, err := json.Marshal(observed)
	if err != nil {
		fail("client: %v", err)
	}
	fmt.Println(string(line))
}

// errText is what the SDK's error says ("" for none): the test matches codes and names in it.
func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func arg(args []string, i int) string {
	if i >= len(args) {
		fail("client: missing argument %d", i+1)
	}
	return args[i]
}

const (
	stateStore  = "statestore"
	pubsubName  = "pubsub"
	configStore = "configstore"
	lockStore   = "lockstore"
	secretStore = "secretstore"
)

func item(it *dapr.StateItem, err error) map[string]any {
	if err != nil {
		return map[string]any{"error": errText(err)}
	}
	return map[string]any{"value": string(it.Value), "etag": it.Etag}
}

func stateETag(ctx context.Context, c dapr.Client, args []string) {
	key := arg(args, 0)
	out := map[string]any{}
	out["save"] = errText(c.SaveState(ctx, stateStore, key, []byte(`{"qty":1}`), nil))
	first, err := c.GetState(ctx, stateStore, key, nil)
	out["first"] = item(first, err)
	out["save_with_etag"] = errText(c.SaveStateWithETag(ctx, stateStore, key, []byte(`{"qty":2}`), first.Etag, nil))
	out["second"] = item(c.GetState(ctx, stateStore, key, nil))
	out["save_with_stale_etag"] = errText(c.SaveStateWithETag(ctx, stateStore, key, []byte(`{"qty":3}`), first.Etag, nil))
	out["after_stale_save"] = item(c.GetState(ctx, stateStore, key, nil))
	out["delete_with_stale_etag"] = errText(c.DeleteStateWithETag(ctx, stateStore, key, &dapr.ETag{Value: first.Etag}, nil, nil))
	second, err := c.GetState(ctx, stateStore, key, nil)
	if err != nil {
		fail("client: %v", err)
	}
	out["delete_with_etag"] = errText(c.DeleteStateWithETag(ctx, stateStore, key, &dapr.ETag{Value: second.Etag}, nil, nil))
	out["after_delete"] = item(c.GetState(ctx, stateStore, key, nil))

	firstWrite := dapr.StateOptions{Concurrency: dapr.StateConcurrencyFirstWrite}
	fw := key + "-first-write"
	out["first_write"] = errText(c.SaveState(ctx, stateStore, fw, []byte("a"), nil, dapr.WithConcurrency(firstWrite.Concurrency)))
	out["second_first_write"] = errText(c.SaveState(ctx, stateStore, fw, []byte("b"), nil, dapr.WithConcurrency(firstWrite.Concurrency)))
	out["after_first_write"] = item(c.GetState(ctx, stateStore, fw, nil))
	emit(out)
}

func bulkItems(items []*dapr.BulkStateItem, err error) any {
	if err != nil {
		return map[string]any{"error": errText(err)}
	}
	got := map[string]any{}
	for _, it := range items {
		got[it.Key] = map[string]any{"value": string(it.Value), "etag": it.Etag, "error": it.Error}
	}
	return got
}

func stateBulk(ctx context.Context, c dapr.Client, args []string) {
	prefix := arg(args, 0)
	a, b, cKey := prefix+"-a", prefix+"-b", prefix+"-c"
	out := map[string]any{}
	out["save_bulk"] = errText(c.SaveBulkState(ctx, stateStore,
		&dapr.SetStateItem{Key: a, Value: []byte("1")},
		&dapr.SetStateItem{Key: b, Value: []byte("2")},
		&dapr.SetStateItem{Key: cKey, Value: []byte(`{"three":3}`), Metadata: map[string]string{"contentType": "application/json"}},
	))
	out["get_bulk"] = bulkItems(c.GetBulkState(ctx, stateStore, []string{a, b, cKey, prefix + "-missing"}, nil, 2))
	out["delete_bulk"] = errText(c.DeleteBulkState(ctx, stateStore, []string{a, b}, nil))
	out["after_delete"] = bulkItems(c.GetBulkState(ctx, stateStore, []string{a, b, cKey}, nil, 0))
	emit(out)
}

func stateTransaction(ctx context.Context, c dapr.Client, args []string) {
	prefix := arg(args, 0)
	a, b := prefix+"-a", prefix+"-b"
	out := map[string]any{}
	out["seed"] = errText(c.SaveState(ctx, stateStore, a, []byte("old"), nil))
	seeded, err := c.GetState(ctx, stateStore, a, nil)
	if err != nil {
		fail("client: %v", err)
	}
	out["transaction"] = errText(c.ExecuteStateTransaction(ctx, stateStore, nil, []*dapr.StateOperation{
		{Type: dapr.StateOperationTypeUpsert, Item: &dapr.SetStateItem{Key: b, Value: []byte("new")}},
		{Type: dapr.StateOperationTypeDelete, Item: &dapr.SetStateItem{Key: a, Etag: &dapr.ETag{Value: seeded.Etag}}},
	}))
	out["after"] = bulkItems(c.GetBulkState(ctx, stateStore, []string{a, b}, nil, 0))
	// A stale ETag (a's old one, not b's) fails the whole transaction: the upsert beside it is not applied.
	out["stale_transaction"] = errText(c.ExecuteStateTransaction(ctx, stateStore, nil, []*dapr.StateOperation{
		{Type: dapr.StateOperationTypeUpsert, Item: &dapr.SetStateItem{Key: a, Value: []byte("resurrected")}},
		{Type: dapr.StateOperationTypeDelete, Item: &dapr.SetStateItem{Key: b, Etag: &dapr.ETag{Value: seeded.Etag}}},
	}))
	out["after_stale"] = bulkItems(c.GetBulkState(ctx, stateStore, []string{a, b}, nil, 0))
	emit(out)
}

// publish TOPIC MARKER: one event with PublishEvent and two with PublishEvents (bulk).
func publish(ctx context.Context, c dapr.Client, args []string) {
	topic, marker := arg(args, 0), arg(args, 1)
	out := map[string]any{}
	out["publish"] = errText(c.PublishEvent(ctx, pubsubName, topic, map[string]any{"marker": marker, "n": 1}))
	bulk := c.PublishEvents(ctx, pubsubName, topic, []any{
		map[string]any{"marker": marker, "n": 2},
		map[string]any{"marker": marker, "n": 3},
	})
	out["publish_events"] = errText(bulk.Error)
	out["publish_events_failed"] = len(bulk.FailedEvents)
	emit(out)
}

// stream TOPIC MARKER: a streaming subscription (SubscribeTopicEventsAlpha1) that asks for
// a retry of the first delivery and acknowledges the second, then one with a handler.
func stream(ctx context.Context, c dapr.Client, args []string) {
	topic, marker := arg(args, 0), arg(args, 1)
	out := map[string]any{}
	sub, err := c.Subscribe(ctx, dapr.SubscriptionOptions{PubsubName: pubsubName, Topic: topic})
	if err != nil {
		out["subscribe"] = errText(err)
		emit(out)
		return
	}
	out["subscribe"] = ""
	out["publish"] = errText(c.PublishEvent(ctx, pubsubName, topic, map[string]any{"marker": marker}))
	deliveries := []map[string]any{}
	for i := 0; i < 2; i++ {
		msg, err := sub.Receive()
		if err != nil {
			out["receive"] = errText(err)
			break
		}
		deliveries = append(deliveries, map[string]any{"id": msg.ID, "topic": msg.Topic, "data": msg.Data, "content_type": msg.DataContentType})
		if i == 0 {
			out["retry"] = errText(msg.Retry())
		} else {
			out["success"] = errText(msg.Success())
		}
	}
	out["deliveries"] = deliveries
	out["close"] = errText(sub.Close())

	handled := make(chan map[string]any, 1)
	stop, err := c.SubscribeWithHandler(ctx, dapr.SubscriptionOptions{PubsubName: pubsubName, Topic: topic + "-handler"},
		func(e *common.TopicEvent) common.SubscriptionResponseStatus {
			handled <- map[string]any{"topic": e.Topic, "data": e.Data}
			return common.SubscriptionResponseStatusSuccess
		})
	out["subscribe_with_handler"] = errText(err)
	if err == nil {
		out["publish_to_handler"] = errText(c.PublishEvent(ctx, pubsubName, topic+"-handler", map[string]any{"marker": marker}))
		select {
		case got := <-handled:
			out["handled"] = got
		case <-ctx.Done():
			out["handled"] = "timed out"
		}
		out["stop_handler"] = errText(stop())
	}
	emit(out)
}

// configuration STORE KEY EXPECTED: get KEY, subscribe to it, print {"subscribed": ID},
// wait for an update to EXPECTED (the test writes it), then unsubscribe.
func configuration(ctx context.Context, c dapr.Client, args []string) {
	key, expected := arg(args, 0), arg(args, 1)
	got, err := c.GetConfigurationItems(ctx, configStore, []string{key})
	values := map[string]string{}
	for k, v := range got {
		values[k] = v.Value
	}
	emit(map[string]any{"get": values, "get_error": errText(err)})

	updates := make(chan string, 16)
	id, err := c.SubscribeConfigurationItems(ctx, configStore, []string{key},
		func(_ string, items map[string]*dapr.ConfigurationItem) {
			if it, ok := items[key]; ok {
				updates <- it.Value
			}
		})
	emit(map[string]any{"subscribed": id, "subscribe_error": errText(err)})
	if err != nil {
		return
	}
	// The test writes EXPECTED once it has read the line above; wait for it to arrive.
	seen := []string{}
	for {
		select {
		case v := <-updates:
			seen = append(seen, v)
			if v != expected {
				continue
			}
		case <-ctx.Done():
			emit(map[string]any{"updates": seen, "update_error": "timed out"})
			return
		}
		break
	}
	emit(map[string]any{"updates": seen, "unsubscribe": errText(c.UnsubscribeConfigurationItems(ctx, configStore, id))})
}

func lock(ctx context.Context, c dapr.Client, args []string) {
	resource := arg(args, 0)
	try := func(owner string) any {
		r, err := c.TryLockAlpha1(ctx, lockStore, &dapr.LockRequest{ResourceID: resource, LockOwner: owner, ExpiryInSeconds: 30})
		if err != nil {
			return errText(err)
		}
		return r.Success
	}
	unlock := func(owner string) any {
		r, err := c.UnlockAlpha1(ctx, lockStore, &dapr.UnlockRequest{ResourceID: resource, LockOwner: owner})
		if err != nil {
			return errText(err)
		}
		return r.Status
	}
	out := map[string]any{}
	out["lock_1"] = try("worker-1")
	out["lock_2"] = try("worker-2")
	out["unlock_2"] = unlock("worker-2")
	out["unlock_1"] = unlock("worker-1")
	out["unlock_again"] = unlock("worker-1")
	out["lock_2_after"] = try("worker-2")
	emit(out)
}

func secrets(ctx context.Context, c dapr.Client, args []string) {
	name, missing := arg(args, 0), arg(args, 1)
	out := map[string]any{}
	secret, err := c.GetSecret(ctx, secretStore, name, nil)
	out["get"], out["get_error"] = secret, errText(err)
	_, err = c.GetSecret(ctx, secretStore, missing, nil)
	out["missing_error"] = errText(err)
	bulk, err := c.GetBulkSecret(ctx, secretStore, nil)
	out["bulk"], out["bulk_error"] = bulk[name], errText(err) // only the one asked for: the rest is the environment
	emit(out)
}

func metadata(ctx context.Context, c dapr.Client, args []string) {
	out := map[string]any{}
	if len(args) >= 2 {
		out["set"] = errText(c.SetMetadata(ctx, args[0], args[1]))
	}
	md, err := c.GetMetadata(ctx)
	if err != nil {
		out["get_error"] = errText(err)
		emit(out)
		return
	}
	components := map[string]any{}
	for _, comp := range md.RegisteredComponents {
		components[comp.Name] = map[string]any{"type": comp.Type, "version": comp.Version, "capabilities": comp.Capabilities}
	}
	subs := []map[string]any{}
	for _, s := range md.Subscriptions {
		subs = append(subs, map[string]any{"pubsub": s.PubsubName, "topic": s.Topic})
	}
	out["id"] = md.ID
	out["components"] = components
	out["extended"] = md.ExtendedMetadata
	out["subscriptions"] = subs
	emit(out)
}

// invoke APP_ID: the target app's echo method with each invocation call of the SDK, and
// its fail method, whose error must come back to this caller.
func invoke(ctx context.Context, c dapr.Client, args []string) {
	appID := arg(args, 0)
	answer := func(body []byte, err error) any {
		if err != nil {
			return map[string]any{"error": errText(err)}
		}
		var v any
		if jerr := json.Unmarshal(body, &v); jerr != nil {
			return map[string]any{"raw": string(body)}
		}
		return v
	}
	out := map[string]any{}
	out["with_content"] = answer(c.InvokeMethodWithContent(ctx, appID, "echo?tenant=acme", "post",
		&dapr.DataContent{ContentType: "text/plain", Data: []byte("hello from Go")}))
	out["without_content"] = answer(c.InvokeMethod(ctx, appID, "echo", "get"))
	out["custom_content"] = answer(c.InvokeMethodWithCustomContent(ctx, appID, "echo", "put", "application/json",
		map[string]any{"sku": "A-1", "qty": 2}))
	out["fail"] = answer(c.InvokeMethod(ctx, appID, "fail", "post"))
	out["unknown_app"] = answer(c.InvokeMethod(ctx, appID+"-nobody", "echo", "get"))
	emit(out)
}
