#!/usr/bin/env python3
"""An mTLS peer we did not write on Node: Python's ssl module (OpenSSL through CPython), used by
test/interop/sdk-tls.test.ts against the Node SDK's TLS helpers with X509-SVIDs from a real
spindle-agent. SPIFFE verification done here the way a Python workload without a SPIFFE library
would: OpenSSL verifies the chain against the bundle (no hostname check), then the peer's
certificate must have exactly one URI SAN, equal to --expect-id when given.

  tls_peer.py server --cert C --key K --ca BUNDLE [--expect-id ID] [--accept N] [--timeout S]
      Listens on 127.0.0.1 (an ephemeral port), prints {"port": P}, then for each of N
      connections: handshake, read one line, answer "python <peer id> <line>\\n" and close.
      Prints one JSON object per connection: {"peer": ..., "received": ..., "error": ...}.
  tls_peer.py client --cert C --key K --ca BUNDLE --port P [--expect-id ID] [--send TEXT]
      Connects, verifies the server, sends TEXT + "\\n" (only when the server was accepted),
      reads until the server closes; prints {"peer": ..., "received": ..., "error": ...}.
"""
import argparse
import json
import socket
import ssl
import sys


def uri_sans(cert):
    return [v for (k, v) in cert.get("subjectAltName", ()) if k == "URI"]


def spiffe_check(sock, expect):
    """The peer's SPIFFE ID, or raises ValueError (a refusal)."""
    uris = uri_sans(sock.getpeercert() or {})
    if len(uris) != 1 or not uris[0].startswith("spiffe://"):
        raise ValueError("peer certificate has %d URI SANs: %r" % (len(uris), uris))
    if expect is not None and uris[0] != expect:
        raise ValueError("id_mismatch: peer %s is not %s" % (uris[0], expect))
    return uris[0]


def context(purpose, args):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if purpose == "server" else ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False  # SPIFFE: identities are URI SANs, never hostnames
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cafile=args.ca)
    ctx.load_cert_chain(certfile=args.cert, keyfile=args.key)
    return ctx


def emit(obj):
    print(json.dumps(obj), flush=True)


def read_until_close(conn, limit=65536):
    data = b""
    while len(data) < limit:
        try:
            chunk = conn.recv(4096)
        except (ssl.SSLError, ConnectionError) as e:
            return data, "%s: %s" % (type(e).__name__, e)
        if not chunk:
            break
        data += chunk
    return data, None


def serve(args):
    ctx = context("server", args)
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(8)
    lsock.settimeout(args.timeout)
    emit({"port": lsock.getsockname()[1]})
    for _ in range(args.accept):
        raw, _addr = lsock.accept()
        raw.settimeout(args.timeout)
        out = {"peer": None, "received": "", "error": None}
        try:
            conn = ctx.wrap_socket(raw, server_side=True)
            try:
                out["peer"] = spiffe_check(conn, args.expect_id)
            except ValueError as e:
                out["error"] = str(e)
                conn.close()
                emit(out)
                continue
            line = b""
            while not line.endswith(b"\n") and len(line) < 4096:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                line += chunk
            out["received"] = line.decode("utf-8", "replace")
            if line.endswith(b"\n"):
                conn.sendall(b"python " + out["peer"].encode() + b" " + line)
            conn.close()
        except (ssl.SSLError, OSError) as e:
            out["error"] = "%s: %s" % (type(e).__name__, e)
            raw.close()
        emit(out)


def client(args):
    ctx = context("client", args)
    out = {"peer": None, "received": "", "error": None}
    raw = socket.create_connection(("127.0.0.1", args.port), timeout=args.timeout)
    try:
        conn = ctx.wrap_socket(raw)
        try:
            out["peer"] = spiffe_check(conn, args.expect_id)
        except ValueError as e:
            out["error"] = str(e)
            conn.close()
            emit(out)
            return
        if args.send is not None:
            conn.sendall(args.send.encode() + b"\n")
        data, err = read_until_close(conn)
        out["received"] = data.decode("utf-8", "replace")
        out["error"] = err
        conn.close()
    except (ssl.SSLError, OSError) as e:
        out["error"] = "%s: %s" % (type(e).__name__, e)
        raw.close()
    emit(out)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["server", "client"])
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--ca", required=True)
    p.add_argument("--expect-id")
    p.add_argument("--accept", type=int, default=1)
    p.add_argument("--port", type=int)
    p.add_argument("--send")
    p.add_argument("--timeout", type=float, default=20.0)
    args = p.parse_args()
    if args.mode == "server":
        serve(args)
    else:
        client(args)


if __name__ == "__main__":
    sys.exit(main())
