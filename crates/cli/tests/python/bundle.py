"""An mTLS gRPC channel from a QuorumCA credential bundle directory
(ca.pem, cert.pem, key.pem), as any gRPC client would open one. Shared by
the scripts beside it."""
import grpc


def mtls_channel(endpoint, creds_dir):
    def read(name):
        with open(f"{creds_dir}/{name}", "rb") as f:
            return f.read()

    tls = grpc.ssl_channel_credentials(
        root_certificates=read("ca.pem"),
        private_key=read("key.pem"),
        certificate_chain=read("cert.pem"),
    )
    return grpc.secure_channel(endpoint, tls)
