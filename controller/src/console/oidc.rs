//! Login through an OpenID Connect provider (Pro Santé Connect or another): the authorization
//! code flow with PKCE (S256) and a nonce, by the `openidconnect` crate.
//!
//! `GET /login/oidc` reads the provider's metadata (its discovery URL from config, Pro Santé
//! Connect's `/.well-known/wallet-openid-configuration` included; cached an hour, or until a
//! token fails to verify or the provider fails to answer), keeps the
//! flow's state, nonce and PKCE verifier in memory under the state (ten minutes, used once),
//! binds it to the browser with a random `__Host-` cookie (SameSite=Lax: it must come back
//! on the provider's cross-site redirect), and sends the browser to the provider, asking for
//! the required `acr`. `GET /login/oidc/callback` takes the flow out (a replayed, forged or
//! expired state, or one from another browser, is refused), exchanges the code with the PKCE
//! verifier, checks the ID token (signature against the provider's JWKS, issuer, audience,
//! expiry, nonce, the access token hash when present) and its `acr`, reads the userinfo (JSON
//! or a signed JWT, verified against the same JWKS), maps the role from the claim in config
//! (never `preferred_username`) and starts a session as the break-glass login does.
//!
//! The HTTP client follows no redirect (a provider endpoint that redirects is an error, not a
//! hop to wherever it points) and speaks TLS by rustls.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    extract::{Query, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Redirect, Response},
};
use openidconnect::{
    AccessTokenHash, AuthenticationContextClass, AuthorizationCode, ClientId, ClientSecret,
    CsrfToken, EndpointMaybeSet, EndpointNotSet, EndpointSet, IssuerUrl, JsonWebKeySet, Nonce,
    OAuth2TokenResponse as _, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope,
    TokenResponse as _, UserInfoClaims,
    core::{CoreAuthenticationFlow, CoreClient, CoreGenderClaim, CoreProviderMetadata},
};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::{
    Console,
    i18n::Lang,
    logins::{self, Peer},
    page,
    session::{self, LoginSource, Principal},
};
use crate::{
    auth::Role,
    config::{OidcConfig, RoleMapping},
};

/// The cookie binding a login flow to the browser that started it.
const FLOW_COOKIE: &str = "__Host-wardgate-oidc";
/// How long a started login may take at the provider.
const FLOW_TTL: Duration = Duration::from_secs(600);
/// Flows kept at most (started and not come back): past it, expired ones are dropped, then
/// new logins are refused until some expire.
const MAX_FLOWS: usize = 10_000;
/// The provider's metadata and keys are read again after this long.
const METADATA_TTL: Duration = Duration::from_secs(3600);
/// Every request to the provider.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// Why an OIDC login failed.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("the identity provider: {detail}")]
    Provider { detail: String },
    #[error("unknown, used, expired or another browser's login state")]
    State,
    #[error("the provider refused the login: {error}")]
    Refused { error: String },
    #[error("the ID token: {detail}")]
    Token { detail: String },
    #[error("authentication context `{got}`, `{required}` required")]
    Acr { got: String, required: String },
    #[error("no console role for `{subject}`")]
    NoRole { subject: String },
    #[error("too many logins in progress")]
    Busy,
}

fn provider(e: impl std::fmt::Display) -> OidcError {
    OidcError::Provider {
        detail: e.to_string(),
    }
}

fn token(e: impl std::fmt::Display) -> OidcError {
    OidcError::Token {
        detail: e.to_string(),
    }
}

/// The client built from the provider's metadata.
type Client = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// Claims of the userinfo besides the standard ones (Pro Santé Connect: `SubjectNameID`,
/// `SubjectRefPro`, ...), kept as they came.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
struct Extra {
    #[serde(flatten)]
    claims: serde_json::Map<String, serde_json::Value>,
}
impl openidconnect::AdditionalClaims for Extra {}

/// A login started and not come back yet.
struct Flow {
    nonce: String,
    verifier: String,
    /// SHA-256 of the browser's flow cookie.
    browser: String,
    started: Instant,
}

/// The console's OIDC login: config, HTTP client, the provider's metadata, flows in progress.
pub struct Oidc {
    cfg: OidcConfig,
    secret: String,
    http: reqwest::Client,
    metadata: tokio::sync::Mutex<Option<(Instant, CoreProviderMetadata)>>,
    flows: Mutex<HashMap<String, Flow>>,
}

impl Oidc {
    pub fn new(cfg: &OidcConfig) -> anyhow::Result<Oidc> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .use_rustls_tls()
            .timeout(HTTP_TIMEOUT)
            .build()?;
        Ok(Oidc {
            secret: cfg.secret()?,
            cfg: cfg.clone(),
            http,
            metadata: tokio::sync::Mutex::new(None),
            flows: Mutex::new(HashMap::new()),
        })
    }

    /// The provider's metadata and keys, read at most every [`METADATA_TTL`].
    async fn metadata(&self) -> Result<CoreProviderMetadata, OidcError> {
        let mut cached = self.metadata.lock().await;
        if let Some((at, m)) = cached.as_ref()
            && at.elapsed() < METADATA_TTL
        {
            return Ok(m.clone());
        }
        let issuer = IssuerUrl::new(self.cfg.issuer.clone()).map_err(provider)?;
        let m = match &self.cfg.discovery_url {
            None => CoreProviderMetadata::discover_async(issuer, &self.http)
                .await
                .map_err(|e| provider(format!("discovery: {e}")))?,
            Some(url) => {
                let resp = self
                    .http
                    .get(url)
                    .header(header::ACCEPT, "application/json")
                    .send()
                    .await
                    .map_err(|e| provider(format!("discovery at {url}: {e}")))?;
                if resp.status() != reqwest::StatusCode::OK {
                    return Err(provider(format!(
                        "discovery at {url}: HTTP {}",
                        resp.status()
                    )));
                }
                let body = resp.bytes().await.map_err(provider)?;
                let m: CoreProviderMetadata = serde_json::from_slice(&body)
                    .map_err(|e| provider(format!("discovery at {url}: {e}")))?;
                if m.issuer() != &issuer {
                    return Err(provider(format!(
                        "discovery at {url} names issuer `{}`, not `{}`",
                        m.issuer().as_str(),
                        issuer.as_str()
                    )));
                }
                let jwks = JsonWebKeySet::fetch_async(m.jwks_uri(), &self.http)
                    .await
                    .map_err(|e| provider(format!("keys: {e}")))?;
                m.set_jwks(jwks)
            }
        };
        *cached = Some((Instant::now(), m.clone()));
        Ok(m)
    }

    fn client(&self, m: CoreProviderMetadata) -> Result<Client, OidcError> {
        Ok(CoreClient::from_provider_metadata(
            m,
            ClientId::new(self.cfg.client_id.clone()),
            Some(ClientSecret::new(self.secret.clone())),
        )
        .set_redirect_uri(RedirectUrl::new(self.cfg.redirect_url.clone()).map_err(provider)?))
    }

    /// Drops the cached metadata and keys: the next login reads them again (after a failed
    /// verification, in case the provider rotated its keys: a rotation costs one login).
    async fn forget_metadata(&self) {
        self.metadata.lock().await.take();
    }

    /// Starts a login: the provider's authorization URL and the browser's flow cookie value.
    async fn begin(&self) -> Result<(String, String), OidcError> {
        let client = self.client(self.metadata().await?)?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut req = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .set_pkce_challenge(challenge);
        for s in &self.cfg.scopes {
            req = req.add_scope(Scope::new(s.clone()));
        }
        if let Some(acr) = &self.cfg.required_acr {
            req = req.add_auth_context_value(AuthenticationContextClass::new(acr.clone()));
        }
        let (url, state, nonce) = req.url();
        let browser = session::random_token().map_err(|_| OidcError::Busy)?;
        let mut flows = self.flows.lock().unwrap_or_else(|e| e.into_inner());
        if flows.len() >= MAX_FLOWS {
            flows.retain(|_, f| f.started.elapsed() < FLOW_TTL);
            if flows.len() >= MAX_FLOWS {
                return Err(OidcError::Busy);
            }
        }
        flows.insert(
            state.secret().clone(),
            Flow {
                nonce: nonce.secret().clone(),
                verifier: verifier.secret().clone(),
                browser: hex::encode(Sha256::digest(browser.as_bytes())),
                started: Instant::now(),
            },
        );
        Ok((url.to_string(), browser))
    }

    /// Takes the flow of `state` out (once), if `browser` (its cookie) started it and it has
    /// not expired.
    fn take(&self, state: &str, browser: &str) -> Result<Flow, OidcError> {
        let flow = self
            .flows
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(state)
            .ok_or(OidcError::State)?;
        let hash = hex::encode(Sha256::digest(browser.as_bytes()));
        if flow.browser != hash || flow.started.elapsed() >= FLOW_TTL {
            return Err(OidcError::State);
        }
        Ok(flow)
    }

    /// Finishes a login: the principal of `code`, or why not.
    async fn finish(&self, code: &str, flow: Flow) -> Result<Principal, OidcError> {
        let client = self.client(self.metadata().await?)?;
        let tokens = client
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .map_err(provider)?
            .set_pkce_verifier(PkceCodeVerifier::new(flow.verifier))
            .request_async(&self.http)
            .await
            .map_err(|e| provider(format!("token: {e}")))?;
        let id_token = tokens
            .id_token()
            .ok_or_else(|| token("the token response has none"))?;
        let verifier = client.id_token_verifier();
        let claims = id_token
            .claims(&verifier, &Nonce::new(flow.nonce))
            .map_err(token)?;
        if let Some(expected) = claims.access_token_hash() {
            let alg = id_token.signing_alg().map_err(token)?;
            let key = id_token.signing_key(&verifier).map_err(token)?;
            let actual =
                AccessTokenHash::from_token(tokens.access_token(), alg, key).map_err(token)?;
            if &actual != expected {
                return Err(token("its at_hash does not match the access token"));
            }
        }
        let acr = claims
            .auth_context_ref()
            .map(|a| a.as_str().to_string())
            .unwrap_or_default();
        if let Some(required) = &self.cfg.required_acr
            && &acr != required
        {
            return Err(OidcError::Acr {
                got: acr,
                required: required.clone(),
            });
        }
        let subject = claims.subject().as_str().to_string();
        let info: UserInfoClaims<Extra, CoreGenderClaim> = client
            .user_info(
                tokens.access_token().clone(),
                Some(claims.subject().clone()),
            )
            .map_err(provider)?
            .request_async(&self.http)
            .await
            .map_err(|e| provider(format!("userinfo: {e}")))?;
        let values = claim_values(
            &self.cfg.roles.claim,
            &subject,
            &info.additional_claims().claims,
        );
        let role = role_for(&self.cfg.roles, &values).ok_or_else(|| OidcError::NoRole {
            subject: subject.clone(),
        })?;
        let name = claim_values(
            &self.cfg.name_claim,
            &subject,
            &info.additional_claims().claims,
        )
        .into_iter()
        .next()
        .unwrap_or_else(|| subject.clone());
        Ok(Principal {
            name,
            role,
            source: LoginSource::Oidc {
                issuer: self.cfg.issuer.clone(),
                subject,
                acr,
            },
        })
    }
}

/// The string values of `claim`: the ID token's subject for `sub`, else the userinfo's claim
/// (a string, or the strings of a list).
fn claim_values(
    claim: &str,
    subject: &str,
    userinfo: &serde_json::Map<String, serde_json::Value>,
) -> Vec<String> {
    if claim == "sub" {
        return vec![subject.to_string()];
    }
    match userinfo.get(claim) {
        Some(serde_json::Value::String(s)) => vec![s.clone()],
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    }
}

/// The first of engineer, soc, viewer whose list holds one of `values`.
fn role_for(mapping: &RoleMapping, values: &[String]) -> Option<Role> {
    [
        (Role::Engineer, &mapping.engineer),
        (Role::Soc, &mapping.soc),
        (Role::Viewer, &mapping.viewer),
    ]
    .into_iter()
    .find(|(_, list)| values.iter().any(|v| list.contains(v)))
    .map(|(role, _)| role)
}

/// `GET /login/oidc`: to the provider.
pub async fn start(State(console): State<Arc<Console>>, lang: Lang, peer: Peer) -> Response {
    let Some(oidc) = &console.oidc else {
        return page::not_found(lang).await;
    };
    if let Some(wait) = logins::locked(&console, peer, None) {
        return logins::too_many(lang, wait);
    }
    match oidc.begin().await {
        Ok((url, browser)) => {
            let mut r = Redirect::to(&url).into_response();
            let cookie = format!(
                "{FLOW_COOKIE}={browser}; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age={}",
                FLOW_TTL.as_secs()
            );
            if let Ok(v) = cookie.parse() {
                r.headers_mut().append(header::SET_COOKIE, v);
            }
            r
        }
        Err(e) => {
            tracing::error!(error = %e, "console: starting an OIDC login");
            page::error(
                lang,
                None,
                StatusCode::BAD_GATEWAY,
                lang.messages().oidc_failed,
                "",
            )
        }
    }
}

#[derive(Deserialize, Default)]
pub struct Callback {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

/// `GET /login/oidc/callback`: back from the provider.
pub async fn callback(
    State(console): State<Arc<Console>>,
    lang: Lang,
    peer: Peer,
    headers: HeaderMap,
    Query(q): Query<Callback>,
) -> Response {
    let Some(oidc) = &console.oidc else {
        return page::not_found(lang).await;
    };
    if let Some(wait) = logins::locked(&console, peer, None) {
        return logins::too_many(lang, wait);
    }
    let source = format!("oidc:{}", oidc.cfg.issuer);
    let browser = session::cookie(&headers, FLOW_COOKIE).unwrap_or("");
    let done = async {
        let flow = oidc.take(q.state.as_deref().unwrap_or(""), browser)?;
        if let Some(error) = &q.error {
            return Err(OidcError::Refused {
                error: error.chars().take(100).collect(),
            });
        }
        let code = q.code.as_deref().ok_or(OidcError::Refused {
            error: "no code".into(),
        })?;
        let done = oidc.finish(code, flow).await;
        if matches!(
            done,
            Err(OidcError::Token { .. } | OidcError::Provider { .. })
        ) {
            oidc.forget_metadata().await;
        }
        done
    }
    .await;
    let mut r = match done {
        Ok(who) => logins::logged_in(&console, lang, peer, who, "/").await,
        Err(e) => {
            let m = lang.messages();
            let (status, message) = match &e {
                OidcError::State => (StatusCode::BAD_REQUEST, m.oidc_state),
                OidcError::Acr { .. } => (StatusCode::FORBIDDEN, m.oidc_weak_acr),
                OidcError::NoRole { .. } => (StatusCode::FORBIDDEN, m.oidc_no_role),
                OidcError::Refused { .. } | OidcError::Token { .. } => {
                    (StatusCode::UNAUTHORIZED, m.oidc_failed)
                }
                OidcError::Provider { .. } | OidcError::Busy => {
                    (StatusCode::BAD_GATEWAY, m.oidc_failed)
                }
            };
            let user = match &e {
                OidcError::NoRole { subject } => subject.clone(),
                _ => String::new(),
            };
            logins::failed(&console, peer, None, &user, &source, &e.to_string()).await;
            page::error(lang, None, status, message, "")
        }
    };
    if let Ok(v) =
        format!("{FLOW_COOKIE}=; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=0").parse()
    {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping() -> RoleMapping {
        RoleMapping {
            claim: "SubjectNameID".into(),
            engineer: vec!["899700000001".into()],
            soc: vec!["899700000002".into(), "soc-team".into()],
            viewer: vec!["899700000003".into()],
        }
    }

    #[test]
    fn roles_come_from_the_configured_claim_only() {
        let info: serde_json::Map<_, _> = serde_json::from_str(
            r#"{"SubjectNameID": "899700000002", "preferred_username": "899700000001",
                "groups": ["x", "soc-team"]}"#,
        )
        .unwrap();
        let m = mapping();
        let v = claim_values("SubjectNameID", "f:1", &info);
        assert_eq!(role_for(&m, &v), Some(Role::Soc));
        // A list claim: any of its strings.
        let v = claim_values("groups", "f:1", &info);
        assert_eq!(role_for(&m, &v), Some(Role::Soc));
        // `sub` is the ID token's subject, not a userinfo claim.
        assert_eq!(
            role_for(&m, &claim_values("sub", "899700000003", &info)),
            Some(Role::Viewer)
        );
        // Missing claim, unmapped value: no role.
        assert_eq!(role_for(&m, &claim_values("absent", "f:1", &info)), None);
        assert_eq!(role_for(&m, &["899700000009".to_string()]), None);
    }
}
