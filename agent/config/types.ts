/** The validated spindle-agent configuration (agent/config/config.ts produces it). */
import type { ConfigReader } from '../../common/configfile.js';
import type { LogFormat, LogLevel } from '../../common/logging.js';
import type { TrustDomain } from '../../spiffe/id.js';

export interface AgentConfig {
  configPath?: string;
  trustDomain: TrustDomain;
  serverAddress: string;
  serverPort: number;
  /** Absolute path of the Workload API socket. */
  socketPath: string;
  /** Absolute. Agent SVID, key and bundle live here. */
  dataDir: string;
  logLevel: LogLevel;
  logFormat: LogFormat;
  logFile?: string;
  /** join_token value from -joinToken, -joinTokenFile (trimmed) or agent.join_token. */
  joinToken?: string;
  /** Absolute path of a PEM bundle (-trustBundle / agent.trust_bundle_path). */
  trustBundlePath?: string;
  /** Skip server verification for the first connection only (-insecureBootstrap). */
  insecureBootstrap: boolean;
  plugins: {
    /** Exactly one node attestor. */
    nodeAttestor: { name: string; data: ConfigReader };
    /** Workload attestors (default: unix with no options). */
    workloadAttestors: Array<{ name: string; data: ConfigReader }>;
  };
  healthChecks: { listenerEnabled: boolean; bindAddress: string; bindPort: number; livePath: string; readyPath: string };
  telemetry: { prometheus?: { host: string; port: number } };
  /** Limits of the Workload API (sensible defaults). */
  workloadApi: { maxStreamsPerPid: number };
}

export interface AgentFlags {
  config?: string;
  expandEnv?: boolean;
  trustDomain?: string;
  serverAddress?: string;
  serverPort?: string | number;
  socketPath?: string;
  dataDir?: string;
  logLevel?: string;
  logFormat?: string;
  logFile?: string;
  joinToken?: string;
  joinTokenFile?: string;
  trustBundle?: string;
  trustBundleUrl?: string;
  insecureBootstrap?: boolean;
}
