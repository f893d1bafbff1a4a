// @ecosire/sdk: the typed client, error classes, webhook and license-token verification, and the
// offline license check. `@ecosire/sdk/client` is the same client without the Node-only parts
// (verifyWebhook, LicenseGuard), for browsers and other runtimes.

export * from './client.js';
export { PageRequest, type Page } from './pagination.js';
export type { RequestOptions } from './http.js';
export * from './errors.js';
export { verifyLicenseToken, type LicenseTokenClaims, type VerifyLicenseTokenOptions } from './tokens.js';
export {
  verifyRevocationList,
  gcsContains,
  revocationListNames,
  type RevocationListClaims,
  type GcsFilter,
  type VerifyRevocationListOptions,
} from './revocations.js';
export { verifyWebhook, type WebhookEvent, type VerifyWebhookOptions } from './webhooks.js';
export {
  requestOfflineActivation,
  importLicenseFile,
  createDeactivationProof,
  type OfflineActivationState,
  type OfflineActivationRequestOptions,
  type ImportLicenseFileOptions,
} from './offline.js';
export { LicenseGuard, type LicenseCheck, type LicenseGuardOptions } from './guard.js';
export type { components, operations, paths } from './generated/schema.js';
