// The client without the Node-only parts (node:crypto, node:fs): for browsers, workers and edge
// runtimes. Imported as `@ecosire/sdk/client`.

export * from './client.js';
export { PageRequest, type Page } from './pagination.js';
export type { RequestOptions } from './http.js';
export * from './errors.js';
export { verifyLicenseToken, type LicenseTokenClaims, type VerifyLicenseTokenOptions } from './tokens.js';
export type { components, operations, paths } from './generated/schema.js';
