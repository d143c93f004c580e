import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class WebhookFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WEBHOOK_FORMAT_UNSPECIFIED: _ClassVar[WebhookFormat]
    WEBHOOK_FORMAT_KEYGEN: _ClassVar[WebhookFormat]
    WEBHOOK_FORMAT_STANDARD: _ClassVar[WebhookFormat]

class SignatureScheme(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SIGNATURE_SCHEME_UNSPECIFIED: _ClassVar[SignatureScheme]
    SIGNATURE_SCHEME_KEYGEN: _ClassVar[SignatureScheme]
    SIGNATURE_SCHEME_STANDARD_WEBHOOKS: _ClassVar[SignatureScheme]

class KeygenAlgorithm(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    KEYGEN_ALGORITHM_UNSPECIFIED: _ClassVar[KeygenAlgorithm]
    KEYGEN_ALGORITHM_ED25519: _ClassVar[KeygenAlgorithm]
    KEYGEN_ALGORITHM_RSA_PSS_SHA256: _ClassVar[KeygenAlgorithm]
    KEYGEN_ALGORITHM_RSA_SHA256: _ClassVar[KeygenAlgorithm]
WEBHOOK_FORMAT_UNSPECIFIED: WebhookFormat
WEBHOOK_FORMAT_KEYGEN: WebhookFormat
WEBHOOK_FORMAT_STANDARD: WebhookFormat
SIGNATURE_SCHEME_UNSPECIFIED: SignatureScheme
SIGNATURE_SCHEME_KEYGEN: SignatureScheme
SIGNATURE_SCHEME_STANDARD_WEBHOOKS: SignatureScheme
KEYGEN_ALGORITHM_UNSPECIFIED: KeygenAlgorithm
KEYGEN_ALGORITHM_ED25519: KeygenAlgorithm
KEYGEN_ALGORITHM_RSA_PSS_SHA256: KeygenAlgorithm
KEYGEN_ALGORITHM_RSA_SHA256: KeygenAlgorithm

class SigningSettings(_message.Message):
    __slots__ = ("format", "schemes", "keygen_algorithm")
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    SCHEMES_FIELD_NUMBER: _ClassVar[int]
    KEYGEN_ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    format: WebhookFormat
    schemes: _containers.RepeatedScalarFieldContainer[SignatureScheme]
    keygen_algorithm: KeygenAlgorithm
    def __init__(self, format: _Optional[_Union[WebhookFormat, str]] = ..., schemes: _Optional[_Iterable[_Union[SignatureScheme, str]]] = ..., keygen_algorithm: _Optional[_Union[KeygenAlgorithm, str]] = ...) -> None: ...

class Endpoint(_message.Message):
    __slots__ = ("id", "tenant_id", "url", "filters", "enabled", "disabled_reason", "description", "metadata", "environment", "signing", "created_at", "updated_at", "retry_schedule_secs")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    DISABLED_REASON_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    SIGNING_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    RETRY_SCHEDULE_SECS_FIELD_NUMBER: _ClassVar[int]
    id: str
    tenant_id: str
    url: str
    filters: _containers.RepeatedScalarFieldContainer[str]
    enabled: bool
    disabled_reason: str
    description: str
    metadata: _containers.ScalarMap[str, str]
    environment: str
    signing: SigningSettings
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    retry_schedule_secs: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, id: _Optional[str] = ..., tenant_id: _Optional[str] = ..., url: _Optional[str] = ..., filters: _Optional[_Iterable[str]] = ..., enabled: _Optional[bool] = ..., disabled_reason: _Optional[str] = ..., description: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ..., environment: _Optional[str] = ..., signing: _Optional[_Union[SigningSettings, _Mapping]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., retry_schedule_secs: _Optional[_Iterable[int]] = ...) -> None: ...

class CreateEndpointRequest(_message.Message):
    __slots__ = ("tenant_id", "url", "filters", "description", "metadata", "environment", "signing", "disabled", "retry_schedule_secs")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    SIGNING_FIELD_NUMBER: _ClassVar[int]
    DISABLED_FIELD_NUMBER: _ClassVar[int]
    RETRY_SCHEDULE_SECS_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    url: str
    filters: _containers.RepeatedScalarFieldContainer[str]
    description: str
    metadata: _containers.ScalarMap[str, str]
    environment: str
    signing: SigningSettings
    disabled: bool
    retry_schedule_secs: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, tenant_id: _Optional[str] = ..., url: _Optional[str] = ..., filters: _Optional[_Iterable[str]] = ..., description: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ..., environment: _Optional[str] = ..., signing: _Optional[_Union[SigningSettings, _Mapping]] = ..., disabled: _Optional[bool] = ..., retry_schedule_secs: _Optional[_Iterable[int]] = ...) -> None: ...

class CreateEndpointResponse(_message.Message):
    __slots__ = ("endpoint", "secret")
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    SECRET_FIELD_NUMBER: _ClassVar[int]
    endpoint: Endpoint
    secret: str
    def __init__(self, endpoint: _Optional[_Union[Endpoint, _Mapping]] = ..., secret: _Optional[str] = ...) -> None: ...

class GetEndpointRequest(_message.Message):
    __slots__ = ("id", "tenant_id")
    ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    tenant_id: str
    def __init__(self, id: _Optional[str] = ..., tenant_id: _Optional[str] = ...) -> None: ...

class ListEndpointsRequest(_message.Message):
    __slots__ = ("tenant_id", "page_size", "page_token")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    page_size: int
    page_token: str
    def __init__(self, tenant_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListEndpointsResponse(_message.Message):
    __slots__ = ("endpoints", "next_page_token")
    ENDPOINTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    endpoints: _containers.RepeatedCompositeFieldContainer[Endpoint]
    next_page_token: str
    def __init__(self, endpoints: _Optional[_Iterable[_Union[Endpoint, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class FilterList(_message.Message):
    __slots__ = ("filters",)
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    filters: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, filters: _Optional[_Iterable[str]] = ...) -> None: ...

class Metadata(_message.Message):
    __slots__ = ("entries",)
    class EntriesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.ScalarMap[str, str]
    def __init__(self, entries: _Optional[_Mapping[str, str]] = ...) -> None: ...

class RetrySchedule(_message.Message):
    __slots__ = ("secs",)
    SECS_FIELD_NUMBER: _ClassVar[int]
    secs: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, secs: _Optional[_Iterable[int]] = ...) -> None: ...

class UpdateEndpointRequest(_message.Message):
    __slots__ = ("id", "tenant_id", "url", "filters", "enabled", "disabled_reason", "description", "metadata", "environment", "signing", "retry_schedule")
    ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    DISABLED_REASON_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    SIGNING_FIELD_NUMBER: _ClassVar[int]
    RETRY_SCHEDULE_FIELD_NUMBER: _ClassVar[int]
    id: str
    tenant_id: str
    url: str
    filters: FilterList
    enabled: bool
    disabled_reason: str
    description: str
    metadata: Metadata
    environment: str
    signing: SigningSettings
    retry_schedule: RetrySchedule
    def __init__(self, id: _Optional[str] = ..., tenant_id: _Optional[str] = ..., url: _Optional[str] = ..., filters: _Optional[_Union[FilterList, _Mapping]] = ..., enabled: _Optional[bool] = ..., disabled_reason: _Optional[str] = ..., description: _Optional[str] = ..., metadata: _Optional[_Union[Metadata, _Mapping]] = ..., environment: _Optional[str] = ..., signing: _Optional[_Union[SigningSettings, _Mapping]] = ..., retry_schedule: _Optional[_Union[RetrySchedule, _Mapping]] = ...) -> None: ...

class DeleteEndpointRequest(_message.Message):
    __slots__ = ("id", "tenant_id")
    ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    tenant_id: str
    def __init__(self, id: _Optional[str] = ..., tenant_id: _Optional[str] = ...) -> None: ...

class DeleteEndpointResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RotateEndpointSecretRequest(_message.Message):
    __slots__ = ("id", "tenant_id")
    ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    tenant_id: str
    def __init__(self, id: _Optional[str] = ..., tenant_id: _Optional[str] = ...) -> None: ...

class RotateEndpointSecretResponse(_message.Message):
    __slots__ = ("endpoint", "secret", "previous_secret_expires_at")
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    SECRET_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_SECRET_EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    endpoint: Endpoint
    secret: str
    previous_secret_expires_at: _timestamp_pb2.Timestamp
    def __init__(self, endpoint: _Optional[_Union[Endpoint, _Mapping]] = ..., secret: _Optional[str] = ..., previous_secret_expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class PingEndpointRequest(_message.Message):
    __slots__ = ("id", "tenant_id")
    ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    tenant_id: str
    def __init__(self, id: _Optional[str] = ..., tenant_id: _Optional[str] = ...) -> None: ...

class PingEndpointResponse(_message.Message):
    __slots__ = ("success", "status_code", "response_body", "error_kind", "error_message", "duration")
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    STATUS_CODE_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_BODY_FIELD_NUMBER: _ClassVar[int]
    ERROR_KIND_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    DURATION_FIELD_NUMBER: _ClassVar[int]
    success: bool
    status_code: int
    response_body: str
    error_kind: str
    error_message: str
    duration: _duration_pb2.Duration
    def __init__(self, success: _Optional[bool] = ..., status_code: _Optional[int] = ..., response_body: _Optional[str] = ..., error_kind: _Optional[str] = ..., error_message: _Optional[str] = ..., duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class GetSigningMaterialRequest(_message.Message):
    __slots__ = ("id", "tenant_id")
    ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    tenant_id: str
    def __init__(self, id: _Optional[str] = ..., tenant_id: _Optional[str] = ...) -> None: ...

class SigningMaterial(_message.Message):
    __slots__ = ("secret", "previous_secret", "previous_secret_expires_at", "keygen_public_key", "keygen_public_key_pem", "keygen_key_id")
    SECRET_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_SECRET_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_SECRET_EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    KEYGEN_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    KEYGEN_PUBLIC_KEY_PEM_FIELD_NUMBER: _ClassVar[int]
    KEYGEN_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    secret: str
    previous_secret: str
    previous_secret_expires_at: _timestamp_pb2.Timestamp
    keygen_public_key: str
    keygen_public_key_pem: str
    keygen_key_id: str
    def __init__(self, secret: _Optional[str] = ..., previous_secret: _Optional[str] = ..., previous_secret_expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., keygen_public_key: _Optional[str] = ..., keygen_public_key_pem: _Optional[str] = ..., keygen_key_id: _Optional[str] = ...) -> None: ...
