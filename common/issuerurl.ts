/**
 * The JWT issuer URL (`iss`), as the server's `jwt_issuer` and the OIDC Discovery Provider's
 * `jwt_issuer` / `jwks_uri` take it. SPIRE accepts any string with a scheme and a host; Spindle
 * also requires what OpenID Connect Discovery needs of an issuer so relying parties can find
 * `<issuer>/.well-known/openid-configuration`: an absolute `https` URL (`http` is accepted for a
 * provider behind a TLS-terminating proxy or a local trial), a host, no user info, query or
 * fragment. The text is kept as written: relying parties compare `iss` byte for byte.
 */

/** Why `value` is not a usable issuer URL, or undefined when it is. */
export function issuerUrlProblem(value: string, what = 'URL'): string | undefined {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return `must be an absolute ${what} such as https://oidc.example.org, got ${JSON.stringify(value)}`;
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') {
    return `must be an https (or http) ${what}, got scheme ${JSON.stringify(url.protocol.slice(0, -1))} in ${JSON.stringify(value)}`;
  }
  if (url.hostname === '') return `must name a host, got ${JSON.stringify(value)}`;
  if (url.username !== '' || url.password !== '') return `must not carry user information, got ${JSON.stringify(value)}`;
  if (url.search !== '' || value.includes('?')) return `must not have a query (OpenID Connect Discovery forbids it), got ${JSON.stringify(value)}`;
  if (url.hash !== '' || value.includes('#')) return `must not have a fragment (OpenID Connect Discovery forbids it), got ${JSON.stringify(value)}`;
  if (/\s/.test(value)) return `must not contain white space, got ${JSON.stringify(value)}`;
  return undefined;
}
