/**
 * gRPC server reflection (grpc.reflection.v1 and v1alpha) on the agent socket, so
 * grpcurl and similar tools can list and call the Workload API. Descriptors come from
 * the repo's own .proto files (the same ones the generated code is made from).
 */
import { fileURLToPath } from 'node:url';
import type { Server } from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import { ReflectionService } from '@grpc/reflection';

/** proto/ at the repository root, from dist/agent/endpoints/. */
const PROTO_DIR = fileURLToPath(new URL('../../../proto/', import.meta.url));

export const REFLECTED_PROTOS = ['workload/workload.proto', 'grpc/health/v1/health.proto'];

interface ReflectionIndex {
  services?: Record<string, unknown>;
  symbols?: Record<string, unknown>;
}

/**
 * @grpc/reflection 1.0 names symbols of package-less files `.Name` (it joins an empty package
 * with a dot), so the Workload API would be listed as `.SpiffeWorkloadAPI` and grpcurl could not
 * find `SpiffeWorkloadAPI`. Re-key those entries under their real full names. The test in
 * reflection.test.ts fails if the library's internals change shape.
 */
function fixPackagelessNames(impl: ReflectionIndex | undefined): void {
  for (const table of [impl?.services, impl?.symbols]) {
    if (!table) continue;
    for (const key of Object.keys(table)) {
      if (key.startsWith('.') && !(key.slice(1) in table)) {
        table[key.slice(1)] = table[key];
        if (table === impl?.services) delete table[key];
      }
    }
  }
}

export function addReflection(server: Server, extraProtos: readonly string[] = []): void {
  const definition = loadSync([...REFLECTED_PROTOS, ...extraProtos], { includeDirs: [PROTO_DIR], keepCase: true });
  const reflection = new ReflectionService(definition);
  const impls = reflection as unknown as { v1?: ReflectionIndex; v1Alpha?: ReflectionIndex };
  fixPackagelessNames(impls.v1);
  fixPackagelessNames(impls.v1Alpha);
  reflection.addToServer(server);
}
