/** The admin API (local Unix socket): service implementations and the server that hosts them. */
export { createAdminServices, type AdminServices } from './service.js';
export { startAdminServer, ADMIN_SOCKET_MODE, ADMIN_SOCKET_DIR_MODE, type AdminServer, type AdminServerOptions } from './server.js';
export { DEFAULT_JOIN_TOKEN_TTL_SECONDS, type AdminDeps, type ApiLogger } from './types.js';
export { ApiError, statusOf, toServiceError } from '../errors.js';
export { hashJoinToken } from '../../../attestors/node/join_token/token.js';
