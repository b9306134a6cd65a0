export {
  FerryClient,
  loadServiceConfig,
  type BatchOutcome,
  type Bytes,
  type CallOptions,
  type EventInput,
  type FerryClientOptions,
  type HeadersInput,
  type PublishOptions,
} from "./client.js";
export { stderrLogger, type Logger } from "./logger.js";
export { credentialsFromEnv, readTokenFile, type Credentials, type TlsOptions } from "./credentials.js";
export {
  StreamPublisher,
  type PublishHandle,
  type StreamCallOptions,
  type StreamPublisherOptions,
  type StreamPublishOptions,
} from "./stream.js";
export { Code, FerryError, isFatalSubscribeError, isRetryablePublishError, type FieldViolation } from "./errors.js";
export type { Handler, SubscribeOptions } from "./subscriber.js";
export { AckLevel, type KafkaPosition, type PublishResult } from "./gen/ferry/v1/publisher.js";
export { AckIdStatus, DeliveryOrder, StartPosition, type Delivery, type ReceivedEvent } from "./gen/ferry/v1/subscriber.js";
export type { Header } from "./gen/ferry/v1/record.js";
