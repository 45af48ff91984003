#!/usr/bin/env python3
"""A SPIFFE Workload API client we did not write ourselves: Python's grpc (Debian python3-grpcio)
with stubs that test/interop/interop.test.ts generates from proto/workload/workload.proto at test
time (python3 -m grpc_tools.protoc). Nothing here comes from Spindle's code.

Usage: workload_client.py --stubs DIR --socket PATH --out DIR [--audience A ...]

Writes to --out:
  svid.pem        the first SVID's certificate chain (the DER chain split, leaf first)
  svid.key        its private key (PKCS#8 DER re-encoded as PEM)
  bundle.pem      the first SVID's bundle (the DER bundle split)
and prints one JSON object on stdout with what it saw (the test checks it).
"""
import argparse
import base64
import json
import sys

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

HEADER = (("workload.spiffe.io", "true"),)


def der_split(data):
    """Splits concatenated DER SEQUENCEs (certificates) without any X.509 library."""
    out, i = [], 0
    while i < len(data):
        if data[i] != 0x30:
            raise ValueError("not a DER SEQUENCE at offset %d" % i)
        n = data[i + 1]
        if n < 0x80:
            length, hdr = n, 2
        else:
            k = n & 0x7F
            if k == 0 or k > 4:
                raise ValueError("unsupported DER length at offset %d" % i)
            length, hdr = int.from_bytes(data[i + 2:i + 2 + k], "big"), 2 + k
        end = i + hdr + length
        if end > len(data):
            raise ValueError("truncated DER at offset %d" % i)
        out.append(data[i:end])
        i = end
    return out


def pem_certs(ders):
    return b"".join(x509.load_der_x509_certificate(d).public_bytes(serialization.Encoding.PEM) for d in ders)


def jwt_claims(token):
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def code_of(fn):
    try:
        fn()
        return "OK"
    except grpc.RpcError as err:  # the call's status
        return err.code().name


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--stubs", required=True)
    ap.add_argument("--socket", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--audience", action="append", default=[])
    args = ap.parse_args()
    sys.path.insert(0, args.stubs)
    from workload import workload_pb2, workload_pb2_grpc  # generated at test time

    result = {"grpc_version": grpc.__version__}
    with grpc.insecure_channel("unix:" + args.socket) as channel:
        stub = workload_pb2_grpc.SpiffeWorkloadAPIStub(channel)

        # FetchX509SVID: a server stream; the first message is the current state.
        stream = stub.FetchX509SVID(workload_pb2.X509SVIDRequest(), metadata=HEADER, timeout=15)
        first = next(iter(stream))
        stream.cancel()
        svid = first.svids[0]
        chain = der_split(svid.x509_svid)
        bundle = der_split(svid.bundle)
        with open(args.out + "/svid.pem", "wb") as f:
            f.write(pem_certs(chain))
        with open(args.out + "/bundle.pem", "wb") as f:
            f.write(pem_certs(bundle))
        key = serialization.load_der_private_key(svid.x509_svid_key, password=None)
        with open(args.out + "/svid.key", "wb") as f:
            f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        leaf = x509.load_der_x509_certificate(chain[0])
        spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        uris = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.UniformResourceIdentifier)
        result["x509"] = {
            "spiffe_ids": [s.spiffe_id for s in first.svids],
            "chain_len": len(chain),
            "bundle_len": len(bundle),
            "leaf_uri_sans": uris,
            "key_matches_leaf": key.public_key().public_bytes(*spki) == leaf.public_key().public_bytes(*spki),
            "federated_bundles": sorted(first.federated_bundles.keys()),
        }

        # FetchJWTSVID (unary) with every audience, then ValidateJWTSVID for each one.
        jwt = stub.FetchJWTSVID(workload_pb2.JWTSVIDRequest(audience=args.audience), metadata=HEADER, timeout=15)
        token = jwt.svids[0].svid
        claims = jwt_claims(token)
        validated = []
        for aud in args.audience:
            v = stub.ValidateJWTSVID(workload_pb2.ValidateJWTSVIDRequest(audience=aud, svid=token), metadata=HEADER, timeout=15)
            validated.append({"audience": aud, "spiffe_id": v.spiffe_id, "sub": v.claims.fields["sub"].string_value})
        result["jwt"] = {
            "spiffe_id": jwt.svids[0].spiffe_id,
            "sub": claims.get("sub"),
            "aud": claims.get("aud") if isinstance(claims.get("aud"), list) else [claims.get("aud")],
            "validated": validated,
            "wrong_audience": code_of(lambda: stub.ValidateJWTSVID(
                workload_pb2.ValidateJWTSVIDRequest(audience="not-" + args.audience[0], svid=token), metadata=HEADER, timeout=15)),
        }

        # Without the security header: INVALID_ARGUMENT, for streams and unary calls alike.
        result["no_header"] = {
            "FetchX509SVID": code_of(lambda: next(iter(stub.FetchX509SVID(workload_pb2.X509SVIDRequest(), timeout=15)))),
            "FetchJWTSVID": code_of(lambda: stub.FetchJWTSVID(workload_pb2.JWTSVIDRequest(audience=args.audience), timeout=15)),
        }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
