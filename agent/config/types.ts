/** The validated spindle-agent configuration (agent/config/config.ts produces it). */
import type { ConfigReader } from '../../common/configfile.js';
import type { LogFormat, LogLevel } from '../../common/logging.js';
import type { TrustDomain } from '../../spiffe/id.js';
import type { ServerAddress } from '../client/serveraddress.js';
import type { ConnectionLimitSettings } from '../endpoints/connlimits.js';
import type { CallerLimitSettings } from '../endpoints/limits.js';

export interface AgentConfig {
  configPath?: string;
  trustDomain: TrustDomain;
  /** server_address as given (list elements trimmed, joined with ","). */
  serverAddress: string;
  serverPort: number;
  /** The servers of server_address, each with its port (server_port unless the element names one). */
  servers: ServerAddress[];
  /** Spindle extension: agent.server_max_connection_age in seconds (0: never replace the connection for its age). */
  serverMaxConnectionAge: number;
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
  /**
   * Per-caller limits of the Workload API socket (Workload API and SDS; agent/endpoints/limits.ts):
   * agent.workload_api_{max_streams,rate_limit,rate_burst}_per_{pid,uid}; and its connection
   * limits (agent/endpoints/connlimits.ts): agent.workload_api_max_conns{,_per_uid,_per_pid},
   * agent.workload_api_idle_timeout. 0 disables a limit.
   */
  workloadApi: CallerLimitSettings & ConnectionLimitSettings;
  /** Envoy SDS v3 served on the Workload API socket (SPIRE's agent `sds` section). */
  sds: {
    /** Resource name of the caller's default X.509-SVID (sds.default_svid_name, default "default"). */
    defaultSvidName: string;
    /** Resource name of the own trust domain's bundle (sds.default_bundle_name, default "ROOTCA"). */
    defaultBundleName: string;
    /** Resource name of all bundles, federated ones included (sds.default_all_bundles_name, default "ALL"). */
    defaultAllBundlesName: string;
    /** Send plain trusted_ca validation contexts instead of the SPIFFE validator (default false). */
    disableSpiffeCertValidation: boolean;
  };
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
