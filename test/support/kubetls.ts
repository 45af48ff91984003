/**
 * TLS material for the fake Kubernetes API server and kubelet: a CA, a server certificate for
 * 127.0.0.1/localhost and a client certificate, made with the openssl CLI (independent of our
 * own X.509 code). All PEM.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openssl } from './testca.js';

export interface KubeTls {
  caCert: Buffer;
  serverCert: Buffer;
  serverKey: Buffer;
  clientCert: Buffer;
  clientKey: Buffer;
  /** Common name of the client certificate. */
  clientName: string;
}

/** A fresh CA with one server and one client certificate (`clientName` as the CN). */
export function makeKubeTls(clientName = 'spindle-client'): KubeTls {
  const dir = mkdtempSync(join(tmpdir(), 'spindle-kubetls-'));
  const p = (f: string): string => join(dir, f);
  try {
    const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
    openssl(['req', '-x509', ...ec, '-keyout', p('ca.key'), '-out', p('ca.crt'), '-days', '2', '-subj', '/CN=fake-kube-ca',
      '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
    const issue = (name: string, subj: string, ext: string): void => {
      openssl(['req', '-new', ...ec, '-keyout', p(`${name}.key`), '-out', p(`${name}.csr`), '-subj', subj]);
      writeFileSync(p(`${name}.ext`), ext);
      openssl(['x509', '-req', '-in', p(`${name}.csr`), '-CA', p('ca.crt'), '-CAkey', p('ca.key'), '-CAcreateserial', '-days', '2',
        '-out', p(`${name}.crt`), '-extfile', p(`${name}.ext`)]);
    };
    issue('server', '/CN=fake-kube', 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n');
    issue('client', `/CN=${clientName}`, 'extendedKeyUsage=clientAuth\n');
    return {
      caCert: readFileSync(p('ca.crt')),
      serverCert: readFileSync(p('server.crt')),
      serverKey: readFileSync(p('server.key')),
      clientCert: readFileSync(p('client.crt')),
      clientKey: readFileSync(p('client.key')),
      clientName,
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
