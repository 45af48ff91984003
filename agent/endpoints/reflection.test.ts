// Server reflection lists the Workload API and health services and describes their files.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createRequire } from 'node:module';
import * as grpc from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import { addReflection } from './reflection.js';

const require = createRequire(import.meta.url);
const reflectionProtoDir = join(require.resolve('@grpc/reflection/package.json'), '..', 'build', 'proto');

test('reflection lists SpiffeWorkloadAPI and grpc.health.v1.Health and serves workload.proto', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'spindle-refl-'));
  const server = new grpc.Server();
  addReflection(server);
  const socket = join(dir, 's.sock');
  await new Promise<void>((resolve, reject) => server.bindAsync(`unix:${socket}`, grpc.ServerCredentials.createInsecure(), (e) => (e ? reject(e) : resolve())));
  try {
    const def = loadSync('grpc/reflection/v1/reflection.proto', { includeDirs: [reflectionProtoDir], keepCase: true });
    const pkg = grpc.loadPackageDefinition(def) as unknown as {
      grpc: { reflection: { v1: { ServerReflection: new (addr: string, c: grpc.ChannelCredentials) => grpc.Client & { ServerReflectionInfo(): grpc.ClientDuplexStream<object, Record<string, unknown>> } } } };
    };
    const client = new pkg.grpc.reflection.v1.ServerReflection(`unix:${socket}`, grpc.credentials.createInsecure());
    const ask = (req: object): Promise<Record<string, unknown>> =>
      new Promise((resolve, reject) => {
        const call = client.ServerReflectionInfo();
        call.on('data', (m) => {
          resolve(m);
          call.end();
        });
        call.on('error', reject);
        call.write(req);
      });
    const list = (await ask({ list_services: '*' }))['list_services_response'] as { service: Array<{ name: string }> };
    const names = list.service.map((s) => s.name).sort();
    assert.ok(names.includes('SpiffeWorkloadAPI'), names.join(','));
    assert.ok(names.includes('grpc.health.v1.Health'), names.join(','));
    const file = (await ask({ file_containing_symbol: 'SpiffeWorkloadAPI' }))['file_descriptor_response'] as { file_descriptor_proto: Buffer[] };
    assert.ok(file.file_descriptor_proto.length >= 1);
    assert.ok(Buffer.concat(file.file_descriptor_proto).includes('FetchX509SVID'));
    client.close();
  } finally {
    server.forceShutdown();
    rmSync(dir, { recursive: true, force: true });
  }
});
