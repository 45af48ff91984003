/**
 * The server's own X509-SVID (`spiffe://<td>/spire/server`), presented on the agent API's TLS.
 *
 * A fresh EC P-256 key pair per SVID (held in memory only), signed by the ACTIVE X.509 CA,
 * renewed at half its lifetime and at once when the active CA changes (CaManager.rotate drives
 * both). Listeners get PEM ready for grpc-js: the chain (leaf, then intermediates up to but
 * excluding the bundle's root) and the PKCS#8 key.
 */
import type { KeyObject } from 'node:crypto';
import type { SpiffeId, TrustDomain } from '../../spiffe/id.js';
import { serverIdOf } from '../../common/spireids.js';
import { exportPrivateKeyPkcs8, generateKeyPair } from '../../spiffe/keys.js';
import { certificatesToPem, privateKeyToPem } from '../../spiffe/pem.js';

export interface ServerSvid {
  id: SpiffeId;
  /** Leaf first, then intermediates (excluding the bundle root), PEM. */
  certChainPem: string;
  /** PKCS#8 PEM. */
  privateKeyPem: string;
  /** DER, leaf first. */
  chain: Buffer[];
  privateKey: KeyObject;
  serialHex: string;
  issuedAt: Date;
  notAfter: Date;
  /** ID of the CA that signed it (its serial hex). */
  caId: string;
  /** Logging-safe view (no key material). */
  toJSON(): object;
}

/** Signs the server SVID: returns the chain (leaf first), notAfter and serial. */
export type ServerSvidSigner = (id: SpiffeId, publicKey: KeyObject, now: Date) => { chain: Buffer[]; notAfter: Date; serialHex: string; caId: string };

export class ServerIdentity {
  readonly id: SpiffeId;
  #current: ServerSvid | undefined;
  readonly #listeners = new Set<(svid: ServerSvid) => void>();
  readonly #onListenerError: (err: unknown) => void;

  constructor(td: TrustDomain, onListenerError: (err: unknown) => void) {
    this.id = serverIdOf(td);
    this.#onListenerError = onListenerError;
  }

  current(): ServerSvid | undefined {
    return this.#current;
  }

  /** True when there is none, it passed half its life, or another CA than `activeCaId` signed it. */
  needsRenewal(now: Date, activeCaId: string): boolean {
    const c = this.#current;
    if (c === undefined || c.caId !== activeCaId) return true;
    const half = c.issuedAt.getTime() + (c.notAfter.getTime() - c.issuedAt.getTime()) / 2;
    return now.getTime() >= half;
  }

  async renew(sign: ServerSvidSigner, now: Date): Promise<ServerSvid> {
    const { privateKey, publicKey } = await generateKeyPair('ec-p256');
    const signed = sign(this.id, publicKey, now);
    const svid: ServerSvid = {
      id: this.id,
      certChainPem: certificatesToPem(signed.chain),
      privateKeyPem: privateKeyToPem(exportPrivateKeyPkcs8(privateKey)),
      chain: signed.chain,
      privateKey,
      serialHex: signed.serialHex,
      issuedAt: now,
      notAfter: signed.notAfter,
      caId: signed.caId,
      toJSON: () => ({ id: this.id, serialHex: signed.serialHex, notAfter: signed.notAfter, caId: signed.caId }),
    };
    this.#current = svid;
    for (const l of [...this.#listeners]) {
      try {
        l(svid);
      } catch (err) {
        this.#onListenerError(err);
      }
    }
    return svid;
  }

  onChange(listener: (svid: ServerSvid) => void): () => void {
    this.#listeners.add(listener);
    return () => {
      this.#listeners.delete(listener);
    };
  }
}
