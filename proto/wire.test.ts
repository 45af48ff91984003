// Wire-format tests for the generated protocol code (Workload API and Envoy SDS messages).
// Expected bytes are written out by hand from the protobuf encoding rules
// (tag byte = field_number << 3 | wire_type; wire type 2 = length-delimited,
// 0 = varint), independently of the generated encoders.

import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";

import {
  JWTSVIDRequest,
  SpiffeWorkloadAPIClient,
  SpiffeWorkloadAPIService,
  X509SVIDRequest,
  X509SVIDResponse,
  type SpiffeWorkloadAPIServer,
} from "./gen/workload/workload.js";
import {
  SecretDiscoveryServiceClient,
  SecretDiscoveryServiceService,
  type SecretDiscoveryServiceServer,
} from "./gen/envoy/service/secret/v3/sds.js";
import { DiscoveryRequest, DiscoveryResponse } from "./gen/envoy/service/discovery/v3/discovery.js";
import { Node } from "./gen/envoy/config/core/v3/base.js";
import { Secret } from "./gen/envoy/extensions/transport_sockets/tls/v3/secret.js";
import { CertificateValidationContext } from "./gen/envoy/extensions/transport_sockets/tls/v3/common.js";
import { SPIFFECertValidatorConfig } from "./gen/envoy/extensions/transport_sockets/tls/v3/tls_spiffe_validator_config.js";
import { Any } from "./gen/google/protobuf/any.js";
import { HealthService } from "./gen/grpc/health/v1/health.js";

const SECRET_TYPE_URL = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";
const SPIFFE_VALIDATOR_TYPE_URL =
  "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.SPIFFECertValidatorConfig";

// --- hand-encoding helpers (deliberately minimal, no generated code) ---

/** Base-128 varint, least significant group first, continuation bit 0x80. */
function varint(n: number): number[] {
  assert.ok(Number.isInteger(n) && n >= 0);
  const out: number[] = [];
  while (n > 0x7f) {
    out.push((n & 0x7f) | 0x80);
    n >>>= 7;
  }
  out.push(n);
  return out;
}

const utf8 = (s: string): number[] => [...Buffer.from(s, "utf8")];

/** Length-delimited field: the given tag byte, varint length, payload. */
function ld(tag: number, payload: number[]): number[] {
  return [tag, ...varint(payload.length), ...payload];
}

const bytesOf = (a: Uint8Array): Buffer => Buffer.from(a.buffer, a.byteOffset, a.byteLength);

describe("generated service definitions", () => {
  it("Workload API method paths have no package prefix", () => {
    const paths = Object.fromEntries(Object.entries(SpiffeWorkloadAPIService).map(([k, v]) => [k, v.path]));
    assert.deepEqual(paths, {
      fetchX509Svid: "/SpiffeWorkloadAPI/FetchX509SVID",
      fetchX509Bundles: "/SpiffeWorkloadAPI/FetchX509Bundles",
      fetchJwtsvid: "/SpiffeWorkloadAPI/FetchJWTSVID",
      fetchJwtBundles: "/SpiffeWorkloadAPI/FetchJWTBundles",
      validateJwtsvid: "/SpiffeWorkloadAPI/ValidateJWTSVID",
    });
    const streaming = Object.fromEntries(
      Object.entries(SpiffeWorkloadAPIService).map(([k, v]) => [k, [v.requestStream, v.responseStream]]),
    );
    assert.deepEqual(streaming, {
      fetchX509Svid: [false, true],
      fetchX509Bundles: [false, true],
      fetchJwtsvid: [false, false],
      fetchJwtBundles: [false, true],
      validateJwtsvid: [false, false],
    });
    assert.equal(SpiffeWorkloadAPIClient.serviceName, "SpiffeWorkloadAPI");
  });

  it("SDS method paths carry the envoy.service.secret.v3 package", () => {
    const paths = Object.fromEntries(
      Object.entries(SecretDiscoveryServiceService).map(([k, v]) => [k, [v.path, v.requestStream, v.responseStream]]),
    );
    assert.deepEqual(paths, {
      deltaSecrets: ["/envoy.service.secret.v3.SecretDiscoveryService/DeltaSecrets", true, true],
      streamSecrets: ["/envoy.service.secret.v3.SecretDiscoveryService/StreamSecrets", true, true],
      fetchSecrets: ["/envoy.service.secret.v3.SecretDiscoveryService/FetchSecrets", false, false],
    });
  });

  it("health service paths are grpc.health.v1.Health", () => {
    assert.equal(HealthService.check.path, "/grpc.health.v1.Health/Check");
    assert.equal(HealthService.watch.path, "/grpc.health.v1.Health/Watch");
    assert.equal(HealthService.watch.responseStream, true);
  });
});

describe("wire encoding", () => {
  it("X509SVIDResponse with one SVID and a federated bundle", () => {
    const msg: X509SVIDResponse = {
      svids: [
        {
          spiffeId: "spiffe://example.org/w",
          x509Svid: Buffer.from([0x30, 0x01, 0x02]),
          x509SvidKey: Buffer.from([0x30, 0x03]),
          bundle: Buffer.from([0x30, 0x04, 0x05]),
          hint: "h1",
        },
      ],
      crl: [],
      federatedBundles: new Map([["spiffe://other.org", Buffer.from([0x30, 0x09])]]),
    };
    const svid = [
      ...[0x0a, 22, ...utf8("spiffe://example.org/w")], // spiffe_id = 1
      ...[0x12, 3, 0x30, 0x01, 0x02], // x509_svid = 2
      ...[0x1a, 2, 0x30, 0x03], // x509_svid_key = 3
      ...[0x22, 3, 0x30, 0x04, 0x05], // bundle = 4
      ...[0x2a, 2, 0x68, 0x31], // hint = 5 ("h1")
    ];
    assert.equal(svid.length, 42);
    const entry = [
      ...[0x0a, 18, ...utf8("spiffe://other.org")], // map key = 1
      ...[0x12, 2, 0x30, 0x09], // map value = 2
    ];
    const expected = Buffer.from([
      ...[0x0a, 42, ...svid], // svids = 1
      ...[0x1a, 24, ...entry], // federated_bundles = 3 (no crl = 2: empty repeated)
    ]);
    const encoded = bytesOf(X509SVIDResponse.encode(msg).finish());
    assert.equal(encoded.toString("hex"), expected.toString("hex"));
    assert.deepStrictEqual(X509SVIDResponse.decode(expected), msg);
  });

  it("X509SVIDRequest is empty on the wire", () => {
    assert.equal(X509SVIDRequest.encode({}).finish().length, 0);
    assert.deepStrictEqual(X509SVIDRequest.decode(new Uint8Array(0)), {});
  });

  it("JWTSVIDRequest with two audiences and a SPIFFE ID", () => {
    const msg: JWTSVIDRequest = { audience: ["a1", "b2"], spiffeId: "spiffe://example.org/w" };
    const expected = Buffer.from([
      ...[0x0a, 2, 0x61, 0x31], // audience = 1 "a1"
      ...[0x0a, 2, 0x62, 0x32], // audience = 1 "b2"
      ...[0x12, 22, ...utf8("spiffe://example.org/w")], // spiffe_id = 2
    ]);
    assert.equal(bytesOf(JWTSVIDRequest.encode(msg).finish()).toString("hex"), expected.toString("hex"));
    assert.deepStrictEqual(JWTSVIDRequest.decode(expected), msg);
  });

  it("DiscoveryRequest (NACK) with node, resource names, nonce and error_detail", () => {
    const msg: DiscoveryRequest = {
      versionInfo: "7",
      node: {
        id: "n1",
        cluster: "c1",
        metadata: undefined,
        userAgentName: "envoy",
        userAgentVersionType: { $case: "userAgentVersion", value: "1.30" },
      },
      resourceNames: ["default", "ROOTCA"],
      typeUrl: SECRET_TYPE_URL,
      responseNonce: "abc",
      errorDetail: { code: 3, message: "bad", details: [] },
    };
    const node = [
      ...[0x0a, 2, ...utf8("n1")], // id = 1
      ...[0x12, 2, ...utf8("c1")], // cluster = 2
      ...[0x32, 5, ...utf8("envoy")], // user_agent_name = 6
      ...[0x3a, 4, ...utf8("1.30")], // user_agent_version = 7
    ];
    const expected = Buffer.from([
      ...[0x0a, 1, 0x37], // version_info = 1 "7"
      ...ld(0x12, node), // node = 2
      ...[0x1a, 7, ...utf8("default")], // resource_names = 3
      ...[0x1a, 6, ...utf8("ROOTCA")],
      ...[0x22, 68, ...utf8(SECRET_TYPE_URL)], // type_url = 4
      ...[0x2a, 3, ...utf8("abc")], // response_nonce = 5
      ...[0x32, 7, 0x08, 0x03, 0x12, 3, ...utf8("bad")], // error_detail = 6 {code=1 varint 3, message=2}
    ]);
    assert.equal(bytesOf(DiscoveryRequest.encode(msg).finish()).toString("hex"), expected.toString("hex"));
    assert.deepStrictEqual(DiscoveryRequest.decode(expected), msg);
  });

  it("Node fields Spindle does not model (Envoy sends them) are skipped on decode", () => {
    const wire = Buffer.from([
      ...[0x0a, 2, ...utf8("n1")], // id = 1
      ...[0x22, 4, 0x0a, 2, ...utf8("eu")], // locality = 4 {region = 1} (not modelled)
      ...[0x52, 3, ...utf8("f.x")], // client_features = 10 (not modelled)
      ...[0x42, 4, 0x0a, 2, 0x08, 1], // user_agent_build_version = 8 {version {major_number = 1}}
    ]);
    const node = Node.decode(wire);
    assert.equal(node.id, "n1");
    assert.deepStrictEqual(node.userAgentVersionType, {
      $case: "userAgentBuildVersion",
      value: { version: { majorNumber: 1, minorNumber: 0, patch: 0 }, metadata: undefined },
    });
  });

  it("DiscoveryResponse carrying a tls_certificate Secret in google.protobuf.Any", () => {
    // 150-byte "PEM" forces a two-byte length varint (150 = 0x96 0x01).
    const pem = Buffer.from("-----BEGIN CERTIFICATE-----\n" + "A".repeat(95) + "\n-----END CERTIFICATE-----\n");
    assert.equal(pem.length, 150);
    const key = Buffer.from("-----BEGIN PRIVATE KEY-----\nK\n-----END PRIVATE KEY-----\n");
    const secret: Secret = {
      name: "spiffe://example.org/w",
      type: {
        $case: "tlsCertificate",
        value: {
          certificateChain: { specifier: { $case: "inlineBytes", value: pem } },
          privateKey: { specifier: { $case: "inlineBytes", value: key } },
        },
      },
    };
    const tlsCert = [
      ...[0x0a, 153, 0x01, 0x12, 0x96, 0x01, ...pem], // certificate_chain = 1 {inline_bytes = 2}
      ...ld(0x12, ld(0x12, [...key])), // private_key = 2 {inline_bytes = 2}
    ];
    const secretWire = [
      ...[0x0a, 22, ...utf8("spiffe://example.org/w")], // name = 1
      ...ld(0x12, tlsCert), // tls_certificate = 2
    ];
    const secretBytes = bytesOf(Secret.encode(secret).finish());
    assert.equal(secretBytes.toString("hex"), Buffer.from(secretWire).toString("hex"));
    assert.deepStrictEqual(Secret.decode(secretBytes), secret);

    const any: Any = { typeUrl: SECRET_TYPE_URL, value: secretBytes };
    const anyWire = [...[0x0a, 68, ...utf8(SECRET_TYPE_URL)], ...ld(0x12, secretWire)];
    assert.equal(bytesOf(Any.encode(any).finish()).toString("hex"), Buffer.from(anyWire).toString("hex"));

    const resp: DiscoveryResponse = { versionInfo: "1", resources: [any], canary: false, typeUrl: SECRET_TYPE_URL, nonce: "n" };
    const respWire = Buffer.from([
      ...[0x0a, 1, 0x31], // version_info = 1
      ...ld(0x12, anyWire), // resources = 2
      ...[0x22, 68, ...utf8(SECRET_TYPE_URL)], // type_url = 4
      ...[0x2a, 1, 0x6e], // nonce = 5
    ]);
    assert.equal(bytesOf(DiscoveryResponse.encode(resp).finish()).toString("hex"), respWire.toString("hex"));
    const back = DiscoveryResponse.decode(respWire);
    assert.equal(back.resources.length, 1);
    assert.equal(back.resources[0]?.typeUrl, SECRET_TYPE_URL);
    assert.deepStrictEqual(Secret.decode(back.resources[0]!.value), secret);
  });

  it("validation_context with SPIFFE custom_validator_config (field 12)", () => {
    const bundle = Buffer.from("-----BEGIN CERTIFICATE-----\nB\n-----END CERTIFICATE-----\n");
    const cfg: SPIFFECertValidatorConfig = {
      trustDomains: [{ name: "example.org", trustBundle: { specifier: { $case: "inlineBytes", value: bundle } } }],
    };
    const cfgWire = ld(0x0a, [...[0x0a, 11, ...utf8("example.org")], ...ld(0x12, ld(0x12, [...bundle]))]);
    assert.equal(
      bytesOf(SPIFFECertValidatorConfig.encode(cfg).finish()).toString("hex"),
      Buffer.from(cfgWire).toString("hex"),
    );
    const vc: CertificateValidationContext = {
      trustedCa: undefined,
      customValidatorConfig: {
        name: "envoy.tls.cert_validator.spiffe",
        typedConfig: { typeUrl: SPIFFE_VALIDATOR_TYPE_URL, value: Buffer.from(cfgWire) },
      },
    };
    const vcWire = ld(0x62, [
      // custom_validator_config = 12 -> tag (12 << 3) | 2 = 0x62
      ...[0x0a, 31, ...utf8("envoy.tls.cert_validator.spiffe")],
      ...ld(0x12, [...ld(0x0a, utf8(SPIFFE_VALIDATOR_TYPE_URL)), ...ld(0x12, cfgWire)]),
    ]);
    const vcBytes = bytesOf(CertificateValidationContext.encode(vc).finish());
    assert.equal(vcBytes.toString("hex"), Buffer.from(vcWire).toString("hex"));
    const secret: Secret = { name: "ALL", type: { $case: "validationContext", value: vc } };
    const secretWire = Buffer.from([...[0x0a, 3, ...utf8("ALL")], ...ld(0x22, vcWire)]); // validation_context = 4
    assert.equal(bytesOf(Secret.encode(secret).finish()).toString("hex"), secretWire.toString("hex"));
    assert.deepStrictEqual(Secret.decode(secretWire), secret);
  });
});

describe("gRPC over a Unix socket", () => {
  async function withServer(
    register: (server: grpc.Server) => void,
    body: (target: string) => Promise<void>,
  ): Promise<void> {
    const dir = await mkdtemp(join(tmpdir(), "spindle-wire-"));
    const target = `unix:${join(dir, "api.sock")}`;
    const server = new grpc.Server();
    register(server);
    try {
      await new Promise<number>((res, rej) =>
        server.bindAsync(target, grpc.ServerCredentials.createInsecure(), (err, port) => (err ? rej(err) : res(port))),
      );
      await body(target);
    } finally {
      await new Promise<void>((res) => server.tryShutdown(() => res()));
      await rm(dir, { recursive: true, force: true });
    }
  }

  it("FetchX509SVID streams a response to the generated client", async () => {
    const sent: X509SVIDResponse = {
      svids: [
        {
          spiffeId: "spiffe://example.org/w",
          x509Svid: Buffer.from([1, 2, 3]),
          x509SvidKey: Buffer.from([4]),
          bundle: Buffer.from([5, 6]),
          hint: "",
        },
      ],
      crl: [],
      federatedBundles: new Map([["spiffe://other.org", Buffer.from([7])]]),
    };
    const seen: { path?: string; header?: grpc.MetadataValue[] } = {};
    const impl: Pick<SpiffeWorkloadAPIServer, "fetchX509Svid"> = {
      fetchX509Svid(call) {
        seen.path = call.getPath();
        seen.header = call.metadata.get("workload.spiffe.io");
        call.write(sent);
        call.end();
      },
    };
    await withServer(
      (s) => s.addService(SpiffeWorkloadAPIService, impl),
      async (target) => {
        const client = new SpiffeWorkloadAPIClient(target, grpc.credentials.createInsecure());
        try {
          const md = new grpc.Metadata();
          md.set("workload.spiffe.io", "true");
          const got: X509SVIDResponse[] = [];
          await new Promise<void>((res, rej) => {
            const stream = client.fetchX509Svid({}, md);
            stream.on("data", (m: X509SVIDResponse) => got.push(m));
            stream.on("error", rej);
            stream.on("end", () => res());
          });
          assert.deepStrictEqual(got, [sent]);
          assert.equal(seen.path, "/SpiffeWorkloadAPI/FetchX509SVID");
          assert.deepEqual(seen.header, ["true"]);

          // Methods without a handler, and methods absent from the proto
          // (FetchWITSVID), are UNIMPLEMENTED.
          const code = await new Promise<grpc.status | undefined>((res) =>
            client.fetchJwtsvid({ audience: ["a"], spiffeId: "" }, md, (err) => res(err?.code)),
          );
          assert.equal(code, grpc.status.UNIMPLEMENTED);
          const witCode = await new Promise<grpc.status | undefined>((res) =>
            client.makeUnaryRequest(
              "/SpiffeWorkloadAPI/FetchWITSVID",
              (x: Buffer) => x,
              (x: Buffer) => x,
              Buffer.alloc(0),
              md,
              (err) => res(err?.code),
            ),
          );
          assert.equal(witCode, grpc.status.UNIMPLEMENTED);
        } finally {
          client.close();
        }
      },
    );
  });

  it("StreamSecrets is a bidi stream on the SDS path", async () => {
    let path: string | undefined;
    const impl: Pick<SecretDiscoveryServiceServer, "streamSecrets"> = {
      streamSecrets(call) {
        path = call.getPath();
        call.on("data", (req: DiscoveryRequest) => {
          const secret: Secret = {
            name: req.resourceNames[0] ?? "",
            type: {
              $case: "validationContext",
              value: {
                trustedCa: { specifier: { $case: "inlineBytes", value: Buffer.from("PEM") } },
                customValidatorConfig: undefined,
              },
            },
          };
          call.write({
            versionInfo: "1",
            resources: [{ typeUrl: SECRET_TYPE_URL, value: Buffer.from(Secret.encode(secret).finish()) }],
            canary: false,
            typeUrl: SECRET_TYPE_URL,
            nonce: "n1",
          });
        });
        call.on("end", () => call.end());
      },
    };
    await withServer(
      (s) => s.addService(SecretDiscoveryServiceService, impl),
      async (target) => {
        const client = new SecretDiscoveryServiceClient(target, grpc.credentials.createInsecure());
        try {
          const stream = client.streamSecrets();
          const first = new Promise<DiscoveryResponse>((res, rej) => {
            stream.once("data", res);
            stream.once("error", rej);
          });
          stream.write(DiscoveryRequest.fromPartial({ resourceNames: ["spiffe://example.org"], typeUrl: SECRET_TYPE_URL }));
          const resp = await first;
          assert.equal(resp.nonce, "n1");
          assert.equal(resp.resources[0]?.typeUrl, SECRET_TYPE_URL);
          const secret = Secret.decode(resp.resources[0]!.value);
          assert.equal(secret.name, "spiffe://example.org");
          assert.equal(secret.type?.$case, "validationContext");
          const ended = new Promise<void>((res, rej) => {
            stream.on("end", () => res());
            stream.on("error", rej);
            stream.resume();
          });
          stream.end();
          await ended;
          assert.equal(path, "/envoy.service.secret.v3.SecretDiscoveryService/StreamSecrets");
        } finally {
          client.close();
        }
      },
    );
  });
});
