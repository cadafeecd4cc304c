//! A registry with bearer-token auth, as ghcr.io and Docker Hub run it: a
//! real Distribution registry (`docker-registry serve`) whose `auth.token`
//! sends every client to a token service, and that token service, run here
//! in-process on 127.0.0.1 (a hook of the HTTP test server, `http`). Each `TokenRegistry` has its own of both, on free ports, with
//! its own signing key and storage; dropping it kills and reaps the registry
//! and stops the token service.
//!
//! The token service speaks the Docker token protocol:
//!
//! - `GET /token?service=S&scope=repository:NAME:pull,push` (any number of
//!   `scope`s, each of which may hold several space-separated ones), with
//!   optional `Authorization: Basic`, as `docker login`, the engine and
//!   `curl` ask;
//! - `POST /token` with a form (`grant_type=password`, `username`,
//!   `password`, `service`, `scope`), the OAuth2 way that containerd and
//!   BuildKit (so `docker buildx build --push`) try first. Other grant
//!   types get 400, on which they fall back to `GET`.
//!
//! The right `USER`/`PASSWORD` get every action they ask for; anonymous
//! requests get `pull` only (or nothing, after `set_anonymous_pull(false)`),
//! and a token with fewer actions than asked for is not an error (the
//! registry answers `insufficient_scope`), as the token spec says; wrong
//! credentials get 401. A missing or unknown `service` gets 400.
//!
//! Tokens are JWTs signed ES256 with a P-256 key made by the `openssl` CLI
//! with a self-signed certificate, which is the registry's
//! `auth.token.rootcertbundle`. Distribution 2.8 finds the signing key from
//! the JWT header in this order: `x5c` (a certificate chain it verifies
//! against the bundle), else `jwk` (a key that must be in the bundle unless
//! it carries its own `x5c`), else `kid`, which must be the libtrust
//! fingerprint of a bundle key's public key (not a free-form name, nor the
//! RFC 7638 thumbprint that Distribution 3 uses). Tokens carry `x5c` by
//! default, `kid` after `set_key_header(KeyHeader::Kid)`.
//!
//! Every request to the token service is logged (`requests()`), and its
//! behaviour can be switched while a test runs (`set_mode`). Secrets stay off
//! command lines: the password reaches `docker login` and `curl` on stdin.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};

use super::http::{self, header, Reply, Request, Response, Server};
use super::{docker, free_port, run_with_stdin, wait_until, Output};

/// The user the token service knows.
pub const USER: &str = "mzbuild-token-user";
/// `USER`'s password. Not the password of `registry::PASSWORD`'s registry,
/// so that the secrets test of `publish.rs` keeps its meaning.
pub const PASSWORD: &str = "mzbuild-token-test-password";
/// The registry's `auth.token.service`: the `service` of its challenges and
/// the `aud` of its tokens.
pub const SERVICE: &str = "mzbuild-test-registry";
/// The registry's `auth.token.issuer`: the `iss` of the tokens.
pub const ISSUER: &str = "mzbuild-test-token-service";
/// How long a token is valid, in seconds (`expires_in`).
pub const EXPIRES_IN: u64 = 300;

/// How the token service answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// As a real token service.
    Normal,
    /// HTTP 500 with a plain-text body, to every request.
    TokenEndpointFails,
    /// HTTP 200 with an HTML page (a captive portal, a proxy's error page),
    /// to every request.
    TokenEndpointGarbage,
    /// Well-formed tokens, as in `Normal`, signed by a key that the registry
    /// does not trust: the token step succeeds and the registry answers 401
    /// `invalid_token`.
    UntrustedSigner,
}

/// How a token names the key that signed it (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyHeader {
    /// The signing certificate in `x5c`.
    X5c,
    /// The libtrust fingerprint of the signing key in `kid`.
    Kid,
}

/// One request to the token service, as `requests()` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRequest {
    /// `GET` or `POST`.
    pub method: String,
    /// The `service` parameter, if any.
    pub service: Option<String>,
    /// The requested scopes, one per entry (`repository:NAME:pull,push`).
    pub scopes: Vec<String>,
    /// The user the request's credentials name, if it has any.
    pub user: Option<String>,
    /// Whether it had credentials and they were right.
    pub authenticated: bool,
    /// The HTTP status of the answer.
    pub status: u16,
    /// What the issued token allows, one scope per entry
    /// (`repository:NAME:pull`), in request order; empty if none was issued.
    pub granted: Vec<String>,
}

/// A key that signs tokens, and the two ways a token header can name it.
struct Signer {
    key: EcdsaKeyPair,
    /// The libtrust fingerprint of the public key.
    kid: String,
    /// The certificate, DER in standard base64, if there is one.
    x5c: Option<String>,
}

impl Signer {
    fn new(pkcs8: &[u8], cert_der: Option<&[u8]>, rng: &SystemRandom) -> Signer {
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8, rng)
            .unwrap_or_else(|e| panic!("the token signing key is not a P-256 PKCS#8 key: {e}"));
        let kid = libtrust_key_id(key.public_key().as_ref());
        Signer { key, kid, x5c: cert_der.map(|der| STANDARD.encode(der)) }
    }

    /// A compact JWS (`header.claims.signature`) of `claims`.
    fn sign(&self, key_header: KeyHeader, claims: &serde_json::Value, rng: &SystemRandom) -> String {
        let header = match (key_header, &self.x5c) {
            (KeyHeader::X5c, Some(cert)) => serde_json::json!({ "typ": "JWT", "alg": "ES256", "x5c": [cert] }),
            _ => serde_json::json!({ "typ": "JWT", "alg": "ES256", "kid": self.kid }),
        };
        let input =
            format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()));
        // ECDSA_P256_SHA256_FIXED_SIGNING gives r || s, 32 bytes each: the
        // JWS form (not DER).
        let signature = self.key.sign(rng, input.as_bytes()).expect("signing a token");
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()))
    }
}

/// libtrust's key ID, which Distribution 2.8 matches a JWT's `kid` against:
/// SHA-256 of the DER `SubjectPublicKeyInfo`, first 30 bytes, base32 without
/// padding, in twelve groups of four joined by `:`. `point` is an
/// uncompressed P-256 point (65 bytes).
fn libtrust_key_id(point: &[u8]) -> String {
    assert_eq!(point.len(), 65, "not an uncompressed P-256 point");
    // SEQUENCE { SEQUENCE { id-ecPublicKey, prime256v1 }, BIT STRING (point) }
    const SPKI_PREFIX: [u8; 26] = [
        0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48,
        0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
    ];
    let spki: Vec<u8> = SPKI_PREFIX.iter().chain(point).copied().collect();
    let digest = ring::digest::digest(&ring::digest::SHA256, &spki);
    let b32 = mzbuild::fingerprint::base32(&digest.as_ref()[..30]);
    let groups: Vec<&str> = (0..b32.len()).step_by(4).map(|i| &b32[i..i + 4]).collect();
    groups.join(":")
}

/// What the token service's hook and the guard share.
struct State {
    mode: Mutex<Mode>,
    key_header: Mutex<KeyHeader>,
    anonymous_pull: AtomicBool,
    requests: Mutex<Vec<TokenRequest>>,
    trusted: Signer,
    untrusted: Signer,
    rng: SystemRandom,
    serial: AtomicU64,
}

/// A Distribution registry with token auth and its token service (see the
/// module docs). Dropping it kills the registry and stops the service.
pub struct TokenRegistry {
    state: Arc<State>,
    /// The token service.
    server: Option<Server>,
    registry: Child,
    url: String,
    realm: String,
    // Last: removed after the registry that uses it is gone.
    dir: tempfile::TempDir,
}

impl TokenRegistry {
    /// A new registry and token service, each on a free port of 127.0.0.1.
    /// Returns once the registry answers `/v2/` with a `Bearer` challenge.
    pub fn start() -> TokenRegistry {
        let dir = tempfile::Builder::new().prefix("token-registry").tempdir().unwrap();
        let (pkcs8, cert_der) = make_key_and_certificate(dir.path());
        let rng = SystemRandom::new();
        let trusted = Signer::new(&pkcs8, Some(&cert_der), &rng);
        let untrusted_pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let untrusted = Signer::new(untrusted_pkcs8.as_ref(), None, &rng);
        let state = Arc::new(State {
            mode: Mutex::new(Mode::Normal),
            key_header: Mutex::new(KeyHeader::X5c),
            anonymous_pull: AtomicBool::new(true),
            requests: Mutex::new(vec![]),
            trusted,
            untrusted,
            rng,
            serial: AtomicU64::new(0),
        });

        let server = {
            let state = state.clone();
            Server::start(move |request| Reply::Respond(handle(request, &state)))
        };
        let realm = format!("http://{}/token", server.host());
        // A registry that does not start drops the server on the way out.
        let (registry, url) = start_registry(dir.path(), &realm);
        TokenRegistry { state, server: Some(server), registry, url, realm, dir }
    }

    /// The registry's `host:port`, e.g. `127.0.0.1:41234` (no scheme).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The token service's URL as the registry's challenges name it
    /// (`http://127.0.0.1:PORT/token`).
    pub fn realm(&self) -> &str {
        &self.realm
    }

    /// Switch how the token service answers from the next request on.
    pub fn set_mode(&self, mode: Mode) {
        *self.state.mode.lock().unwrap() = mode;
    }

    /// How the token service answers now.
    pub fn mode(&self) -> Mode {
        *self.state.mode.lock().unwrap()
    }

    /// Whether anonymous requests get `pull` (the default) or a token
    /// without access, on which the registry answers 401
    /// `insufficient_scope` (as Docker Hub does for a private repository).
    pub fn set_anonymous_pull(&self, allow: bool) {
        self.state.anonymous_pull.store(allow, Ordering::SeqCst);
    }

    /// How the next tokens name their signing key.
    pub fn set_key_header(&self, key_header: KeyHeader) {
        *self.state.key_header.lock().unwrap() = key_header;
    }

    /// Every request the token service answered so far, oldest first. A
    /// request is logged before its answer is sent, so once a client has
    /// its answer, the request is here.
    pub fn requests(&self) -> Vec<TokenRequest> {
        self.state.requests.lock().unwrap().clone()
    }

    /// Forget the requests so far.
    pub fn clear_requests(&self) {
        self.state.requests.lock().unwrap().clear();
    }

    /// The registry's root certificate bundle (PEM), which holds the
    /// certificate of the key that signs the tokens.
    pub fn root_cert_bundle(&self) -> PathBuf {
        self.dir.path().join("token-signer.crt")
    }

    /// What the registry has logged so far (why it refused a token, for
    /// one).
    pub fn registry_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// The digest of `repo:tag` here, or `None` when it is absent, asked
    /// as an anonymous client asks: a pull token from the token service,
    /// then `HEAD` with it (`curl`; the token on stdin). The token request
    /// is in `requests()` like any other.
    #[track_caller]
    pub fn manifest_digest(&self, repo: &str, tag: &str) -> Option<String> {
        let (service, scope) = (format!("service={SERVICE}"), format!("scope=repository:{repo}:pull"));
        let answer = super::curl("", &["-G", "--data-urlencode", &service, "--data-urlencode", &scope, &self.realm]);
        let json: serde_json::Value = serde_json::from_str(&answer.stdout)
            .unwrap_or_else(|e| panic!("no token for {repo} from {} ({e})\n{answer}", self.realm));
        let token = json["token"].as_str().unwrap_or_else(|| panic!("no token in {json}"));
        let url = format!("http://{}/v2/{repo}/manifests/{tag}", self.url);
        let config = format!("header = \"Authorization: Bearer {token}\"\n");
        let out = super::curl(&config, &["-I", "-H", super::registry::ACCEPT, &url]);
        assert_eq!(out.code, Some(0), "curl -I {url}\n{out}");
        match out.stdout.split_whitespace().nth(1).unwrap_or_default() {
            "200" => Some(
                out.stdout
                    .lines()
                    .find_map(|l| {
                        let (name, value) = l.split_once(':')?;
                        name.eq_ignore_ascii_case("docker-content-digest").then(|| value.trim().to_string())
                    })
                    .unwrap_or_else(|| panic!("no digest for {url}\n{out}")),
            ),
            "404" => None,
            s => panic!("HTTP {s} for HEAD {url}\n{out}\n--- registry log ---\n{}", self.registry_log()),
        }
    }

    /// A private `DOCKER_CONFIG` directory, removed when dropped, in which
    /// `docker login` to this registry as `USER` succeeded (password on
    /// stdin).
    #[track_caller]
    pub fn docker_config(&self) -> tempfile::TempDir {
        let config = tempfile::Builder::new().prefix("token-registry-docker-config").tempdir().unwrap();
        let mut cmd = docker::command(&["login", &self.url, "--username", USER, "--password-stdin"]);
        cmd.env("DOCKER_CONFIG", config.path());
        let out = run_with_stdin(&mut cmd, &format!("{PASSWORD}\n"));
        assert_eq!(
            out.code,
            Some(0),
            "docker login {} failed\n{out}\n--- registry log ---\n{}",
            self.url,
            self.registry_log()
        );
        config
    }

    /// Build a tiny real image (`FROM scratch` and one `COPY`ed file whose
    /// content is unique to this call) and push it as `REPO:TAG` with
    /// `docker buildx build --push`, logged in through `docker_config`.
    /// Removes the local image afterwards; returns `URL/REPO:TAG`.
    #[track_caller]
    pub fn push_image(&self, docker_config: &Path, repo: &str, tag: &str) -> String {
        let out = self.try_push_image(docker_config, repo, tag);
        let reference = format!("{}/{repo}:{tag}", self.url);
        assert_eq!(
            out.code,
            Some(0),
            "pushing {reference} failed\n{out}\n--- registry log ---\n{}",
            self.registry_log()
        );
        reference
    }

    /// `push_image` without the check: what `docker buildx build --push`
    /// did.
    pub fn try_push_image(&self, docker_config: &Path, repo: &str, tag: &str) -> Output {
        let reference = format!("{}/{repo}:{tag}", self.url);
        let context = tempfile::Builder::new().prefix("token-registry-image").tempdir().unwrap();
        std::fs::write(context.path().join("Dockerfile"), "FROM scratch\nCOPY hello.txt /hello.txt\n").unwrap();
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
        std::fs::write(context.path().join("hello.txt"), format!("hello from {reference} at {nanos}\n")).unwrap();
        let out = super::run(
            docker::command(&["buildx", "build", "--provenance=false", "--push", "-t", &reference])
                .env("DOCKER_CONFIG", docker_config)
                .arg(context.path()),
        );
        let _ = docker::command(&["image", "rm", &reference])
            .env("DOCKER_CONFIG", docker_config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        out
    }
}

impl Drop for TokenRegistry {
    fn drop(&mut self) {
        let _ = self.registry.kill();
        let _ = self.registry.wait();
        // Then the token service.
        drop(self.server.take());
    }
}

/// The parameters of a `WWW-Authenticate: Bearer k="v",...` challenge, in
/// order; `None` unless it is a Bearer challenge.
pub fn parse_challenge(header: &str) -> Option<Vec<(String, String)>> {
    let rest = header.trim().strip_prefix("Bearer ")?;
    let mut params = vec![];
    let mut rest = rest.trim_start();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let after = after.strip_prefix('"')?;
        let end = after.find('"')?;
        params.push((key.trim().to_string(), after[..end].to_string()));
        rest = after[end + 1..].trim_start().trim_start_matches(',').trim_start();
    }
    Some(params)
}

/// The claims of a JWT, unverified.
#[track_caller]
pub fn jwt_claims(token: &str) -> serde_json::Value {
    jwt_part(token, 1)
}

/// The header of a JWT.
#[track_caller]
pub fn jwt_header(token: &str) -> serde_json::Value {
    jwt_part(token, 0)
}

#[track_caller]
fn jwt_part(token: &str, i: usize) -> serde_json::Value {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "not a compact JWS: {token}");
    let json = URL_SAFE_NO_PAD.decode(parts[i]).unwrap_or_else(|e| panic!("part {i} of {token}: {e}"));
    serde_json::from_slice(&json).unwrap_or_else(|e| panic!("part {i} of {token} is not JSON: {e}"))
}

/// A P-256 key (PKCS#8 DER) and a self-signed certificate for it (DER), made
/// by the `openssl` CLI in `dir`, where the certificate stays as
/// `token-signer.crt` (PEM) for the registry.
fn make_key_and_certificate(dir: &Path) -> (Vec<u8>, Vec<u8>) {
    let key = dir.join("token-signer.key");
    let cert = dir.join("token-signer.crt");
    let out = super::run(
        Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"])
            .args(["-days", "2", "-subj", "/CN=mzbuild-test-token-signer", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert),
    );
    assert_eq!(out.code, Some(0), "openssl could not make the token signing key\n{out}");
    let pem_der = |path: &Path, label: &str| -> Vec<u8> {
        let text = std::fs::read_to_string(path).unwrap();
        let begin = format!("-----BEGIN {label}-----");
        let end = format!("-----END {label}-----");
        let body = text
            .split_once(&begin)
            .and_then(|(_, rest)| rest.split_once(&end))
            .unwrap_or_else(|| panic!("no {label} in {}:\n{text}", path.display()))
            .0;
        STANDARD.decode(body.split_whitespace().collect::<String>()).unwrap()
    };
    (pem_der(&key, "PRIVATE KEY"), pem_der(&cert, "CERTIFICATE"))
}

/// Start `docker-registry serve` with token auth against `realm`, storage
/// and log in `dir`, on a free port (another if that one was taken in the
/// meantime); wait until it answers `/v2/` with a Bearer challenge.
fn start_registry(dir: &Path, realm: &str) -> (Child, String) {
    let log_path = dir.join("registry.log");
    for _ in 0..5 {
        let url = format!("127.0.0.1:{}", free_port());
        let config = dir.join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1
log:
  level: info
  formatter: text
storage:
  filesystem:
    rootdirectory: {data}
  delete:
    enabled: true
http:
  addr: {url}
  secret: token-registry-local-only
auth:
  token:
    realm: {realm}
    service: {SERVICE}
    issuer: {ISSUER}
    rootcertbundle: {bundle}
",
                data = dir.join("data").display(),
                bundle = dir.join("token-signer.crt").display(),
            ),
        )
        .unwrap();
        let (mut child, log_start) = super::own_registry::serve(&config, &log_path);
        // Until it exits or answers; a poll with a deadline, never a sleep.
        let (mut exited, mut answer) = (None, None);
        wait_until(Duration::from_secs(30), || {
            exited = child.try_wait().unwrap();
            answer = if exited.is_none() { http::get(&url, "/v2/").ok() } else { None };
            exited.is_some() || answer.is_some()
        });
        if let Some(status) = exited {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            if log.get(log_start..).unwrap_or_default().contains("address already in use") {
                continue;
            }
            panic!("docker-registry exited ({status}) before answering\n--- registry log ---\n{log}");
        }
        if let Some((status, headers)) = answer {
            let challenge = header(&headers, "www-authenticate").unwrap_or_default();
            let realm_param = format!("Bearer realm=\"{realm}\"");
            if status == 401 && challenge.starts_with(&realm_param) {
                return (child, url);
            }
            let _ = child.kill();
            let _ = child.wait();
            panic!("{url}/v2/ answered {status} with challenge {challenge:?}, not 401 with {realm_param}");
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "docker-registry did not answer on {url} within 30 s\n--- registry log ---\n{}",
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
    }
    panic!("no free port for docker-registry after 5 attempts")
}

// --- the token service ---------------------------------------------------

/// The token service's answer to `request`.
fn handle(request: &mut Request, state: &State) -> Response {
    if request.path() != "/token" {
        return Response::json(404, serde_json::json!({ "details": "not found" }));
    }
    if request.method != "GET" && request.method != "POST" {
        return Response::json(405, serde_json::json!({ "details": "method not allowed" }));
    }
    match request.body(1 << 20) {
        Ok(body) => token_response(state, request, &body),
        Err(e) => Response::text(400, "text/plain", format!("reading the body: {e}\n")),
    }
}

/// Answer a `GET` or `POST` to `/token`, and log it.
fn token_response(state: &State, request: &Request, body: &[u8]) -> Response {
    let method = request.method.as_str();
    let params =
        if method == "POST" { parse_form(&String::from_utf8_lossy(body)) } else { parse_form(request.query()) };
    let param = |name: &str| params.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let scopes: Vec<String> = params
        .iter()
        .filter(|(k, _)| k == "scope")
        .flat_map(|(_, v)| v.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .collect();
    // Credentials: Basic auth, or for the OAuth2 password grant the form.
    let credentials = match (method, param("username"), param("password")) {
        ("POST", Some(user), Some(password)) => Some((user, password)),
        _ => request.header("authorization").and_then(basic_credentials),
    };
    let authenticated = credentials.as_ref().is_some_and(|(u, p)| u == USER && p == PASSWORD);
    let mut granted = vec![];
    let mode = *state.mode.lock().unwrap();
    let response = match mode {
        Mode::TokenEndpointFails => {
            Response::text(500, "text/plain", "token service failure (TokenRegistry mode TokenEndpointFails)\n")
        }
        Mode::TokenEndpointGarbage => Response::text(
            200,
            "text/html",
            "<!DOCTYPE html>\n<html><head><title>Sign in</title></head>\
             <body><h1>Sign in to continue</h1></body></html>\n",
        ),
        Mode::Normal | Mode::UntrustedSigner => {
            if method == "POST" && param("grant_type").as_deref() != Some("password") {
                // No refresh tokens here: clients fall back to GET.
                Response::json(400, serde_json::json!({ "error": "unsupported_grant_type" }))
            } else if credentials.is_some() && !authenticated {
                Response::json(401, serde_json::json!({ "details": "incorrect username or password" }))
                    .with_header("WWW-Authenticate", format!("Basic realm=\"{ISSUER}\""))
            } else if param("service").as_deref() != Some(SERVICE) {
                Response::json(400, serde_json::json!({ "details": format!("unknown service {:?}", param("service")) }))
            } else {
                let access = grant(state, &scopes, authenticated);
                granted =
                    access.iter().map(|(kind, name, actions)| format!("{kind}:{name}:{}", actions.join(","))).collect();
                let subject = if authenticated { USER } else { "" };
                let signer = if mode == Mode::UntrustedSigner { &state.untrusted } else { &state.trusted };
                let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
                let token = issue(state, signer, subject, &access, now);
                Response::json(
                    200,
                    serde_json::json!({
                        "token": token,
                        "access_token": token,
                        "expires_in": EXPIRES_IN,
                        "issued_at": rfc3339(now),
                    }),
                )
            }
        }
    };
    state.requests.lock().unwrap().push(TokenRequest {
        method: method.to_string(),
        service: param("service"),
        scopes,
        user: credentials.map(|(u, _)| u),
        authenticated,
        status: response.status,
        granted,
    });
    response
}

/// What a token for `scopes` allows: `(type, name, actions)`, only those
/// with at least one action.
fn grant(state: &State, scopes: &[String], authenticated: bool) -> Vec<(String, String, Vec<String>)> {
    let anonymous_pull = state.anonymous_pull.load(Ordering::SeqCst);
    let mut access = vec![];
    for scope in scopes {
        // type:name:actions; split at the first and the last `:`, as
        // Distribution does (a name with a port would hold one).
        let Some((kind, rest)) = scope.split_once(':') else { continue };
        let Some((name, actions)) = rest.rsplit_once(':') else { continue };
        let actions: Vec<String> = actions
            .split(',')
            .filter(|a| !a.is_empty())
            .filter(|&a| authenticated || (anonymous_pull && kind == "repository" && a == "pull"))
            .map(str::to_string)
            .collect();
        if !actions.is_empty() {
            access.push((kind.to_string(), name.to_string(), actions));
        }
    }
    access
}

/// A signed token for `subject` allowing `access`, issued at `now` (Unix
/// seconds).
fn issue(state: &State, signer: &Signer, subject: &str, access: &[(String, String, Vec<String>)], now: u64) -> String {
    let serial = state.serial.fetch_add(1, Ordering::Relaxed);
    let claims = serde_json::json!({
        "iss": ISSUER,
        "sub": subject,
        "aud": SERVICE,
        "exp": now + EXPIRES_IN,
        "nbf": now,
        "iat": now,
        "jti": format!("{now}-{}-{serial}", std::process::id()),
        "access": access
            .iter()
            .map(|(kind, name, actions)| serde_json::json!({ "type": kind, "name": name, "actions": actions }))
            .collect::<Vec<_>>(),
    });
    let key_header = *state.key_header.lock().unwrap();
    signer.sign(key_header, &claims, &state.rng)
}

/// `user:password` of an `Authorization: Basic ...` header.
fn basic_credentials(value: &str) -> Option<(String, String)> {
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// `k=v&k=v` (a query string or an `application/x-www-form-urlencoded`
/// body), decoded, in order.
fn parse_form(text: &str) -> Vec<(String, String)> {
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (bytes[i], bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(hi), Some(lo)) => {
                out.push(hi << 4 | lo);
                i += 3;
            }
            (b'+', _, _) => {
                out.push(b' ');
                i += 1;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `secs` (Unix seconds) as RFC 3339 in UTC (`2024-05-01T12:00:00Z`), the
/// form Docker clients parse `issued_at` in.
fn rfc3339(secs: u64) -> String {
    let (days, rem) = (secs / 86400, secs % 86400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}
