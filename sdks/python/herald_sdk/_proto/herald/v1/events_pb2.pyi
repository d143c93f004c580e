import datetime

from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from herald_sdk._proto.herald.v1 import catalog_pb2 as _catalog_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Event(_message.Message):
    __slots__ = ("id", "type", "type_name", "tenant_id", "environment", "occurred_at", "received_at", "payload", "payload_json", "idempotency_key", "cursor")
    ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    TYPE_NAME_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_AT_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_JSON_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    id: str
    type: _catalog_pb2.EventType
    type_name: str
    tenant_id: str
    environment: str
    occurred_at: _timestamp_pb2.Timestamp
    received_at: _timestamp_pb2.Timestamp
    payload: _struct_pb2.Struct
    payload_json: str
    idempotency_key: str
    cursor: str
    def __init__(self, id: _Optional[str] = ..., type: _Optional[_Union[_catalog_pb2.EventType, str]] = ..., type_name: _Optional[str] = ..., tenant_id: _Optional[str] = ..., environment: _Optional[str] = ..., occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., received_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., payload: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., payload_json: _Optional[str] = ..., idempotency_key: _Optional[str] = ..., cursor: _Optional[str] = ...) -> None: ...

class PublishRequest(_message.Message):
    __slots__ = ("tenant_id", "type", "type_name", "environment", "occurred_at", "payload", "payload_json", "idempotency_key", "omit_payload")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    TYPE_NAME_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_JSON_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    OMIT_PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    type: _catalog_pb2.EventType
    type_name: str
    environment: str
    occurred_at: _timestamp_pb2.Timestamp
    payload: _struct_pb2.Struct
    payload_json: str
    idempotency_key: str
    omit_payload: bool
    def __init__(self, tenant_id: _Optional[str] = ..., type: _Optional[_Union[_catalog_pb2.EventType, str]] = ..., type_name: _Optional[str] = ..., environment: _Optional[str] = ..., occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., payload: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., payload_json: _Optional[str] = ..., idempotency_key: _Optional[str] = ..., omit_payload: _Optional[bool] = ...) -> None: ...

class PublishResponse(_message.Message):
    __slots__ = ("event", "duplicate", "deliveries")
    EVENT_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    DELIVERIES_FIELD_NUMBER: _ClassVar[int]
    event: Event
    duplicate: bool
    deliveries: int
    def __init__(self, event: _Optional[_Union[Event, _Mapping]] = ..., duplicate: _Optional[bool] = ..., deliveries: _Optional[int] = ...) -> None: ...

class PublishBatchRequest(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[PublishRequest]
    def __init__(self, events: _Optional[_Iterable[_Union[PublishRequest, _Mapping]]] = ...) -> None: ...

class PublishBatchResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[PublishResponse]
    def __init__(self, results: _Optional[_Iterable[_Union[PublishResponse, _Mapping]]] = ...) -> None: ...

class PublishStreamRequest(_message.Message):
    __slots__ = ("request_id", "event")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    event: PublishRequest
    def __init__(self, request_id: _Optional[str] = ..., event: _Optional[_Union[PublishRequest, _Mapping]] = ...) -> None: ...

class PublishError(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class PublishStreamResponse(_message.Message):
    __slots__ = ("request_id", "published", "error")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PUBLISHED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    published: PublishResponse
    error: PublishError
    def __init__(self, request_id: _Optional[str] = ..., published: _Optional[_Union[PublishResponse, _Mapping]] = ..., error: _Optional[_Union[PublishError, _Mapping]] = ...) -> None: ...

class SubscribeRequest(_message.Message):
    __slots__ = ("tenant_id", "filters", "environment", "live", "earliest", "after_cursor", "since")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    LIVE_FIELD_NUMBER: _ClassVar[int]
    EARLIEST_FIELD_NUMBER: _ClassVar[int]
    AFTER_CURSOR_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    filters: _containers.RepeatedScalarFieldContainer[str]
    environment: str
    live: bool
    earliest: bool
    after_cursor: str
    since: _timestamp_pb2.Timestamp
    def __init__(self, tenant_id: _Optional[str] = ..., filters: _Optional[_Iterable[str]] = ..., environment: _Optional[str] = ..., live: _Optional[bool] = ..., earliest: _Optional[bool] = ..., after_cursor: _Optional[str] = ..., since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("time",)
    TIME_FIELD_NUMBER: _ClassVar[int]
    time: _timestamp_pb2.Timestamp
    def __init__(self, time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class SubscribeResponse(_message.Message):
    __slots__ = ("event", "heartbeat")
    EVENT_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    event: Event
    heartbeat: Heartbeat
    def __init__(self, event: _Optional[_Union[Event, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ...) -> None: ...

class GetEventRequest(_message.Message):
    __slots__ = ("id", "tenant_id")
    ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    tenant_id: str
    def __init__(self, id: _Optional[str] = ..., tenant_id: _Optional[str] = ...) -> None: ...

class ListEventsRequest(_message.Message):
    __slots__ = ("tenant_id", "filters", "environment", "received_after", "received_before", "page_size", "page_token")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_AFTER_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_BEFORE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    filters: _containers.RepeatedScalarFieldContainer[str]
    environment: str
    received_after: _timestamp_pb2.Timestamp
    received_before: _timestamp_pb2.Timestamp
    page_size: int
    page_token: str
    def __init__(self, tenant_id: _Optional[str] = ..., filters: _Optional[_Iterable[str]] = ..., environment: _Optional[str] = ..., received_after: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., received_before: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListEventsResponse(_message.Message):
    __slots__ = ("events", "next_page_token")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[Event]
    next_page_token: str
    def __init__(self, events: _Optional[_Iterable[_Union[Event, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ListEventTypesRequest(_message.Message):
    __slots__ = ("filters", "page_size", "page_token")
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    filters: _containers.RepeatedScalarFieldContainer[str]
    page_size: int
    page_token: str
    def __init__(self, filters: _Optional[_Iterable[str]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListEventTypesResponse(_message.Message):
    __slots__ = ("event_types", "next_page_token")
    EVENT_TYPES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    event_types: _containers.RepeatedCompositeFieldContainer[_catalog_pb2.EventTypeInfo]
    next_page_token: str
    def __init__(self, event_types: _Optional[_Iterable[_Union[_catalog_pb2.EventTypeInfo, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...
