package io.ottava.sdktest;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.google.protobuf.Any;
import com.google.protobuf.ByteString;
import com.google.protobuf.Empty;
import io.dapr.v1.AppCallbackGrpc;
import io.dapr.v1.CommonProtos;
import io.dapr.v1.DaprAppCallbackProtos;
import io.grpc.Server;
import io.grpc.ServerBuilder;
import io.grpc.stub.StreamObserver;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * A Dapr app written with the Java SDK and no Spring, the way the SDK's own examples write
 * one (examples/.../pubsub/grpc/SubscriberGrpcService.java, .../invoke/grpc/HelloWorldService.java):
 * grpc's {@code ServerBuilder} serving the SDK's generated {@code AppCallbackGrpc} service.
 *
 * <p>It subscribes to pubsub/$TOPICS (comma-separated; "orders" if unset) and appends each
 * delivery to $EVENTS_FILE as a JSON line; it answers every invoked method with what it
 * received (method, verb, query, content type, body) and its $APP_ID. It listens on
 * $APP_PORT, which {@code ottava run --app-port} sets.
 */
public final class App extends AppCallbackGrpc.AppCallbackImplBase {
  private static final ObjectMapper JSON = new ObjectMapper();
  private final Path eventsFile = Path.of(System.getenv("EVENTS_FILE"));
  private final String appId = System.getenv("APP_ID");
  private final String[] topics = System.getenv().getOrDefault("TOPICS", "orders").split(",");

  public static void main(String[] args) throws Exception {
    int port = Integer.parseInt(System.getenv("APP_PORT"));
    Server server = ServerBuilder.forPort(port).addService(new App()).build().start();
    Runtime.getRuntime().addShutdownHook(new Thread(server::shutdown));
    System.out.println("java app listening on " + port);
    server.awaitTermination();
  }

  @Override
  public void listTopicSubscriptions(Empty request,
      StreamObserver<DaprAppCallbackProtos.ListTopicSubscriptionsResponse> responseObserver) {
    DaprAppCallbackProtos.ListTopicSubscriptionsResponse.Builder response =
        DaprAppCallbackProtos.ListTopicSubscriptionsResponse.newBuilder();
    for (String topic : topics) {
      response.addSubscriptions(DaprAppCallbackProtos.TopicSubscription.newBuilder()
          .setPubsubName("pubsub").setTopic(topic));
    }
    responseObserver.onNext(response.build());
    responseObserver.onCompleted();
  }

  @Override
  public void onTopicEvent(DaprAppCallbackProtos.TopicEventRequest request,
      StreamObserver<DaprAppCallbackProtos.TopicEventResponse> responseObserver) {
    Map<String, Object> line = new LinkedHashMap<>();
    line.put("topic", request.getTopic());
    line.put("pubsub", request.getPubsubName());
    line.put("id", request.getId());
    line.put("data_content_type", request.getDataContentType());
    line.put("data", request.getData().toStringUtf8());
    try {
      synchronized (this) {
        Files.writeString(eventsFile, JSON.writeValueAsString(line) + "\n", StandardCharsets.UTF_8,
            StandardOpenOption.CREATE, StandardOpenOption.APPEND);
      }
    } catch (IOException e) {
      responseObserver.onError(e);
      return;
    }
    responseObserver.onNext(DaprAppCallbackProtos.TopicEventResponse.newBuilder()
        .setStatus(DaprAppCallbackProtos.TopicEventResponse.TopicEventResponseStatus.SUCCESS).build());
    responseObserver.onCompleted();
  }

  @Override
  public void onInvoke(CommonProtos.InvokeRequest request, StreamObserver<CommonProtos.InvokeResponse> responseObserver) {
    Map<String, Object> echo = new LinkedHashMap<>();
    echo.put("app_id", appId);
    echo.put("method", request.getMethod());
    echo.put("verb", request.getHttpExtension().getVerb().name());
    echo.put("query", request.getHttpExtension().getQuerystring());
    echo.put("content_type", request.getContentType());
    echo.put("body", request.getData().getValue().toStringUtf8());
    try {
      byte[] body = JSON.writeValueAsBytes(echo);
      responseObserver.onNext(CommonProtos.InvokeResponse.newBuilder()
          .setData(Any.newBuilder().setValue(ByteString.copyFrom(body)))
          .setContentType("application/json")
          .build());
      responseObserver.onCompleted();
    } catch (IOException e) {
      responseObserver.onError(e);
    }
  }
}
