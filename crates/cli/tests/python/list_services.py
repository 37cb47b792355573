"""Lists a node's gRPC services through server reflection, with Python's
grpcio-reflection (which speaks the v1alpha protocol only), over mTLS with
a credential bundle. Prints the service names as a JSON list.

usage: list_services.py ENDPOINT CREDENTIALS_DIR
"""
import json
import sys

import grpc
from bundle import mtls_channel
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

endpoint, creds_dir = sys.argv[1:3]


channel = mtls_channel(endpoint, creds_dir)
grpc.channel_ready_future(channel).result(timeout=10)
db = ProtoReflectionDescriptorDatabase(channel)
services = sorted(db.get_services())
# A service's descriptor resolves too, not only its name.
for s in services:
    db.FindFileContainingSymbol(s)
print(json.dumps(services))
