/** The logger both server APIs (admin and agent) take: the pino methods they use; a pino Logger satisfies it. */
export interface ApiLogger {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
  debug(obj: object, msg?: string): void;
  child(bindings: Record<string, unknown>): ApiLogger;
}
