/**
 * k8s_psat, agent half (SPIRE's k8s_psat agent plugin): sends the pod's projected
 * service-account token with the configured cluster name. The token file is read on every
 * payload() call, since the kubelet rotates it; the server accepts re-attestation with a new one.
 *
 *   cluster: <name>        required: the name the server knows this cluster by
 *   token_path: <file>     default /var/run/secrets/tokens/spindle-agent (SPIRE: .../spire-agent)
 */
import { readFile } from 'node:fs/promises';
import type { ConfigReader } from '../../../common/configfile.js';
import { AttestationError, type AgentNodeAttestor } from '../types.js';
import { encodePsatPayload, isValidClusterName, K8S_PSAT } from './payload.js';

export const DEFAULT_TOKEN_PATH = '/var/run/secrets/tokens/spindle-agent';

/** A token larger than this is not a projected service-account token. */
const MAX_TOKEN_BYTES = 32 * 1024;

export interface K8sPsatAgentOptions {
  cluster: string;
  /** Default DEFAULT_TOKEN_PATH. */
  tokenPath?: string;
  /** Injectable for tests. */
  readFile?: (path: string) => Promise<Buffer>;
}

export class K8sPsatAgentAttestor implements AgentNodeAttestor {
  readonly name = K8S_PSAT;
  readonly cluster: string;
  readonly tokenPath: string;
  readonly #readFile: (path: string) => Promise<Buffer>;

  constructor(opts: K8sPsatAgentOptions) {
    if (opts.cluster === '') throw new Error('k8s_psat: cluster must not be empty');
    this.cluster = opts.cluster;
    this.tokenPath = opts.tokenPath ?? DEFAULT_TOKEN_PATH;
    this.#readFile = opts.readFile ?? ((p) => readFile(p));
  }

  /** Validates plugin_data (`cluster` required, `token_path`), throwing ConfigError naming the key. */
  static fromConfig(data: ConfigReader, deps: { readFile?: (path: string) => Promise<Buffer> } = {}): K8sPsatAgentAttestor {
    const cluster = data.string('cluster');
    if (cluster === undefined) data.problem('cluster', 'is required: the name of this cluster as configured on the server');
    else if (!isValidClusterName(cluster)) {
      data.problem('cluster', `must be usable as one SPIFFE ID path segment (a-z A-Z 0-9 . - _), got ${JSON.stringify(cluster.slice(0, 100))}`);
    }
    const tokenPath = data.string('token_path', DEFAULT_TOKEN_PATH);
    data.throwIfInvalid();
    return new K8sPsatAgentAttestor({ cluster: cluster!, tokenPath, ...(deps.readFile ? { readFile: deps.readFile } : {}) });
  }

  async payload(): Promise<Buffer> {
    let raw: Buffer;
    try {
      raw = await this.#readFile(this.tokenPath);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      const why = code === 'ENOENT' ? 'file not found (is the projected token volume mounted?)' : code === 'EACCES' ? 'permission denied' : (err as Error).message;
      throw new AttestationError('token_unreadable', `k8s_psat: cannot read the service account token ${this.tokenPath}: ${why}`, { cause: err });
    }
    if (raw.length > MAX_TOKEN_BYTES) throw new AttestationError('token_unreadable', `k8s_psat: service account token ${this.tokenPath} is ${raw.length} bytes, too large for a token`);
    const token = raw.toString('utf8').trim();
    if (token === '') throw new AttestationError('token_unreadable', `k8s_psat: service account token ${this.tokenPath} is empty`);
    return encodePsatPayload({ cluster: this.cluster, token });
  }
}
