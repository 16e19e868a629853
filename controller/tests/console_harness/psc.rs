//! A mock Pro Santé Connect: an OpenID provider on 127.0.0.1 (plain HTTP, as the console
//! config allows on loopback only) with PSC's shape: metadata only at
//! `/.well-known/wallet-openid-configuration` (the standard path answers 404), RS256 keys,
//! `acr` in the ID token, userinfo as a signed JWT (`application/jwt`) with `SubjectNameID`.
//! It auto-approves whoever [`MockPsc::log_in_as`] names, at the `acr` set there, and checks
//! the client, the redirect URL and the PKCE verifier (S256) like a real provider.
//!
//! Its RSA key comes from the `openssl` command (ring signs, but does not make RSA keys).

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use axum::{
    Form, Router,
    extract::{Query, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Redirect, Response},
    routing::{get, post},
};
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD as B64};
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

pub const CLIENT_ID: &str = "wardgate-console";
pub const CLIENT_SECRET: &str = "mock-psc-secret";

/// A health professional the mock logs in.
#[derive(Clone, Debug)]
pub struct User {
    pub sub: String,
    /// PSC's national identifier (the `SubjectNameID` userinfo claim).
    pub national_id: String,
    pub given_name: String,
    pub family_name: String,
}

impl User {
    pub fn new(national_id: &str, given: &str, family: &str) -> User {
        User {
            sub: format!("f:{national_id}"),
            national_id: national_id.into(),
            given_name: given.into(),
            family_name: family.into(),
        }
    }
}

struct Grant {
    redirect_uri: String,
    challenge: String,
    nonce: String,
    user: User,
    acr: String,
}

#[derive(Default)]
struct Flows {
    /// Who the next authorization logs in, and at which acr.
    user: Option<(User, String)>,
    codes: HashMap<String, Grant>,
    tokens: HashMap<String, User>,
    /// Token requests refused, and why (the tests read them).
    refused: Vec<String>,
    /// Users a script may pick by national id (`POST /mock/next/ID`).
    directory: HashMap<String, User>,
    /// The token endpoint answers 307 to another that issues tokens (a hijacked or
    /// misconfigured provider): a client that follows redirects would log in.
    redirect_token: bool,
    /// What to sign with a key the JWKS does not hold (an attacker's), if anything.
    forge: Option<Forge>,
    /// Userinfo as plain JSON rather than a signed JWT.
    userinfo_json: bool,
}

/// A token the mock signs with its rogue key (same `kid`), to be refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Forge {
    IdToken,
    Userinfo,
}

struct Inner {
    issuer: String,
    key: RsaKeyPair,
    /// Not in the JWKS.
    rogue: RsaKeyPair,
    n: Vec<u8>,
    redirect_uri: Mutex<String>,
    flows: Mutex<Flows>,
}

/// The running mock; dropped, it stops.
pub struct MockPsc {
    pub issuer: String,
    inner: Arc<Inner>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for MockPsc {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A fresh RSA key: its PKCS#1 DER (what `openssl pkey -outform DER` writes for RSA) and its modulus, from `openssl` (it must be installed).
fn rsa_key() -> (Vec<u8>, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let pem = dir.path().join("k.pem");
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .output()
            .expect("the `openssl` command (apt-get install openssl) makes the mock PSC's key");
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
        out.stdout
    };
    let pem_s = pem.to_str().unwrap();
    run(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        pem_s,
    ]);
    let der = run(&["pkey", "-in", pem_s, "-outform", "DER"]);
    let modulus = String::from_utf8(run(&["rsa", "-in", pem_s, "-noout", "-modulus"])).unwrap();
    let hex_n = modulus.trim().strip_prefix("Modulus=").unwrap();
    (der, hex::decode(hex_n).unwrap())
}

impl MockPsc {
    pub async fn start() -> MockPsc {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        // PSC's issuer has a path (a Keycloak realm); so does the mock's.
        let issuer = format!("http://{addr}/auth/realms/esante-wallet");
        let (der, n) = rsa_key();
        let inner = Arc::new(Inner {
            issuer: issuer.clone(),
            key: RsaKeyPair::from_der(&der).unwrap(),
            rogue: RsaKeyPair::from_der(&rsa_key().0).unwrap(),
            n,
            redirect_uri: Mutex::new(String::new()),
            flows: Mutex::new(Flows::default()),
        });
        let realm = "/auth/realms/esante-wallet";
        let app = Router::new()
            .route(
                &format!("{realm}/.well-known/wallet-openid-configuration"),
                get(discovery),
            )
            .route(&format!("{realm}/protocol/openid-connect/certs"), get(jwks))
            .route(
                &format!("{realm}/protocol/openid-connect/auth"),
                get(authorize),
            )
            .route(
                &format!("{realm}/protocol/openid-connect/token"),
                post(token),
            )
            .route(&format!("{realm}/elsewhere/token"), post(token_elsewhere))
            .route(
                &format!("{realm}/protocol/openid-connect/userinfo"),
                get(userinfo),
            )
            // Not PSC's: how a script outside this process (the browser test) picks who the
            // next authorization logs in.
            .route("/mock/next/{id}", post(next_user))
            .with_state(inner.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        MockPsc {
            issuer,
            inner,
            task,
        }
    }

    /// PSC's discovery URL.
    pub fn discovery_url(&self) -> String {
        format!("{}/.well-known/wallet-openid-configuration", self.issuer)
    }

    /// The only redirect URL the client may use.
    pub fn register(&self, redirect_uri: &str) {
        *self.inner.redirect_uri.lock().unwrap() = redirect_uri.into();
    }

    /// The next authorization logs `user` in at `acr` (`eidas1`: a CPS card or e-CPS).
    pub fn log_in_as(&self, user: &User, acr: &str) {
        self.inner.flows.lock().unwrap().user = Some((user.clone(), acr.into()));
    }

    /// Users `POST /mock/next/NATIONAL_ID` may pick (at `eidas1`).
    pub fn add_users(&self, users: &[User]) {
        let mut flows = self.inner.flows.lock().unwrap();
        for u in users {
            flows.directory.insert(u.national_id.clone(), u.clone());
        }
    }

    /// The mock's own base URL (its control endpoint is `/mock/next/ID`).
    pub fn base(&self) -> String {
        self.issuer
            .trim_end_matches("/auth/realms/esante-wallet")
            .to_string()
    }

    /// From now on `what` is signed with a key the JWKS does not hold.
    pub fn forge(&self, what: Forge) {
        self.inner.flows.lock().unwrap().forge = Some(what);
    }

    /// From now on everything is signed with the key in the JWKS.
    pub fn genuine(&self) {
        self.inner.flows.lock().unwrap().forge = None;
    }

    /// From now on userinfo is plain JSON (`application/json`), as most providers answer.
    pub fn userinfo_as_json(&self) {
        self.inner.flows.lock().unwrap().userinfo_json = true;
    }

    /// From now on the token endpoint redirects (307) to one that answers.
    pub fn redirect_token_endpoint(&self) {
        self.inner.flows.lock().unwrap().redirect_token = true;
    }

    /// Token requests refused so far, and why.
    pub fn refused(&self) -> Vec<String> {
        self.inner.flows.lock().unwrap().refused.clone()
    }

    /// Codes issued and not exchanged yet.
    pub fn codes_outstanding(&self) -> usize {
        self.inner.flows.lock().unwrap().codes.len()
    }
}

fn sign(inner: &Inner, claims: &Value, forged: bool) -> String {
    let key = if forged { &inner.rogue } else { &inner.key };
    let header = json!({"alg": "RS256", "typ": "JWT", "kid": "mock-psc-1"});
    let input = format!(
        "{}.{}",
        B64.encode(header.to_string()),
        B64.encode(claims.to_string())
    );
    let mut sig = vec![0; key.public().modulus_len()];
    key.sign(
        &RSA_PKCS1_SHA256,
        &ring::rand::SystemRandom::new(),
        input.as_bytes(),
        &mut sig,
    )
    .unwrap();
    format!("{input}.{}", B64.encode(sig))
}

/// `v` as an `application/json` answer (the controller builds axum without its `json`
/// feature).
fn json_ok(v: Value) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response()
}

fn random() -> String {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).unwrap();
    hex::encode(b)
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

async fn discovery(State(inner): State<Arc<Inner>>) -> Response {
    let base = format!("{}/protocol/openid-connect", inner.issuer);
    json_ok(json!({
        "issuer": inner.issuer,
        "authorization_endpoint": format!("{base}/auth"),
        "token_endpoint": format!("{base}/token"),
        "userinfo_endpoint": format!("{base}/userinfo"),
        "jwks_uri": format!("{base}/certs"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "userinfo_signing_alg_values_supported": ["RS256"],
        "acr_values_supported": ["eidas1"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "scopes_supported": ["openid", "scope_all"],
        "claims_supported": ["sub", "SubjectNameID", "given_name", "family_name", "acr"],
    }))
}

async fn jwks(State(inner): State<Arc<Inner>>) -> Response {
    json_ok(json!({"keys": [{
        "kty": "RSA", "use": "sig", "alg": "RS256", "kid": "mock-psc-1",
        "n": B64.encode(&inner.n), "e": B64.encode([1, 0, 1]),
    }]}))
}

async fn authorize(
    State(inner): State<Arc<Inner>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let get = |k: &str| q.get(k).cloned().unwrap_or_default();
    let redirect_uri = get("redirect_uri");
    if get("client_id") != CLIENT_ID || redirect_uri != *inner.redirect_uri.lock().unwrap() {
        return (StatusCode::BAD_REQUEST, "unknown client or redirect_uri").into_response();
    }
    if get("response_type") != "code"
        || get("code_challenge_method") != "S256"
        || get("code_challenge").is_empty()
        || get("nonce").is_empty()
        || !get("scope").split(' ').any(|s| s == "openid")
    {
        return (
            StatusCode::BAD_REQUEST,
            "PKCE S256, a nonce and openid required",
        )
            .into_response();
    }
    let mut flows = inner.flows.lock().unwrap();
    let Some((user, acr)) = flows.user.clone() else {
        return (StatusCode::FORBIDDEN, "nobody to log in").into_response();
    };
    let code = random();
    flows.codes.insert(
        code.clone(),
        Grant {
            redirect_uri: redirect_uri.clone(),
            challenge: get("code_challenge"),
            nonce: get("nonce"),
            user,
            acr,
        },
    );
    let state = get("state");
    let mut to = url::Url::parse(&redirect_uri).unwrap();
    to.query_pairs_mut()
        .append_pair("code", &code)
        .append_pair("state", &state);
    Redirect::to(to.as_str()).into_response()
}

async fn next_user(
    State(inner): State<Arc<Inner>>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> StatusCode {
    let mut flows = inner.flows.lock().unwrap();
    match flows.directory.get(&id).cloned() {
        Some(u) => {
            flows.user = Some((u, "eidas1".into()));
            StatusCode::NO_CONTENT
        }
        None => StatusCode::NOT_FOUND,
    }
}

fn basic_auth_ok(headers: &HeaderMap) -> bool {
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"))
    );
    headers
        .get(header::AUTHORIZATION)
        .is_some_and(|v| v.as_bytes() == expected.as_bytes())
}

async fn token(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    if inner.flows.lock().unwrap().redirect_token {
        let to = format!("{}/elsewhere/token", inner.issuer);
        return (StatusCode::TEMPORARY_REDIRECT, [(header::LOCATION, to)]).into_response();
    }
    issue(&inner, &headers, &f)
}

async fn token_elsewhere(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    issue(&inner, &headers, &f)
}

/// The token endpoint's work: the code, the client and the PKCE verifier checked, tokens
/// issued.
fn issue(inner: &Inner, headers: &HeaderMap, f: &HashMap<String, String>) -> Response {
    let get = |k: &str| f.get(k).cloned().unwrap_or_default();
    let mut flows = inner.flows.lock().unwrap();
    let refuse = |flows: &mut Flows, why: &str| {
        flows.refused.push(why.to_string());
        let mut r = json_ok(json!({"error": "invalid_grant", "error_description": why}));
        *r.status_mut() = StatusCode::BAD_REQUEST;
        r
    };
    if !basic_auth_ok(headers) {
        return refuse(&mut flows, "client authentication");
    }
    // A code is used once, even when the request is refused.
    let Some(grant) = flows.codes.remove(&get("code")) else {
        return refuse(&mut flows, "unknown or used code");
    };
    if get("grant_type") != "authorization_code" || get("redirect_uri") != grant.redirect_uri {
        return refuse(&mut flows, "grant type or redirect_uri");
    }
    let challenge = B64.encode(Sha256::digest(get("code_verifier").as_bytes()));
    if challenge != grant.challenge {
        return refuse(&mut flows, "PKCE verifier");
    }
    let access = random();
    flows.tokens.insert(access.clone(), grant.user.clone());
    let t = now();
    let id_token = sign(
        inner,
        &json!({
            "iss": inner.issuer, "sub": grant.user.sub, "aud": CLIENT_ID, "azp": CLIENT_ID,
            "iat": t, "exp": t + 300, "auth_time": t, "nonce": grant.nonce, "acr": grant.acr,
        }),
        flows.forge == Some(Forge::IdToken),
    );
    json_ok(json!({
        "access_token": access, "token_type": "Bearer", "expires_in": 300,
        "id_token": id_token, "scope": "openid scope_all",
    }))
}

async fn userinfo(State(inner): State<Arc<Inner>>, headers: HeaderMap) -> Response {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let (user, forge, as_json) = {
        let flows = inner.flows.lock().unwrap();
        let Some(user) = flows.tokens.get(token).cloned() else {
            return StatusCode::UNAUTHORIZED.into_response();
        };
        (user, flows.forge, flows.userinfo_json)
    };
    let claims = json!({
        "iss": inner.issuer, "aud": CLIENT_ID, "sub": user.sub,
        "SubjectNameID": user.national_id,
        "given_name": user.given_name, "family_name": user.family_name,
        // A display name: the console must never take a role from it.
        "preferred_username": "899700000001",
    });
    if as_json {
        return json_ok(claims);
    }
    let jwt = sign(&inner, &claims, forge == Some(Forge::Userinfo));
    ([(header::CONTENT_TYPE, "application/jwt")], jwt).into_response()
}
