// An app written with the Dapr JavaScript SDK's DaprServer, run behind `ottava run`:
//
//   ottava run --app-id ID --app-port P --app-protocol PROTOCOL -- node app.js PROTOCOL
//
// It subscribes to "orders" on "pubsub", and to "batches" with bulk delivery, appending
// each event to $EVENTS_FILE as a JSON line; it serves "echo" (POST) and "whoami" (GET)
// for invocation, and "relay" (POST {"to": APP-ID}), which invokes that app's "whoami"
// with the DaprServer's own client. The SDK finds its port ($APP_PORT) and the sidecar
// ($DAPR_HTTP_PORT / $DAPR_GRPC_PORT) from what `ottava run` sets; nothing here names a
// port.
"use strict";

const fs = require("node:fs");
const { DaprServer, CommunicationProtocolEnum, HttpMethod, LogLevel } = require("@dapr/dapr");

const protocol = process.argv[2] === "grpc" ? CommunicationProtocolEnum.GRPC : CommunicationProtocolEnum.HTTP;
const appId = process.env.APP_ID;
const eventsFile = process.env.EVENTS_FILE;

async function main() {
  const server = new DaprServer({
    serverHost: "127.0.0.1",
    communicationProtocol: protocol,
    logger: { level: LogLevel.Warn },
  });

  await server.pubsub.subscribe("pubsub", "orders", async (data) => {
    fs.appendFileSync(eventsFile, JSON.stringify({ topic: "orders", data }) + "\n");
  });

  // Batches: the sidecar delivers several events in one request; the callback sees each.
  await server.pubsub.subscribeBulk(
    "pubsub",
    "batches",
    async (data) => {
      fs.appendFileSync(eventsFile, JSON.stringify({ topic: "batches", data }) + "\n");
    },
    { maxMessagesCount: 10, maxAwaitDurationMs: 100 },
  );

  await server.invoker.listen(
    "echo",
    async (request) => ({ app: appId, body: request.body, contentType: request.metadata?.contentType ?? null }),
    { method: HttpMethod.POST },
  );
  await server.invoker.listen("whoami", async () => ({ app: appId }), { method: HttpMethod.GET });
  await server.invoker.listen(
    "relay",
    async (request) => {
      const { to } = JSON.parse(request.body);
      return { app: appId, relayed: await server.client.invoker.invoke(to, "whoami", HttpMethod.GET) };
    },
    { method: HttpMethod.POST },
  );

  await server.start();
  console.error(`js app ${appId} listening (${process.argv[2]})`);
}

process.on("SIGTERM", () => process.exit(0));
main().catch((error) => {
  console.error(error);
  process.exit(1);
});
