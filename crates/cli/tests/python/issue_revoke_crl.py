"""Drives QuorumCA's public gRPC API from Python, with stubs generated from
proto/ by grpcio-tools: issue from a CSR, revoke, fetch the CRL of the
certificate's shard. Prints one JSON object for the Rust test to check.

Connects over mTLS with a credential bundle (ca.pem, cert.pem, key.pem),
as any gRPC client would.

usage: issue_revoke_crl.py STUBS_DIR ENDPOINT CSR_FILE CREDENTIALS_DIR
"""
import json
import sys
import time

stubs, endpoint, csr_path, creds_dir = sys.argv[1:5]
sys.path.insert(0, stubs)

import grpc  # noqa: E402
from bundle import mtls_channel  # noqa: E402
from quorumca.v1 import ca_pb2, ca_pb2_grpc  # noqa: E402

channel = mtls_channel(endpoint, creds_dir)
certs = ca_pb2_grpc.CertificateServiceStub(channel)
authority = ca_pb2_grpc.AuthorityServiceStub(channel)

with open(csr_path, "rb") as f:
    csr = f.read()

issued = certs.Issue(
    ca_pb2.IssueRequest(csr=csr, namespace="default", profile="service", idempotency_key="py-1"),
    timeout=10,
)
# A retry with the same key answers with the same certificate.
again = certs.Issue(
    ca_pb2.IssueRequest(csr=csr, namespace="default", profile="service", idempotency_key="py-1"),
    timeout=10,
)
assert again.serial == issued.serial and again.replayed, "idempotent retry"

# Bad input is a typed status, not a crash.
try:
    certs.Issue(ca_pb2.IssueRequest(csr=b"garbage", namespace="default", profile="service"), timeout=10)
    raise SystemExit("garbage CSR was accepted")
except grpc.RpcError as e:
    bad_code = e.code().name

certs.Revoke(
    ca_pb2.RevokeRequest(
        issuer=issued.issuer,
        serial=issued.serial,
        reason=ca_pb2.REVOCATION_REASON_KEY_COMPROMISE,
    ),
    timeout=10,
)

bundle = authority.GetTrustBundle(ca_pb2.GetTrustBundleRequest(), timeout=10)
shards = {i.id: i.crl_shards for i in bundle.issuers}
# serial = lease sequence (64 bits) || 64 random bits; the CRL shard is the
# sequence modulo the issuer's shard count.
shard = (int(issued.serial, 16) >> 64) % shards[issued.issuer]
serial = bytes.fromhex(issued.serial)

# The CRL is rebuilt when the revocation commits (not on this request):
# poll until it lists the serial. UNAVAILABLE (not built yet on a node that
# just started) is worth a retry, as its message says.
deadline = time.time() + 20
crl = None
while time.time() < deadline:
    try:
        crl = authority.GetCrl(ca_pb2.GetCrlRequest(issuer=issued.issuer, shard=shard), timeout=10)
        if serial in crl.crl:
            break
    except grpc.RpcError as e:
        if e.code() != grpc.StatusCode.UNAVAILABLE:
            raise
    time.sleep(0.2)
if crl is None:
    raise SystemExit("no CRL within 20 s")

print(json.dumps({
    "issuer": issued.issuer,
    "serial": issued.serial,
    "chain_pem": issued.chain_pem,
    "bad_csr_code": bad_code,
    "crl_der_hex": crl.crl.hex(),
    "crl_number": crl.crl_number,
}))
