// Scenarios written with the Dapr JavaScript SDK's DaprClient, one per run:
//
//   DAPR_HTTP_PORT=… DAPR_GRPC_PORT=… node client.js PROTOCOL SCENARIO 'ARGS-AS-JSON'
//
// PROTOCOL is http or grpc (the client's communicationProtocol). Each scenario does what
// a user would do and prints what it saw as one line `RESULT {json}`; tests/test_sdk_js.py
// asserts on it. An SDK call that fails is recorded ({ok: false, error}) where the
// scenario expects failures, and ends the run (exit 1, the error on stderr) elsewhere.
"use strict";

const { DaprClient, CommunicationProtocolEnum, HttpMethod, LogLevel } = require("@dapr/dapr");

const [protocolName, scenario, rawArgs] = process.argv.slice(2);
const args = JSON.parse(rawArgs || "{}");

function result(value) {
  console.log("RESULT " + JSON.stringify(value));
}

// The HTTP client's state.save and state.delete return {error} instead of throwing, the
// gRPC client's throw: one shape for both.
async function attempt(call) {
  try {
    const answer = await call();
    if (answer && answer.error) {
      return { ok: false, error: String(answer.error) };
    }
    return { ok: true, value: answer === undefined ? null : answer };
  } catch (error) {
    return { ok: false, error: String(error?.message ?? error), name: error?.name ?? null };
  }
}

async function etagOf(client, store, key) {
  const [item] = await client.state.getBulk(store, [key]);
  return item?.etag ?? null;
}

const scenarios = {
  async state_etag(client, { store, key }) {
    const seen = {};
    seen.save = await attempt(() => client.state.save(store, [{ key, value: { qty: 1 } }]));
    seen.first = await client.state.get(store, key);
    const first = await etagOf(client, store, key);
    seen.firstEtag = first;
    seen.saveWithEtag = await attempt(() => client.state.save(store, [{ key, value: { qty: 2 }, etag: first }]));
    const second = await etagOf(client, store, key);
    seen.secondEtag = second;
    seen.saveWithStaleEtag = await attempt(() =>
      client.state.save(store, [{ key, value: { qty: 3 }, etag: first }]),
    );
    seen.afterStale = await client.state.get(store, key);
    seen.deleteWithStaleEtag = await attempt(() => client.state.delete(store, key, { etag: first }));
    seen.deleteWithEtag = await attempt(() => client.state.delete(store, key, { etag: second }));
    seen.afterDelete = (await client.state.get(store, key)) ?? null;
    return seen;
  },

  async state_bulk(client, { store, keys, missing }) {
    const items = keys.map((key, i) => ({ key, value: { n: i + 1 } }));
    const save = await attempt(() => client.state.save(store, items));
    const bulk = await client.state.getBulk(store, [...keys, missing]);
    // HTTP items carry the value as `data`, gRPC's too; a missing key has none.
    return { save, items: bulk.map((i) => ({ key: i.key, data: i.data ?? null, etag: i.etag ?? null })) };
  },

  async state_transaction(client, { store, keep, drop, added }) {
    // gRPC encodes each value with Buffer.from(value): it must be a string there.
    const value = (v) => (protocolName === "grpc" ? JSON.stringify(v) : v);
    await client.state.save(store, [
      { key: keep, value: { n: 1 } },
      { key: drop, value: { n: 2 } },
    ]);
    const transaction = await attempt(() =>
      client.state.transaction(store, [
        { operation: "upsert", request: { key: added, value: value({ n: 3 }) } },
        { operation: "upsert", request: { key: keep, value: value({ n: 10 }) } },
        { operation: "delete", request: { key: drop } },
      ]),
    );
    const bulk = await client.state.getBulk(store, [keep, drop, added]);
    return { transaction, items: Object.fromEntries(bulk.map((i) => [i.key, i.data ?? null])) };
  },

  async publish(client, { pubsub, topic, data }) {
    return { publish: await attempt(() => client.pubsub.publish(pubsub, topic, data)) };
  },

  async publish_bulk(client, { pubsub, topic, messages }) {
    const answer = await attempt(() => client.pubsub.publishBulk(pubsub, topic, messages));
    return { publishBulk: answer };
  },

  async configuration_get(client, { store, keys }) {
    return { get: await attempt(() => client.configuration.get(store, keys)) };
  },

  // Prints SUBSCRIBED once the subscription call returned, then waits (up to `waitMs`)
  // for an update whose value starts with `until`, printing each update as UPDATE {json}.
  // The SDK does not tell when the sidecar has the subscription: the test writes again
  // until an update arrives.
  async configuration_subscribe(client, { store, key, until, waitMs }) {
    const updates = [];
    let done;
    const finished = new Promise((resolve) => (done = resolve));
    const subscribed = await attempt(() =>
      client.configuration.subscribeWithKeys(store, [key], async (update) => {
        updates.push(update.items);
        console.log("UPDATE " + JSON.stringify(update.items));
        if (String(update.items[key]?.value ?? "").startsWith(until)) done();
      }),
    );
    if (!subscribed.ok) return { subscribed };
    console.log("SUBSCRIBED");
    const timer = setTimeout(done, waitMs);
    await finished;
    clearTimeout(timer);
    await subscribed.value.stop();
    return { subscribed: { ok: true }, updates };
  },

  async lock(client, { store, resource }) {
    const seen = {};
    seen.lock = await client.lock.lock(store, resource, "worker-1", 30);
    seen.lockTaken = await client.lock.lock(store, resource, "worker-2", 30);
    seen.unlockByOther = await client.lock.unlock(store, resource, "worker-2");
    seen.unlock = await client.lock.unlock(store, resource, "worker-1");
    seen.unlockAgain = await client.lock.unlock(store, resource, "worker-1");
    seen.relock = await client.lock.lock(store, resource, "worker-2", 30);
    await client.lock.unlock(store, resource, "worker-2");
    return seen;
  },

  async secret(client, { store, name, missing }) {
    const get = await attempt(() => client.secret.get(store, name));
    const bulk = await attempt(() => client.secret.getBulk(store));
    const missingGet = await attempt(() => client.secret.get(store, missing));
    // Only the one secret the test set comes back from the bulk answer (the rest is the
    // sidecar's environment, which has no place in a test log).
    const fromBulk = bulk.ok ? (bulk.value[name] ?? null) : bulk;
    return { get, fromBulk, missing: missingGet };
  },

  async metadata(client, { key, value }) {
    const set = await attempt(() => client.metadata.set(key, value));
    const metadata = await client.metadata.get();
    return { set, metadata };
  },

  async invoke(client, { appId, body }) {
    const echo = await attempt(() => client.invoker.invoke(appId, "echo", HttpMethod.POST, body));
    const whoami = await attempt(() => client.invoker.invoke(appId, "whoami", HttpMethod.GET));
    return { echo, whoami };
  },

  // The app appId, asked to, invokes the app `to` with its own DaprServer client.
  async relay(client, { appId, to }) {
    return { relay: await attempt(() => client.invoker.invoke(appId, "relay", HttpMethod.POST, { to })) };
  },
};

async function main() {
  const run = scenarios[scenario];
  if (!run) throw new Error(`no scenario ${scenario}; known: ${Object.keys(scenarios).join(", ")}`);
  const client = new DaprClient({
    communicationProtocol: protocolName === "grpc" ? CommunicationProtocolEnum.GRPC : CommunicationProtocolEnum.HTTP,
    logger: { level: LogLevel.Warn },
  });
  await client.start();
  try {
    result(await run(client, args));
  } finally {
    await client.stop();
  }
}

main().then(
  () => process.exit(0),
  (error) => {
    console.error(error);
    process.exit(1);
  },
);
