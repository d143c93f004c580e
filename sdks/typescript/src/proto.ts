/**
 * Every message, enum and service of `proto/herald/v1`, as protoc-gen-es generates them
 * (`src/gen/`, written by `cargo run -p sdk-gen`): message types, their `…Schema`
 * descriptors for `create`, `toJson` and friends from `@bufbuild/protobuf`, and enums.
 */

export * from "./gen/herald/v1/admin_pb.js";
export * from "./gen/herald/v1/catalog_pb.js";
export * from "./gen/herald/v1/deliveries_pb.js";
export * from "./gen/herald/v1/endpoints_pb.js";
export * from "./gen/herald/v1/events_pb.js";
