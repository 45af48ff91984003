// The SDK through the package's own name: `spindle/spiffe` (package.json "exports", resolved to dist/).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BundleSource, JwtSource, X509Source, authorizeID, jwtAuthHeaders, jwtSvidMiddleware, tlsconfig, validateJwtFromRequest } from 'spindle/spiffe';
import * as local from './index.js';

test("import { X509Source, tlsconfig, authorizeID } from 'spindle/spiffe' is this SDK", () => {
  assert.equal(X509Source, local.X509Source);
  assert.equal(authorizeID, local.authorizeID);
  assert.equal(tlsconfig.mtlsServerOptions, local.mtlsServerOptions);
  assert.equal(typeof tlsconfig.createMtlsServer, 'function');
});

test("the JWT-SVID parts are there too: JwtSource, BundleSource, jwtAuthHeaders, validateJwtFromRequest, jwtSvidMiddleware", () => {
  assert.equal(JwtSource, local.JwtSource);
  assert.equal(BundleSource, local.BundleSource);
  assert.equal(jwtAuthHeaders, local.jwtAuthHeaders);
  assert.equal(validateJwtFromRequest, local.validateJwtFromRequest);
  assert.equal(jwtSvidMiddleware, local.jwtSvidMiddleware);
});
