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
import datetime
import json
import sys

import grpc
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

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


def b64url(data):
    return base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))


def signed_by(cert, issuer):
    """Whether issuer's key made cert's signature (cryptography 38 has no helper for this)."""
    key = issuer.public_key()
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm))
        elif isinstance(key, rsa.RSAPublicKey):
            key.verify(cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(), cert.signature_hash_algorithm)
        else:
            return False
        return cert.issuer == issuer.subject
    except InvalidSignature:
        return False


def is_ca(cert):
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def verify_chain(chain, roots):
    """X509-SVID validation as the SPIFFE X509-SVID spec describes it, done here independently:
    every certificate in its validity window, the leaf no CA with exactly one spiffe:// URI SAN,
    each certificate signed by the next, intermediates CAs, the last one signed by a root of the
    bundle. Returns the reason it fails, or "ok"."""
    now = datetime.datetime.utcnow()
    leaf = chain[0]
    if is_ca(leaf):
        return "leaf is a CA"
    uris = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.UniformResourceIdentifier)
    if len(uris) != 1 or not uris[0].startswith("spiffe://"):
        return "leaf URI SANs %r" % uris
    for c in chain:
        if not (c.not_valid_before <= now <= c.not_valid_after):
            return "outside its validity: %s" % c.subject.rfc4514_string()
    for child, parent in zip(chain, chain[1:]):
        if not is_ca(parent):
            return "intermediate is not a CA"
        if not signed_by(child, parent):
            return "not signed by the next certificate"
    if not any(signed_by(chain[-1], root) and is_ca(root) for root in roots):
        return "no bundle root signed the chain"
    return "ok"


def jwt_verify(token, jwks_by_td, audience):
    """JWT-SVID signature, expiry and audience checked here with the keys of FetchJWTBundles
    (the JWKS of the token's trust domain, key chosen by kid). Returns the reason, or "ok"."""
    head_b64, claims_b64, sig_b64 = token.split(".")
    header = json.loads(b64url(head_b64))
    claims = json.loads(b64url(claims_b64))
    sub = claims.get("sub", "")
    td = sub[len("spiffe://"):].split("/")[0]
    keys = json.loads(jwks_by_td["spiffe://" + td])["keys"]
    jwk = next((k for k in keys if k.get("kid") == header.get("kid")), None)
    if jwk is None:
        return "no key %r in the %s JWKS" % (header.get("kid"), td)
    signing_input = (head_b64 + "." + claims_b64).encode()
    sig = b64url(sig_b64)
    alg = header.get("alg")
    try:
        if alg in ("ES256", "ES384") and jwk["kty"] == "EC":
            curve, digest, size = (ec.SECP256R1(), hashes.SHA256(), 32) if alg == "ES256" else (ec.SECP384R1(), hashes.SHA384(), 48)
            pub = ec.EllipticCurvePublicNumbers(int.from_bytes(b64url(jwk["x"]), "big"), int.from_bytes(b64url(jwk["y"]), "big"), curve).public_key()
            der = encode_dss_signature(int.from_bytes(sig[:size], "big"), int.from_bytes(sig[size:], "big"))
            pub.verify(der, signing_input, ec.ECDSA(digest))
        elif alg == "RS256" and jwk["kty"] == "RSA":
            pub = rsa.RSAPublicNumbers(int.from_bytes(b64url(jwk["e"]), "big"), int.from_bytes(b64url(jwk["n"]), "big")).public_key()
            pub.verify(sig, signing_input, padding.PKCS1v15(), hashes.SHA256())
        else:
            return "unexpected alg %r for a %s key" % (alg, jwk.get("kty"))
    except InvalidSignature:
        return "bad signature"
    aud = claims.get("aud")
    if audience not in (aud if isinstance(aud, list) else [aud]):
        return "audience"
    if not claims.get("exp") or claims["exp"] <= datetime.datetime.utcnow().timestamp():
        return "expired"
    return "ok"


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
        chain_certs = [x509.load_der_x509_certificate(d) for d in chain]
        root_certs = [x509.load_der_x509_certificate(d) for d in bundle]
        spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        uris = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.UniformResourceIdentifier)
        result["x509"] = {
            "spiffe_ids": [s.spiffe_id for s in first.svids],
            "chain_len": len(chain),
            "bundle_len": len(bundle),
            "leaf_uri_sans": uris,
            "key_matches_leaf": key.public_key().public_bytes(*spki) == leaf.public_key().public_bytes(*spki),
            "federated_bundles": sorted(first.federated_bundles.keys()),
            # Checked here against the bundle of the response; and, as a control, against a
            # "bundle" holding only the leaf (a certificate that signed nothing): must fail.
            "chain_verified": verify_chain(chain_certs, root_certs),
            "chain_against_wrong_bundle": verify_chain(chain_certs, [chain_certs[0]]),
        }

        # FetchJWTSVID (unary) with every audience, then ValidateJWTSVID for each one.
        jwt = stub.FetchJWTSVID(workload_pb2.JWTSVIDRequest(audience=args.audience), metadata=HEADER, timeout=15)
        token = jwt.svids[0].svid
        claims = jwt_claims(token)
        validated = []
        for aud in args.audience:
            v = stub.ValidateJWTSVID(workload_pb2.ValidateJWTSVIDRequest(audience=aud, svid=token), metadata=HEADER, timeout=15)
            validated.append({"audience": aud, "spiffe_id": v.spiffe_id, "sub": v.claims.fields["sub"].string_value})
        bundles_stream = stub.FetchJWTBundles(workload_pb2.JWTBundlesRequest(), metadata=HEADER, timeout=15)
        jwks = dict(next(iter(bundles_stream)).bundles)
        bundles_stream.cancel()
        head, body, sig = token.split(".")
        forged_claims = dict(claims, sub=claims["sub"] + "-admin")
        forged = head + "." + base64.urlsafe_b64encode(json.dumps(forged_claims).encode()).decode().rstrip("=") + "." + sig
        result["jwt"] = {
            "signature_verified": jwt_verify(token, jwks, args.audience[0]),
            "other_audience": jwt_verify(token, jwks, "not-" + args.audience[0]),
            "claims_changed": jwt_verify(forged, jwks, args.audience[0]),
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
