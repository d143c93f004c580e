"""Every protobuf message and enum of Herald's API in one namespace, for building requests
and reading answers: ``pb.CreateEndpointRequest``, ``pb.WEBHOOK_FORMAT_STANDARD``,
``pb.ROLE_PUBLISHER``. (The modules themselves are under ``herald_sdk._proto``, generated.)"""

from ._proto.herald.v1.admin_pb2 import *  # noqa: F401,F403
from ._proto.herald.v1.catalog_pb2 import *  # noqa: F401,F403
from ._proto.herald.v1.deliveries_pb2 import *  # noqa: F401,F403
from ._proto.herald.v1.endpoints_pb2 import *  # noqa: F401,F403
from ._proto.herald.v1.events_pb2 import *  # noqa: F401,F403
