//! Sign-in through an OpenID provider (Authentik, Keycloak, Auth0, …): the provider handle
//! (discovery, its signing keys), the browser code flow (`signin`), provider access tokens as
//! bearer credentials (`bearer`), and the one place a person at the provider becomes a local
//! account (`link`). docs/oidc.md is the operator's side of it.
//!
//! The provider is optional and may be down: the server starts without it (one log line), retries
//! discovery in the background, and password and API-key sign-in never depend on it. Once
//! discovered, its keys are cached; a token signed with a key we do not know makes us fetch them
//! again, at most once per `jwks_refresh_interval`, so forged `kid`s cannot make us hammer the
//! provider.

pub mod bearer;
pub mod link;
pub mod signin;

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use openidconnect::core::{
    CoreAuthDisplay, CoreAuthPrompt, CoreErrorResponseType, CoreGenderClaim, CoreJsonWebKey,
    CoreJsonWebKeySet, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm,
    CoreProviderMetadata, CoreRevocableToken, CoreRevocationErrorResponse,
    CoreTokenIntrospectionResponse, CoreTokenType,
};
use openidconnect::{
    AdditionalClaims, Client, ClientId, ClientSecret, EmptyExtraTokenFields, EndpointMaybeSet,
    EndpointNotSet, EndpointSet, IdTokenFields, IssuerUrl, JsonWebKeySetUrl, RedirectUrl,
    StandardErrorResponse, StandardTokenResponse,
};
use serde::{Deserialize, Serialize};

use crate::config::OidcConfig;

/// Claims beyond the standard ones, kept whole: the groups claim's name is configuration
/// (`ECOSIRE_OIDC_GROUPS_CLAIM`; Auth0 wants a namespaced URL).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ExtraClaims {
    #[serde(flatten)]
    pub claims: serde_json::Map<String, serde_json::Value>,
}

impl AdditionalClaims for ExtraClaims {}

type IdFields = IdTokenFields<
    ExtraClaims,
    EmptyExtraTokenFields,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;
pub(crate) type TokenResponse = StandardTokenResponse<IdFields, CoreTokenType>;

/// The client as discovery leaves it: authorization endpoint known, token and userinfo endpoints
/// as the provider lists them.
pub(crate) type OidcClient = Client<
    ExtraClaims,
    CoreAuthDisplay,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJsonWebKey,
    CoreAuthPrompt,
    StandardErrorResponse<CoreErrorResponseType>,
    TokenResponse,
    CoreTokenIntrospectionResponse,
    CoreRevocableToken,
    CoreRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// Signature algorithms accepted from the provider: asymmetric ones only. An HMAC-signed token
/// would be keyed with the client secret, which more than the provider knows.
pub(crate) const ALGORITHMS: &[CoreJwsSigningAlgorithm] = &[
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha384,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha512,
    CoreJwsSigningAlgorithm::RsaSsaPssSha256,
    CoreJwsSigningAlgorithm::RsaSsaPssSha384,
    CoreJwsSigningAlgorithm::RsaSsaPssSha512,
    CoreJwsSigningAlgorithm::EcdsaP256Sha256,
    CoreJwsSigningAlgorithm::EcdsaP384Sha384,
    CoreJwsSigningAlgorithm::EdDsa,
];

/// Clock skew tolerated on `exp` and `nbf` of provider tokens.
pub const CLOCK_SKEW_S: i64 = 60;

/// What discovery learned.
pub(crate) struct Discovered {
    pub client: OidcClient,
    pub jwks_uri: JsonWebKeySetUrl,
}

/// The configured provider: its configuration, what discovery learned (once it has), and its
/// signing keys.
pub struct Provider {
    pub config: OidcConfig,
    /// `ECOSIRE_PUBLIC_URL` + `/api/auth/oidc/callback`.
    pub redirect_uri: String,
    /// No redirects (a provider answer that redirects is an error, not a hop to follow), short
    /// timeouts; the provider's address is the operator's choice, so no SSRF guard.
    http: reqwest::Client,
    discovered: RwLock<Option<Arc<Discovered>>>,
    jwks: RwLock<Arc<CoreJsonWebKeySet>>,
    /// When the keys were last fetched; held across a fetch so concurrent requests with an
    /// unknown `kid` wait for one fetch instead of starting their own.
    last_fetch: tokio::sync::Mutex<Option<Instant>>,
}

impl Provider {
    pub fn new(config: OidcConfig, public_base: &str) -> Self {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            .build()
            .expect("a reqwest client with rustls builds");
        Provider {
            config,
            redirect_uri: format!(
                "{}/api/auth/oidc/callback",
                public_base.trim_end_matches('/')
            ),
            http,
            discovered: RwLock::new(None),
            jwks: RwLock::new(Arc::new(CoreJsonWebKeySet::new(vec![]))),
            last_fetch: tokio::sync::Mutex::new(None),
        }
    }

    /// Reads the provider's discovery document and keys. The error is one line for the log: what
    /// failed and why, never the client secret.
    pub async fn discover(&self) -> Result<(), String> {
        let issuer = IssuerUrl::new(self.config.issuer.clone()).map_err(|e| e.to_string())?;
        let metadata = CoreProviderMetadata::discover_async(issuer, &self.http)
            .await
            .map_err(|e| discovery_error(&e))?;
        let jwks_uri = metadata.jwks_uri().clone();
        let keys = metadata.jwks().clone();
        let client = OidcClient::from_provider_metadata(
            metadata,
            ClientId::new(self.config.client_id.clone()),
            self.config.client_secret.clone().map(ClientSecret::new),
        )
        .set_redirect_uri(
            RedirectUrl::new(self.redirect_uri.clone())
                .map_err(|e| format!("the redirect URI {}: {e}", self.redirect_uri))?,
        );
        *self.jwks.write().expect("not poisoned") = Arc::new(keys);
        *self.last_fetch.lock().await = Some(Instant::now());
        *self.discovered.write().expect("not poisoned") =
            Some(Arc::new(Discovered { client, jwks_uri }));
        Ok(())
    }

    /// Whether discovery has succeeded.
    pub fn is_ready(&self) -> bool {
        self.discovered.read().expect("not poisoned").is_some()
    }

    pub(crate) fn discovered(&self) -> Option<Arc<Discovered>> {
        self.discovered.read().expect("not poisoned").clone()
    }

    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The provider's keys as last fetched.
    pub(crate) fn keys(&self) -> Arc<CoreJsonWebKeySet> {
        self.jwks.read().expect("not poisoned").clone()
    }

    /// Fetches the keys again because a token names a key we do not have — unless they were
    /// fetched less than `jwks_refresh_interval` ago (then whoever fetched them has the newest we
    /// may ask for). Answers whether a fetch happened and succeeded.
    pub(crate) async fn refresh_keys(&self) -> bool {
        let Some(d) = self.discovered() else {
            return false;
        };
        let mut last = self.last_fetch.lock().await;
        if last.is_some_and(|t| t.elapsed() < self.config.jwks_refresh_interval) {
            return false;
        }
        *last = Some(Instant::now());
        match CoreJsonWebKeySet::fetch_async(&d.jwks_uri, &self.http).await {
            Ok(keys) => {
                tracing::info!(
                    keys = keys.keys().len(),
                    "OIDC: fetched the provider's signing keys again (a token named an unknown key)"
                );
                *self.jwks.write().expect("not poisoned") = Arc::new(keys);
                true
            }
            Err(e) => {
                tracing::warn!(
                    "OIDC: cannot fetch the provider's signing keys: {}",
                    discovery_error(&e)
                );
                false
            }
        }
    }
}

/// One line from a discovery failure and its causes (the HTTP client's error says which address
/// and why; a parse error says which field).
fn discovery_error<E: std::error::Error>(e: &E) -> String {
    let mut line = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = s.source();
    }
    line.replace('\n', " ")
}

/// Discovery at start: one attempt, bounded, and one line in the log when it fails.
pub async fn start(config: &OidcConfig, public_base: &str) -> Arc<Provider> {
    let provider = Arc::new(Provider::new(config.clone(), public_base));
    let attempt = tokio::time::timeout(Duration::from_secs(10), provider.discover()).await;
    match attempt.unwrap_or_else(|_| Err("no answer within 10 s".into())) {
        Ok(()) => tracing::info!(issuer = %config.issuer, "OIDC: provider discovered"),
        Err(e) => tracing::error!(
            "OIDC: cannot use the provider at {}: {e}; password and API-key sign-in work, retrying every {} s",
            config.issuer,
            config.retry_interval.as_secs().max(1)
        ),
    }
    provider
}

/// Retries discovery until it succeeds (or the server stops).
pub async fn keep_discovering(
    provider: Arc<Provider>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    while !provider.is_ready() {
        tokio::select! {
            _ = tokio::time::sleep(provider.config.retry_interval) => {}
            _ = stop.changed() => return,
        }
        match provider.discover().await {
            Ok(()) => tracing::info!(issuer = %provider.config.issuer, "OIDC: provider discovered"),
            Err(e) => tracing::warn!(
                "OIDC: the provider at {} is still unusable: {e}",
                provider.config.issuer
            ),
        }
    }
}
