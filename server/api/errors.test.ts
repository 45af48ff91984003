// The error-to-status mapping for a datastore that cannot be reached (DataStoreError 'unavailable').
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DataStoreError } from '../datastore/types.js';
import { GrpcStatus, statusOf, type Audience } from './errors.js';
import type { ApiLogger } from './logger.js';

function logger(lines: string[]): ApiLogger {
  const log: ApiLogger = {
    debug: () => undefined,
    info: (_o, m) => lines.push(`info ${m ?? ''}`),
    warn: (_o, m) => lines.push(`warn ${m ?? ''}`),
    error: (_o, m) => lines.push(`error ${m ?? ''}`),
    child: () => log,
  };
  return log;
}

test('an unreachable datastore: UNAVAILABLE with the operator message to admins, without the host to agents, logged by no call', () => {
  const message = 'datastore unavailable: cannot reach PostgreSQL at 10.1.2.3:5432 (connection refused); nothing was written';
  const err = new DataStoreError('unavailable', message, { redacted: 'datastore unavailable: the server cannot reach its database; nothing was written; retry later' });
  const lines: string[] = [];
  assert.deepEqual(statusOf(err, logger(lines)), { code: GrpcStatus.UNAVAILABLE, message });
  const agent = statusOf(err, logger(lines), { method: 'RenewAgent' }, 'agent' satisfies Audience);
  assert.equal(agent.code, GrpcStatus.UNAVAILABLE);
  assert.doesNotMatch(agent.message, /10\.1\.2\.3|5432/);
  assert.equal(agent.message, 'datastore unavailable: the server cannot reach its database; nothing was written; retry later');
  assert.deepEqual(lines, [], 'the datastore logs an outage once; calls do not');
  // Without a redacted form, agents still get no detail.
  assert.equal(statusOf(new DataStoreError('unavailable', message), logger(lines), {}, 'agent').message, 'datastore unavailable; retry later');
  // Any other io failure keeps its hidden message, and is logged.
  assert.deepEqual(statusOf(new DataStoreError('io', 'postgres datastore: x failed: y'), logger(lines)), { code: GrpcStatus.UNAVAILABLE, message: 'datastore unavailable; see the server log' });
  assert.deepEqual(lines, ['error datastore failure']);
});
