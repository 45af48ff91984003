// agent/errors.ts: the mapping of server gRPC errors to operator text for the cases the process
// tests (test/startup-errors.test.ts) do not reach, and which refusals make the agent exit.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { status } from '@grpc/grpc-js';
import { describeServerError, mustReattestMessage, refusalKind } from './errors.js';

const ctx = { address: 'spire.example:8081', trustDomain: 'example.org', bundle: '/etc/b.pem (-trustBundle)', joinToken: 'tok' };
const grpcErr = (code: number, details: string): Error => Object.assign(new Error(`${code} X: ${details}`), { code, details });

test('describeServerError: unresolvable host, deadline, expired token, other refusals and other codes; never the "N CODE:" form', () => {
  const reach = 'check that it is running and that -serverAddress / server_address and -serverPort / server_port point at it';
  assert.equal(
    describeServerError(grpcErr(status.UNAVAILABLE, 'No connection established. Last error: Error: getaddrinfo ENOTFOUND spire.example'), ctx),
    `cannot reach spindle-server at spire.example:8081 (the host name does not resolve): ${reach}`,
  );
  assert.equal(describeServerError(grpcErr(status.DEADLINE_EXCEEDED, 'Deadline exceeded after 30.001s'), ctx), `cannot reach spindle-server at spire.example:8081 (no answer in time): ${reach}`);
  assert.equal(
    describeServerError(grpcErr(status.PERMISSION_DENIED, 'attestation failed: join token has expired'), ctx),
    'the server at spire.example:8081 refused join token tok: it has expired; create a new one with `spindle-server token generate` and pass it with -joinToken',
  );
  assert.equal(describeServerError(grpcErr(status.PERMISSION_DENIED, 'agent spiffe://example.org/a is banned'), ctx), 'the server at spire.example:8081 refused this agent: agent spiffe://example.org/a is banned');
  assert.equal(describeServerError(grpcErr(status.INTERNAL, 'boom'), ctx), 'the call to spindle-server at spire.example:8081 failed (Internal): boom');
  assert.equal(describeServerError(new Error('plain'), ctx), 'plain');
});

test('refusalKind: evicted and banned (PERMISSION_DENIED) make a join-token agent exit; a superseded SVID or an expired stream does not', () => {
  assert.equal(refusalKind(grpcErr(status.PERMISSION_DENIED, 'agent spiffe://example.org/a has been evicted: attest again')), 'evicted');
  assert.equal(refusalKind(grpcErr(status.PERMISSION_DENIED, 'agent spiffe://example.org/a is not attested (evicted?): attest again')), 'evicted');
  assert.equal(refusalKind(grpcErr(status.PERMISSION_DENIED, 'agent spiffe://example.org/a is banned')), 'banned');
  assert.equal(refusalKind(grpcErr(status.PERMISSION_DENIED, 'agent SVID serial 01 has been superseded; use the current agent SVID')), undefined);
  assert.equal(refusalKind(grpcErr(status.UNAUTHENTICATED, 'agent SVID expired at ...')), undefined);
  assert.equal(refusalKind(new Error('has been evicted')), undefined);
});

test('mustReattestMessage: join-token agents are told to get a new token; others to restart (after the ban is lifted)', () => {
  assert.equal(
    mustReattestMessage('spiffe://example.org/spire/agent/join_token/t1', 'evicted', '/var/lib/a'),
    'the server has evicted this agent (spiffe://example.org/spire/agent/join_token/t1) and it cannot attest again by itself (its join token was used up); its stored agent SVID was removed from /var/lib/a. Create a new join token with `spindle-server token generate` and restart the agent with -joinToken <token>. Exiting with code 3.',
  );
  assert.equal(
    mustReattestMessage('spiffe://example.org/spire/agent/x/n1', 'banned', '/var/lib/a'),
    'the server has banned this agent (spiffe://example.org/spire/agent/x/n1) and it cannot attest again by itself; its stored agent SVID was removed from /var/lib/a. Restart the agent so that it attests again with its node attestor, once `spindle-server agent evict` has removed the ban. Exiting with code 3.',
  );
});
