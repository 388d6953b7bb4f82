package io.ottava.sdktest;

import com.fasterxml.jackson.databind.ObjectMapper;
import io.dapr.client.DaprClient;
import io.dapr.client.DaprClientBuilder;
import io.dapr.client.DaprPreviewClient;
import io.dapr.client.domain.ComponentMetadata;
import io.dapr.client.domain.ConfigurationItem;
import io.dapr.client.domain.DaprMetadata;
import io.dapr.client.domain.HttpExtension;
import io.dapr.client.domain.State;
import io.dapr.client.domain.StateOptions;
import io.dapr.client.domain.SubscribeConfigurationResponse;
import io.dapr.client.domain.TransactionalStateOperation;
import io.dapr.client.domain.UnlockResponseStatus;
import io.dapr.client.DaprHttp;
import io.dapr.exceptions.DaprException;
import io.dapr.utils.TypeRef;
import java.time.Duration;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;
import reactor.core.Disposable;

/**
 * A Dapr user's client, one scenario per run: {@code Client SCENARIO ARGS...}.
 *
 * <p>It finds the sidecar from $DAPR_HTTP_PORT and $DAPR_GRPC_PORT, as any app under
 * {@code ottava run} does, and prints what it observed as JSON lines on stdout (the last
 * line is the scenario's result), for tests/test_sdk_java.py to judge. A call that fails
 * unexpectedly ends the run with a stack trace and exit status 1.
 */
public final class Client {
  private static final ObjectMapper JSON = new ObjectMapper();
  private static final String STATE = "statestore";
  private static final Duration CALL = Duration.ofSeconds(20);

  private Client() {
  }

  public static void main(String[] args) {
    try {
      print(run(args));
    } catch (Throwable e) {
      e.printStackTrace();
      System.exit(1);
    }
    System.exit(0); // gRPC and reactor threads would otherwise keep the JVM a while
  }

  static Map<String, Object> run(String[] args) throws Exception {
    String scenario = args[0];
    Map<String, Object> result;
    try (DaprClient client = new DaprClientBuilder().build();
        DaprPreviewClient preview = new DaprClientBuilder().buildPreviewClient()) {
      // Over HTTP: GET /v1.0/healthz/outbound until it answers.
      client.waitForSidecar(20_000).block();
      switch (scenario) {
        case "state" -> result = state(client, args[1]);
        case "bulk" -> result = bulkAndTransaction(client, args[1]);
        case "publish" -> result = publish(client, args[1], args[2]);
        case "stream" -> result = stream(client, preview, args[1], args[2]);
        case "config" -> result = configuration(client, args[1], args[2]);
        case "lock" -> result = lock(preview, args[1]);
        case "secret" -> result = secret(client, args[1]);
        case "metadata" -> result = metadata(client);
        case "invoke" -> result = invoke(client, args[1]);
        default -> throw new IllegalArgumentException("unknown scenario " + scenario);
      }
    }
    return result;
  }

  static void print(Map<String, Object> line) throws Exception {
    System.out.println(JSON.writeValueAsString(line));
    System.out.flush();
  }

  /** The error a call ended with: Dapr's error code (the gRPC status for gRPC calls) and message. */
  static Map<String, Object> failure(Runnable call) {
    Map<String, Object> out = new LinkedHashMap<>();
    try {
      call.run();
      out.put("code", null);
    } catch (DaprException e) {
      out.put("code", e.getErrorCode());
      out.put("message", e.getMessage());
    }
    return out;
  }

  static Map<String, Object> state(DaprClient client, String key) {
    Map<String, Object> out = new LinkedHashMap<>();
    client.saveState(STATE, key, "one").block(CALL);
    State<String> first = client.getState(STATE, key, String.class).block(CALL);
    out.put("first", List.of(first.getValue(), first.getEtag()));

    client.saveState(STATE, key, first.getEtag(), "two", null).block(CALL);
    State<String> second = client.getState(STATE, key, String.class).block(CALL);
    out.put("second", List.of(second.getValue(), second.getEtag()));

    out.put("stale_save", failure(() -> client.saveState(STATE, key, first.getEtag(), "three", null).block(CALL)));
    out.put("after_stale_save", client.getState(STATE, key, String.class).block(CALL).getValue());
    out.put("stale_delete", failure(() -> client.deleteState(STATE, key, first.getEtag(), null).block(CALL)));
    client.deleteState(STATE, key, second.getEtag(), null).block(CALL);
    State<String> gone = client.getState(STATE, key, String.class).block(CALL);
    out.put("deleted", mapOf("value", gone.getValue(), "etag", gone.getEtag()));

    StateOptions firstWrite = new StateOptions(null, StateOptions.Concurrency.FIRST_WRITE);
    String fresh = key + "-first-write";
    client.saveState(STATE, fresh, null, "a", firstWrite).block(CALL);
    out.put("first_write_again", failure(() -> client.saveState(STATE, fresh, null, "b", firstWrite).block(CALL)));
    out.put("first_write_value", client.getState(STATE, fresh, String.class).block(CALL).getValue());
    return out;
  }

  static Map<String, Object> bulkAndTransaction(DaprClient client, String prefix) {
    String a = prefix + "-a";
    String b = prefix + "-b";
    String c = prefix + "-c";
    client.saveBulkState(STATE, List.of(item(a, "1"), item(b, "2"))).block(CALL);
    Map<String, Object> out = new LinkedHashMap<>();
    out.put("after_bulk_save", values(client.getBulkState(STATE, List.of(a, b, c), String.class).block(CALL)));
    List<TransactionalStateOperation<?>> operations = List.of(
        new TransactionalStateOperation<>(TransactionalStateOperation.OperationType.UPSERT, item(c, "3")),
        new TransactionalStateOperation<>(TransactionalStateOperation.OperationType.DELETE, new State<>(a)));
    client.executeStateTransaction(STATE, operations).block(CALL);
    out.put("after_transaction", values(client.getBulkState(STATE, List.of(a, b, c), String.class).block(CALL)));
    return out;
  }

  static State<String> item(String key, String value) {
    return new State<>(key, value, (String) null);
  }

  static Map<String, Object> values(List<State<String>> states) {
    Map<String, Object> out = new TreeMap<>();
    for (State<String> s : states) {
      out.put(s.getKey(), s.getValue());
    }
    return out;
  }

  static Map<String, Object> publish(DaprClient client, String topic, String marker) {
    client.publishEvent("pubsub", topic, Map.of("marker", marker)).block(CALL);
    return mapOf("published", marker);
  }

  /**
   * A streaming subscription (SubscribeTopicEventsAlpha1), which needs no app port. It is
   * open once the sidecar has it, which the SDK does not report: publish until one arrives.
   */
  static Map<String, Object> stream(DaprClient client, DaprPreviewClient preview, String topic, String marker)
      throws Exception {
    BlockingQueue<Object> received = new LinkedBlockingQueue<>();
    Disposable subscription = preview.subscribeToTopic("pubsub", topic, new TypeRef<Map<String, Object>>() { })
        .subscribe(received::add, received::add);
    try {
      long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(20);
      int published = 0;
      while (System.nanoTime() < deadline) {
        client.publishEvent("pubsub", topic, Map.of("marker", marker, "n", published++)).block(CALL);
        Object got = received.poll(300, TimeUnit.MILLISECONDS);
        if (got instanceof Throwable error) {
          throw new AssertionError("the stream failed", error);
        }
        if (got != null) {
          return mapOf("received", got, "published", published);
        }
      }
      throw new AssertionError("no event arrived on the stream within 20 s");
    } finally {
      subscription.dispose();
    }
  }

  /**
   * Reads KEY, subscribes to it and prints each update as a line; ends when KEY reads
   * WANTED, then unsubscribes. The test changes the item once it sees the first line.
   */
  static Map<String, Object> configuration(DaprClient client, String key, String wanted) throws Exception {
    ConfigurationItem item = client.getConfiguration("configstore", key).block(CALL);
    print(mapOf("get", item == null ? null : item.getValue()));
    BlockingQueue<Object> updates = new LinkedBlockingQueue<>();
    Disposable subscription = client.subscribeConfiguration("configstore", key)
        .subscribe(updates::add, updates::add);
    try {
      String id = null;
      List<String> seen = new ArrayList<>();
      long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(20);
      while (System.nanoTime() < deadline) {
        Object got = updates.poll(200, TimeUnit.MILLISECONDS);
        if (got instanceof Throwable error) {
          throw new AssertionError("the configuration subscription failed", error);
        }
        if (got == null) {
          continue;
        }
        SubscribeConfigurationResponse response = (SubscribeConfigurationResponse) got;
        id = response.getSubscriptionId();
        ConfigurationItem changed = response.getItems().get(key);
        String value = changed == null ? null : changed.getValue();
        print(mapOf("subscription_id", id, "value", value));
        seen.add(value);
        if (wanted.equals(value)) {
          boolean unsubscribed = client.unsubscribeConfiguration(id, "configstore").block(CALL).getIsUnsubscribed();
          return mapOf("subscription_id", id, "seen", seen, "unsubscribed", unsubscribed);
        }
      }
      throw new AssertionError("configuration " + key + " never read " + wanted + "; saw " + seen);
    } finally {
      subscription.dispose();
    }
  }

  static Map<String, Object> lock(DaprPreviewClient preview, String resource) {
    Map<String, Object> out = new LinkedHashMap<>();
    out.put("worker1_lock", preview.tryLock("lockstore", resource, "worker-1", 30).block(CALL));
    out.put("worker2_lock", preview.tryLock("lockstore", resource, "worker-2", 30).block(CALL));
    out.put("worker2_unlock", status(preview.unlock("lockstore", resource, "worker-2").block(CALL)));
    out.put("worker1_unlock", status(preview.unlock("lockstore", resource, "worker-1").block(CALL)));
    out.put("unlock_again", status(preview.unlock("lockstore", resource, "worker-1").block(CALL)));
    out.put("worker2_relock", preview.tryLock("lockstore", resource, "worker-2", 30).block(CALL));
    return out;
  }

  static String status(UnlockResponseStatus status) {
    return status.name();
  }

  static Map<String, Object> secret(DaprClient client, String name) {
    Map<String, Object> out = new LinkedHashMap<>();
    out.put("secret", client.getSecret("secretstore", name).block(CALL));
    out.put("missing", failure(() -> client.getSecret("secretstore", "OTTAVA_NO_SUCH_SECRET").block(CALL)));
    Map<String, Map<String, String>> bulk = client.getBulkSecret("secretstore").block(CALL);
    out.put("bulk_has_it", bulk.containsKey(name) ? bulk.get(name) : null);
    return out;
  }

  static Map<String, Object> metadata(DaprClient client) {
    DaprMetadata metadata = client.getMetadata().block(CALL);
    Map<String, Object> components = new TreeMap<>();
    Map<String, Object> capabilities = new TreeMap<>();
    for (ComponentMetadata c : metadata.getComponents()) {
      components.put(c.getName(), c.getType());
      capabilities.put(c.getName(), c.getCapabilities());
    }
    return mapOf("id", metadata.getId(), "components", components, "capabilities", capabilities);
  }

  /** Service invocation (the SDK sends it over HTTP) to APP_ID's `echo` method, with a body and a query. */
  static Map<String, Object> invoke(DaprClient client, String appId) {
    Map<String, Object> out = new LinkedHashMap<>();
    HttpExtension post = new HttpExtension(DaprHttp.HttpMethods.POST, Map.of("size", List.of("large")), Map.of());
    out.put("post", client.invokeMethod(appId, "echo", Map.of("item", "coffee"), post,
        new TypeRef<Map<String, Object>>() { }).block(CALL));
    out.put("get", client.invokeMethod(appId, "echo", null, HttpExtension.GET,
        new TypeRef<Map<String, Object>>() { }).block(CALL));
    out.put("unknown_app", failure(() -> client.invokeMethod(appId + "-nobody", "echo", null, HttpExtension.GET,
        new TypeRef<Map<String, Object>>() { }).block(CALL)));
    return out;
  }

  static Map<String, Object> mapOf(Object... pairs) {
    Map<String, Object> out = new LinkedHashMap<>();
    for (int i = 0; i < pairs.length; i += 2) {
      out.put((String) pairs[i], pairs[i + 1]);
    }
    return out;
  }
}
