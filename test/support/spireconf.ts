/**
 * SPIRE's quickstart server.conf and agent.conf in SPIRE's own HCL, each with the same settings
 * written as YAML, for tests that check an HCL file reads and validates exactly like YAML.
 */
/** SPIRE's quickstart server.conf, in SPIRE's own HCL. */
export const SPIRE_SERVER_CONF = `# A SPIRE server.conf, unchanged
server {
    bind_address = "127.0.0.1"
    bind_port = "8081"
    socket_path = "/tmp/spire-server/private/api.sock"
    trust_domain = "example.org"
    data_dir = "./.data"
    log_level = "DEBUG"
    ca_ttl = "168h"
    default_x509_svid_ttl = "1h"
    ca_subject {
        country = ["US"]
        organization = ["SPIFFE"]
    }
}

plugins {
    DataStore "sql" {
        plugin_data {
            database_type = "sqlite3"
            connection_string = "./.data/datastore.sqlite3"
        }
    }

    NodeAttestor "join_token" {
        plugin_data {}
    }

    KeyManager "memory" {
        plugin_data = {}
    }

    UpstreamAuthority "disk" {
        plugin_data {
            key_file_path = "./dummy_upstream_ca.key"
            cert_file_path = "./dummy_upstream_ca.crt"
        }
    }
}

health_checks {
    listener_enabled = true
    bind_address = "127.0.0.1"
    bind_port = "8080"
    live_path = "/live"
    ready_path = "/ready"
}

telemetry {
    Prometheus {
        port = 9988
    }
}
`;

/** The same settings as SPIRE_SERVER_CONF, in YAML. */
export const SPIRE_SERVER_YAML = `server:
  bind_address: "127.0.0.1"
  bind_port: "8081"
  socket_path: /tmp/spire-server/private/api.sock
  trust_domain: example.org
  data_dir: ./.data
  log_level: DEBUG
  ca_ttl: 168h
  default_x509_svid_ttl: 1h
  ca_subject:
    country: [US]
    organization: [SPIFFE]
plugins:
  DataStore:
    sql:
      plugin_data:
        database_type: sqlite3
        connection_string: ./.data/datastore.sqlite3
  NodeAttestor:
    join_token:
      plugin_data: {}
  KeyManager:
    memory:
      plugin_data: {}
  UpstreamAuthority:
    disk:
      plugin_data:
        key_file_path: ./dummy_upstream_ca.key
        cert_file_path: ./dummy_upstream_ca.crt
health_checks:
  listener_enabled: true
  bind_address: "127.0.0.1"
  bind_port: "8080"
  live_path: /live
  ready_path: /ready
telemetry:
  Prometheus:
    port: 9988
`;

/** SPIRE's quickstart agent.conf, in SPIRE's own HCL (KeyManager disk as SPIRE ships it). */
export const SPIRE_AGENT_CONF = `agent {
    data_dir = "./.data"
    log_level = "DEBUG"
    trust_domain = "example.org"
    trust_bundle_path = "./dummy_root_ca.crt"
    server_address = "127.0.0.1"
    server_port = "8081"
    socket_path = "/tmp/spire-agent/public/api.sock"
}

plugins {
    NodeAttestor "join_token" {
        plugin_data {}
    }
    KeyManager "disk" {
        plugin_data {
            directory = "./.data"
        }
    }
    WorkloadAttestor "unix" {
        plugin_data {}
    }
}
`;

/** The same settings as SPIRE_AGENT_CONF, in YAML. */
export const SPIRE_AGENT_YAML = `agent:
  data_dir: ./.data
  log_level: DEBUG
  trust_domain: example.org
  trust_bundle_path: ./dummy_root_ca.crt
  server_address: "127.0.0.1"
  server_port: "8081"
  socket_path: /tmp/spire-agent/public/api.sock
plugins:
  NodeAttestor:
    join_token:
      plugin_data: {}
  KeyManager:
    disk:
      plugin_data:
        directory: ./.data
  WorkloadAttestor:
    unix:
      plugin_data: {}
`;
