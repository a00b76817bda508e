"""A node's gRPC reflection through grpcio-reflection, the official Python
reflection client, which speaks `grpc.reflection.v1alpha` only (as several
GUI tools still do).

Lists the services over v1alpha with ProtoReflectionDescriptorDatabase,
then resolves `dlog.v1.LogService` and its `Append` method through a
descriptor pool fed by the same database (the file descriptors the node
serves, dependencies included). Then lists the services over
`grpc.reflection.v1`: its messages are those of v1alpha, field for field,
so the official v1alpha messages are sent to the v1 method.

Usage: grpc_reflection_list.py HOST:PORT [CA_PEM_FILE]. Prints one JSON
line ({"v1alpha": [...], "v1": [...], "append_input": "..."}); exits
non-zero (with the gRPC error on stderr) when a call fails.
"""

import json
import sys

import grpc
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_reflection.v1alpha import reflection_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

TARGET = sys.argv[1]
CA = sys.argv[2] if len(sys.argv) > 2 else None


def channel():
    if CA is None:
        return grpc.insecure_channel(TARGET)
    with open(CA, "rb") as pem:
        credentials = grpc.ssl_channel_credentials(root_certificates=pem.read())
    return grpc.secure_channel(TARGET, credentials)


def list_v1(chan):
    """The service names through grpc.reflection.v1.ServerReflection."""
    info = chan.stream_stream(
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    for response in info(iter([request]), timeout=10):
        return [s.name for s in response.list_services_response.service]
    return []


def main():
    try:
        with channel() as chan:
            database = ProtoReflectionDescriptorDatabase(chan)
            v1alpha = sorted(database.get_services())
            pool = DescriptorPool(database)
            append = pool.FindServiceByName("dlog.v1.LogService").FindMethodByName("Append")
            v1 = sorted(list_v1(chan))
    except grpc.RpcError as err:
        print(f"reflection on {TARGET}: {err.code().name}: {err.details()}", file=sys.stderr)
        sys.exit(1)
    print(json.dumps({"v1alpha": v1alpha, "v1": v1, "append_input": append.input_type.full_name}))


if __name__ == "__main__":
    main()
