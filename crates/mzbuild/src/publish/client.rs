//! The registry HTTP API (distribution v2), without docker: "is this image
//! published?", "are these credentials good?", and reading and writing
//! manifests and blobs. Authentication as registries ask for it: basic auth,
//! or the bearer-token flow (anonymous or with credentials) that ghcr.io and
//! Docker Hub use. Every request goes through one retry helper: network
//! errors, 5xx and 429 are retried with backoff, 3 attempts in all; a host
//! name that does not resolve is not transient (offline, or a typo) and is
//! not retried. A registry that cannot be reached is an [`Unreachable`]
//! error, so that callers can tell "offline" from a refusal.
//!
//! Blobs are streamed, never held in memory: [`Client::read_blob`] hands out
//! the response body as a reader, and [`Client::finish_upload`] /
//! [`Client::upload_chunk`] send a reader as the request body. A streamed
//! body cannot be sent twice, so those two are single attempts (with the
//! authentication the upload's start established); the caller retries the
//! whole blob.

use std::collections::HashMap;
use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use base64::Engine as _;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use ureq::http::{Method, Request, Response};
use ureq::{Body, BodyReader, RequestExt, SendBody};

use crate::env::Env;
use crate::plan::naming::Registry;

pub const MANIFEST_TYPES: &str = "application/vnd.docker.distribution.manifest.v2+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.oci.image.index.v1+json";

/// The error of a request that got no answer from the registry (its host
/// name does not resolve, every attempt failed on the network, or the
/// `--timeout` passed); found in an `anyhow` chain with
/// [`is_unreachable`].
#[derive(Debug)]
pub struct Unreachable(pub String);

impl std::fmt::Display for Unreachable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Unreachable {}

/// Whether `e` says a registry could not be reached (see [`Unreachable`]).
pub fn is_unreachable(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.is::<Unreachable>())
}

/// Whether a request failed because the host name did not resolve: ureq's
/// own error, or the standard library's `getaddrinfo` one (an I/O error
/// with no kind of its own).
fn lookup_failed(e: &ureq::Error) -> bool {
    match e {
        ureq::Error::HostNotFound => true,
        ureq::Error::Io(io) => io.to_string().contains("failed to lookup address"),
        _ => false,
    }
}

/// A user name and token. Never printed: Debug is redacted.
#[derive(Clone)]
pub struct Credentials {
    pub username: String,
    pub password: String,
    /// Where the password came from (`$VAR`), for messages.
    pub source: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, <redacted from {}>)", self.username, self.source)
    }
}

/// The registry's credentials from the environment. `None` when the
/// registry has no `password-env`, or (unless `required`) when that variable
/// is not set.
pub fn credentials(reg: &Registry, env: &dyn Env, required: bool) -> Result<Option<Credentials>> {
    let Some(var) = &reg.password_env else { return Ok(None) };
    let password = match env.non_empty(var).map(|p| docker_login_trim(&p).to_string()).filter(|p| !p.is_empty()) {
        Some(p) => p,
        None if required => bail!(
            "registry {}: the environment variable {var} (its token) is not set: export it, or remove \
             `password-env` from the registry in Cargo.toml if it needs no login",
            reg.url
        ),
        None => return Ok(None),
    };
    let username = match (&reg.username, &reg.username_env) {
        (Some(u), _) => u.clone(),
        (None, Some(uvar)) => env.non_empty(uvar).ok_or_else(|| {
            anyhow!("registry {}: the environment variable {uvar} (its user name) is not set: export it", reg.url)
        })?,
        (None, None) => {
            bail!("registry {}: `password-env` is set but no `username` or `username-env`: add one", reg.url)
        }
    };
    Ok(Some(Credentials { username, password, source: format!("${var}") }))
}

/// What `docker login --password-stdin` makes of a token: one trailing
/// `\n` dropped, then one trailing `\r` (a token saved from a file). The
/// registry API calls use the same, so both see one password.
pub fn docker_login_trim(token: &str) -> &str {
    let t = token.strip_suffix('\n').unwrap_or(token);
    t.strip_suffix('\r').unwrap_or(t)
}

/// A manifest or index, as the registry stores it.
#[derive(Clone, Debug)]
pub struct Manifest {
    pub media_type: String,
    pub bytes: Vec<u8>,
    /// `Docker-Content-Digest`, when the registry sent it.
    pub digest: Option<String>,
}

/// How a manifest deletion ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deleted {
    Deleted,
    /// It was not there (any more).
    Missing,
    /// The registry does not allow deletion (HTTP 405, `UNSUPPORTED`).
    Unsupported(String),
}

/// How a blob upload started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upload {
    /// The registry mounted the blob from the other repository: done.
    Mounted,
    /// An upload session at this (absolute) URL.
    At(String),
}

/// How a streamed upload request ended, when the registry answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sent {
    /// Accepted; for a chunk, the URL of the session's next request.
    Accepted(String),
    /// The registry does not take a body this large, or this way (HTTP 413,
    /// 405, 501): send it in smaller chunks.
    BodyRefused(u16),
}

/// A blob's content, streamed from the registry.
pub struct BlobReader {
    /// `Content-Length`, when the registry sent one.
    pub len: Option<u64>,
    pub body: BodyReader<'static>,
}

/// One registry, with its credentials and the tokens it handed out.
pub struct Client {
    pub registry: Registry,
    creds: Option<Credentials>,
    agent: ureq::Agent,
    /// For requests whose body is streamed (blobs): no bound on the whole
    /// request, which takes as long as the blob needs; connecting and the
    /// answer's headers are bounded.
    transfer_agent: ureq::Agent,
    /// Bearer tokens by scope.
    tokens: Mutex<HashMap<String, String>>,
    /// Set once the registry asked for basic auth: later requests send the
    /// credentials up front instead of being refused first.
    basic: AtomicBool,
    base: String,
    retry_base: Duration,
    /// `--timeout`: bounds each request with its retries (and each token
    /// request), see [`Client::with_timeout`].
    timeout: Option<Duration>,
}

enum Auth {
    None,
    Basic,
    Bearer { realm: String, service: Option<String> },
}

/// One request, rebuilt for every attempt.
struct Call<'a> {
    method: Method,
    url: &'a str,
    headers: &'a [(&'a str, &'a str)],
    body: &'a [u8],
    /// Its answer's body is streamed by the caller: use the transfer agent.
    transfer: bool,
}

impl Client {
    pub fn new(registry: &Registry, creds: Option<Credentials>) -> Client {
        let host = registry.host();
        let local = host.starts_with("127.") || host.starts_with("localhost") || host.starts_with("[::1]");
        let api_host = if host == "docker.io" { "registry-1.docker.io" } else { host };
        let base = format!("{}://{api_host}", if local { "http" } else { "https" });
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        let transfer_agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_recv_response(Some(Duration::from_secs(120)))
            .build()
            .into();
        Client {
            registry: registry.clone(),
            creds,
            agent,
            transfer_agent,
            tokens: Mutex::new(HashMap::new()),
            basic: AtomicBool::new(false),
            base,
            retry_base: Duration::from_millis(500),
            timeout: None,
        }
    }

    /// Give up on a request (all its attempts together), or a token request,
    /// when `timeout` has passed without an answer: a registry that hangs
    /// fails the run within the `--timeout` the user gave. (Streamed blob
    /// transfers are bounded by their own connect and answer timeouts.)
    pub fn with_timeout(mut self, timeout: Duration) -> Client {
        self.timeout = Some(timeout);
        self
    }

    pub fn credentials(&self) -> Option<&Credentials> {
        self.creds.as_ref()
    }

    /// The digest of `repository:reference` (any manifest or index type), or
    /// `None` if it is absent. From `Docker-Content-Digest` of a `HEAD`; a
    /// registry that does not send it is asked for the manifest itself.
    pub fn manifest_digest(&self, repository: &str, reference: &str) -> Result<Option<String>> {
        let url = format!("{}/v2/{repository}/manifests/{reference}", self.base);
        let resp = self.request(Method::HEAD, &url, &pull(repository), &[("Accept", MANIFEST_TYPES)], b"")?;
        match resp.status().as_u16() {
            200 => match header(&resp, "docker-content-digest") {
                Some(d) => Ok(Some(d)),
                None => Ok(self.get_manifest(repository, reference)?.map(|m| super::manifest::digest(&m.bytes))),
            },
            404 => Ok(None),
            s @ (401 | 403) => bail!(
                "registry {} refused to say whether {repository}:{reference} exists (HTTP {s}): {}",
                self.registry.url,
                self.auth_hint()
            ),
            s => bail!("registry {}: unexpected HTTP {s} for HEAD {url}", self.registry.url),
        }
    }

    /// `repository:reference` (a tag or a digest) as stored, or `None` if absent.
    pub fn get_manifest(&self, repository: &str, reference: &str) -> Result<Option<Manifest>> {
        let url = format!("{}/v2/{repository}/manifests/{reference}", self.base);
        let mut resp = self.request(Method::GET, &url, &pull(repository), &[("Accept", MANIFEST_TYPES)], b"")?;
        match resp.status().as_u16() {
            200 => {
                let content_type = header(&resp, "content-type");
                let digest = header(&resp, "docker-content-digest");
                let bytes = resp.body_mut().with_config().limit(16 << 20).read_to_vec()?;
                let media_type = super::manifest::media_type(content_type.as_deref(), &bytes);
                Ok(Some(Manifest { media_type, bytes, digest }))
            }
            404 => Ok(None),
            s => bail!("registry {}: HTTP {s} for GET {url}{}", self.registry.url, error_detail(resp)),
        }
    }

    /// Store `bytes` as `repository:reference` with `media_type`; the digest the
    /// registry gives it.
    pub fn put_manifest(&self, repository: &str, reference: &str, media_type: &str, bytes: &[u8]) -> Result<String> {
        let url = format!("{}/v2/{repository}/manifests/{reference}", self.base);
        let resp = self.request(Method::PUT, &url, &push(repository), &[("Content-Type", media_type)], bytes)?;
        match resp.status().as_u16() {
            200 | 201 => Ok(header(&resp, "docker-content-digest").unwrap_or_else(|| super::manifest::digest(bytes))),
            s => bail!("registry {}: HTTP {s} for PUT {url}{}", self.registry.url, error_detail(resp)),
        }
    }

    /// Every tag of `repository` (`GET /v2/<name>/tags/list`, following
    /// the `Link` header's pages); `None` when the registry does not know
    /// the repository.
    pub fn list_tags(&self, repository: &str) -> Result<Option<Vec<String>>> {
        let mut url = format!("{}/v2/{repository}/tags/list?n=1000", self.base);
        let mut tags = vec![];
        loop {
            let mut resp = self.request(Method::GET, &url, &pull(repository), &[], b"")?;
            match resp.status().as_u16() {
                200 => {}
                404 if tags.is_empty() => return Ok(None),
                s => bail!("registry {}: HTTP {s} for GET {url}{}", self.registry.url, error_detail(resp)),
            }
            let next = header(&resp, "link").and_then(|l| next_page(&l));
            let body = resp.body_mut().with_config().limit(64 << 20).read_to_vec()?;
            let page: serde_json::Value = serde_json::from_slice(&body)
                .map_err(|e| anyhow!("registry {}: GET {url}: not a tag list: {e}", self.registry.url))?;
            tags.extend(page["tags"].as_array().into_iter().flatten().filter_map(|t| t.as_str()).map(str::to_string));
            match next {
                Some(n) => url = self.absolute(&n),
                None => return Ok(Some(tags)),
            }
        }
    }

    /// `DELETE /v2/<name>/manifests/<digest>`: the manifest and every tag
    /// that names it.
    pub fn delete_manifest(&self, repository: &str, digest: &str) -> Result<Deleted> {
        let url = format!("{}/v2/{repository}/manifests/{digest}", self.base);
        let scope = format!("repository:{repository}:delete,push,pull");
        let resp = self.request(Method::DELETE, &url, &scope, &[], b"")?;
        match resp.status().as_u16() {
            200 | 202 => Ok(Deleted::Deleted),
            404 => Ok(Deleted::Missing),
            s @ 405 => Ok(Deleted::Unsupported(format!("HTTP {s}{}", error_detail(resp)))),
            s => {
                let detail = error_detail(resp);
                if detail.contains("UNSUPPORTED") {
                    Ok(Deleted::Unsupported(format!("HTTP {s}{detail}")))
                } else {
                    bail!("registry {}: HTTP {s} for DELETE {url}{detail}", self.registry.url)
                }
            }
        }
    }

    /// Whether blob `digest` is in `repository`.
    pub fn blob_exists(&self, repository: &str, digest: &str) -> Result<bool> {
        let url = format!("{}/v2/{repository}/blobs/{digest}", self.base);
        let resp = self.request(Method::HEAD, &url, &push(repository), &[], b"")?;
        match resp.status().as_u16() {
            200 => Ok(true),
            404 => Ok(false),
            s => bail!("registry {}: unexpected HTTP {s} for HEAD {url}", self.registry.url),
        }
    }

    /// Start uploading a blob to `repository`. With `mount = (digest, from)`, ask
    /// the registry to mount it from repository `from` of the same registry
    /// instead; it may start an upload session all the same (it does not
    /// have the blob there, or does not mount).
    pub fn start_upload(&self, repository: &str, mount: Option<(&str, &str)>) -> Result<Upload> {
        let (url, scope) = match mount {
            Some((digest, from)) => (
                format!("{}/v2/{repository}/blobs/uploads/?mount={}&from={}", self.base, encode(digest), encode(from)),
                format!("repository:{repository}:push,pull repository:{from}:pull"),
            ),
            None => (format!("{}/v2/{repository}/blobs/uploads/", self.base), push(repository)),
        };
        let resp = self.request(Method::POST, &url, &scope, &[], b"")?;
        match resp.status().as_u16() {
            201 if mount.is_some() => Ok(Upload::Mounted),
            202 => match header(&resp, "location") {
                Some(location) => Ok(Upload::At(self.absolute(&location))),
                None => bail!("registry {}: no upload location in the answer to POST {url}", self.registry.url),
            },
            s => bail!("registry {}: HTTP {s} for POST {url}{}", self.registry.url, error_detail(resp)),
        }
    }

    /// Mount blob `digest` from repository `from` into `repository` (same
    /// registry); false if the registry did not mount it.
    pub fn mount_blob(&self, repository: &str, digest: &str, from: &str) -> Result<bool> {
        Ok(self.start_upload(repository, Some((digest, from)))? == Upload::Mounted)
    }

    /// Upload `data` as blob `digest` of `repository`, in one request (for small
    /// blobs: configs, seeds).
    pub fn upload_blob(&self, repository: &str, digest: &str, data: &[u8]) -> Result<()> {
        let Upload::At(location) = self.start_upload(repository, None)? else { unreachable!("no mount was asked for") };
        let url = with_digest(&location, digest);
        let headers = [("Content-Type", "application/octet-stream")];
        let resp = self.request(Method::PUT, &url, &push(repository), &headers, data)?;
        match resp.status().as_u16() {
            201 => Ok(()),
            s => bail!(
                "registry {}: HTTP {s} for PUT of blob {digest} into {repository}{}",
                self.registry.url,
                error_detail(resp)
            ),
        }
    }

    /// The blob `digest` of `repository`, read whole (for small blobs: configs).
    pub fn get_blob(&self, repository: &str, digest: &str) -> Result<Vec<u8>> {
        let url = format!("{}/v2/{repository}/blobs/{digest}", self.base);
        let mut resp = self.request(Method::GET, &url, &pull(repository), &[], b"")?;
        match resp.status().as_u16() {
            200 => Ok(resp.body_mut().with_config().limit(64 << 20).read_to_vec()?),
            s => bail!("registry {}: HTTP {s} for GET {url}{}", self.registry.url, error_detail(resp)),
        }
    }

    /// The blob `digest` of `repository` as a stream (following the registry's
    /// redirect to its storage, if any), uncompressed by nobody: the bytes
    /// are exactly the blob's.
    pub fn read_blob(&self, repository: &str, digest: &str) -> Result<BlobReader> {
        let url = format!("{}/v2/{repository}/blobs/{digest}", self.base);
        let call = Call {
            method: Method::GET,
            url: &url,
            headers: &[("Accept-Encoding", "identity")],
            body: b"",
            transfer: true,
        };
        let resp = self.request_call(&call, &pull(repository))?;
        match resp.status().as_u16() {
            200 => {
                let len = resp.body().content_length();
                Ok(BlobReader { len, body: resp.into_body().into_reader() })
            }
            s => bail!("registry {}: HTTP {s} for GET {url}{}", self.registry.url, error_detail(resp)),
        }
    }

    /// Finish the upload session at `location` with the whole blob: `size`
    /// bytes of `body` (streamed; one attempt), stored as `digest` of `repository`
    /// (the registry checks the digest). Or, for a session whose chunks were
    /// all sent, `size` 0 and an empty body.
    pub fn finish_upload(
        &self,
        repository: &str,
        location: &str,
        digest: &str,
        size: u64,
        body: &mut dyn Read,
    ) -> Result<Sent> {
        let url = with_digest(location, digest);
        let headers = [("Content-Type", "application/octet-stream")];
        let resp = self.send_stream(Method::PUT, &url, &push(repository), &headers, size, body)?;
        match resp.status().as_u16() {
            201 => Ok(Sent::Accepted(String::new())),
            s @ (405 | 413 | 501) => Ok(Sent::BodyRefused(s)),
            s => bail!(
                "registry {}: HTTP {s} for PUT of blob {digest} into {repository}{}",
                self.registry.url,
                error_detail(resp)
            ),
        }
    }

    /// Send `len` bytes of `body` (streamed; one attempt) as the chunk at
    /// `offset` of the upload session at `location`.
    pub fn upload_chunk(
        &self,
        repository: &str,
        location: &str,
        offset: u64,
        len: u64,
        body: &mut dyn Read,
    ) -> Result<Sent> {
        let range = format!("{offset}-{}", (offset + len).saturating_sub(1));
        let headers = [("Content-Type", "application/octet-stream"), ("Content-Range", range.as_str())];
        let resp = self.send_stream(Method::PATCH, location, &push(repository), &headers, len, body)?;
        match resp.status().as_u16() {
            202 => match header(&resp, "location") {
                Some(next) => Ok(Sent::Accepted(self.absolute(&next))),
                None => {
                    bail!("registry {}: no upload location in the answer to a PATCH of {repository}", self.registry.url)
                }
            },
            s @ (405 | 413 | 501) => Ok(Sent::BodyRefused(s)),
            s => bail!(
                "registry {}: HTTP {s} for PATCH of bytes {range} into {repository}{}",
                self.registry.url,
                error_detail(resp)
            ),
        }
    }

    /// Check the credentials now, before anything is built: a wrong token
    /// must fail in seconds. `repository` is a repository we will push to.
    pub fn verify_credentials(&self, repository: &str) -> Result<()> {
        let Some(creds) = &self.creds else { return Ok(()) };
        let url = format!("{}/v2/", self.base);
        let resp = self.request(Method::GET, &url, &push(repository), &[], b"")?;
        match resp.status().as_u16() {
            200 => Ok(()),
            s @ (401 | 403) => bail!(
                "registry {} rejected the credentials of user `{}` (token from {}): HTTP {s}; check the token and its permissions",
                self.registry.url,
                creds.username,
                creds.source
            ),
            s => bail!("registry {}: unexpected HTTP {s} for GET {url}", self.registry.url),
        }
    }

    fn auth_hint(&self) -> String {
        match (&self.creds, &self.registry.password_env) {
            (Some(c), _) => format!("the credentials of `{}` ({}) were not accepted", c.username, c.source),
            (None, Some(v)) => format!("it needs credentials: set {v}"),
            (None, None) => {
                "it needs credentials: add `username` and `password-env` to the registry in Cargo.toml".into()
            }
        }
    }

    /// One request; on 401, authenticate as the challenge says and repeat.
    fn request(
        &self,
        method: Method,
        url: &str,
        scope: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Response<Body>> {
        self.request_call(&Call { method, url, headers, body, transfer: false }, scope)
    }

    fn request_call(&self, call: &Call<'_>, scope: &str) -> Result<Response<Body>> {
        let up_front = self.known_auth(scope);
        let sent_basic = up_front.as_deref().is_some_and(|a| a.starts_with("Basic "));
        let resp = self.send(call, up_front.as_deref())?;
        if resp.status().as_u16() != 401 {
            return Ok(resp);
        }
        let challenge = resp.headers().get("www-authenticate").and_then(|v| v.to_str().ok()).unwrap_or("");
        match parse_challenge(challenge) {
            Auth::None => Ok(resp),
            Auth::Basic => match &self.creds {
                Some(c) if !sent_basic => {
                    let resp = self.send(call, Some(&basic(c)))?;
                    if resp.status().as_u16() != 401 {
                        self.basic.store(true, Relaxed);
                    }
                    Ok(resp)
                }
                _ => Ok(resp),
            },
            Auth::Bearer { realm, service } => {
                let Some(token) = self.fetch_token(&realm, service.as_deref(), scope)? else { return Ok(resp) };
                self.tokens.lock().unwrap_or_else(|e| e.into_inner()).insert(scope.to_string(), token.clone());
                let resp = self.send(call, Some(&format!("Bearer {token}")))?;
                let refused = header(&resp, "www-authenticate").is_some_and(|c| c.contains("invalid_token"));
                if resp.status().as_u16() == 401 && refused {
                    bail!(
                        "registry {} does not accept the token its token service {realm} just issued \
                         (invalid_token): the service signs with a key the registry does not trust, or their \
                         clocks disagree; check the registry's token auth configuration",
                        self.registry.url
                    );
                }
                Ok(resp)
            }
        }
    }

    /// The `Authorization` this client already knows works for `scope`:
    /// basic auth once the registry asked for it, else a token it handed
    /// out for that scope.
    fn known_auth(&self, scope: &str) -> Option<String> {
        match &self.creds {
            Some(c) if self.basic.load(Relaxed) => Some(basic(c)),
            _ => self.tokens.lock().unwrap_or_else(|e| e.into_inner()).get(scope).map(|t| format!("Bearer {t}")),
        }
    }

    /// One attempt of a request whose body is `len` bytes streamed from
    /// `body`, with the authentication already established for `scope`.
    fn send_stream(
        &self,
        method: Method,
        url: &str,
        scope: &str,
        headers: &[(&str, &str)],
        len: u64,
        body: &mut dyn Read,
    ) -> Result<Response<Body>> {
        let mut req = Request::builder().method(method.clone()).uri(url).header("Content-Length", len.to_string());
        if len > 0 {
            // A registry (or a proxy before it) that refuses the body can say
            // so before it is sent, instead of breaking the connection.
            req = req.header("Expect", "100-continue");
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(a) = self.known_auth(scope) {
            req = req.header("Authorization", a);
        }
        let req = req.body(SendBody::from_reader(body)).map_err(|e| anyhow!("building {method} {url}: {e}"))?;
        self.transfer_agent.run(req).map_err(|e| anyhow!("registry {}: {method} {url}: {e}", self.registry.url))
    }

    /// `location` as an absolute URL (registries may answer with a path).
    fn absolute(&self, location: &str) -> String {
        if location.starts_with('/') {
            format!("{}{location}", self.base)
        } else {
            location.to_string()
        }
    }

    /// A token for `scope` from the registry's token endpoint; `None` when
    /// it refuses (401/403).
    fn fetch_token(&self, realm: &str, service: Option<&str>, scope: &str) -> Result<Option<String>> {
        let mut url = realm.to_string();
        for (i, s) in scope.split(' ').enumerate() {
            url.push_str(&format!("{}scope={}", if i == 0 { '?' } else { '&' }, encode(s)));
        }
        if let Some(s) = service {
            url.push_str(&format!("&service={}", encode(s)));
        }
        if self.creds.is_some() && !may_send_credentials(realm, self.registry.host()) {
            bail!(
                "registry {}: its token endpoint {realm} is plain http on another host; refusing to send the \
                 credentials there (they would cross the network unencrypted): check the registry's address",
                self.registry.url
            );
        }
        let auth = self.creds.as_ref().map(basic);
        let call = Call { method: Method::GET, url: &url, headers: &[], body: b"", transfer: false };
        let mut resp = self
            .send(&call, auth.as_deref())
            .map_err(|e| anyhow!("registry {}: cannot get a token from {realm}: {e:#}", self.registry.url))?;
        match resp.status().as_u16() {
            200 => {
                // Not text (or too big) is as bad as not JSON: name who answered it.
                let text = resp.body_mut().read_to_string().map_err(|e| {
                    anyhow!("registry {}: token endpoint {realm} answered something unreadable: {e}", self.registry.url)
                })?;
                let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
                    anyhow!("registry {}: token endpoint {realm} answered invalid JSON: {e}", self.registry.url)
                })?;
                let t = v["token"].as_str().or(v["access_token"].as_str());
                Ok(t.map(str::to_string))
            }
            401 | 403 => Ok(None),
            s => bail!("registry {}: token endpoint {realm} answered HTTP {s}", self.registry.url),
        }
    }

    /// Send `call`, retrying network errors, 5xx and 429 with backoff (3
    /// attempts in all); the last response otherwise, whatever its status.
    fn send(&self, call: &Call<'_>, authorization: Option<&str>) -> Result<Response<Body>> {
        let mut attempt = 0;
        let deadline = self.timeout.filter(|_| !call.transfer).map(|t| (t, Instant::now() + t));
        let out_of_time = |timeout: Duration, reason: &str| -> anyhow::Error {
            Unreachable(format!(
                "registry {} did not answer {} {} within {}s (--timeout; last: {reason}); check that it is up, or \
                 give more --timeout",
                self.registry.url,
                call.method,
                call.url,
                timeout.as_secs_f64()
            ))
            .into()
        };
        loop {
            let mut req = Request::builder().method(call.method.clone()).uri(call.url);
            for (k, v) in call.headers {
                req = req.header(*k, *v);
            }
            if let Some(a) = authorization {
                req = req.header("Authorization", a);
            }
            let req = req.body(call.body).map_err(|e| anyhow!("building {} {}: {e}", call.method, call.url))?;
            let agent = if call.transfer { &self.transfer_agent } else { &self.agent };
            // Whether this attempt may run until the deadline.
            let mut to_the_deadline = false;
            let sent = match deadline {
                Some((timeout, at)) => {
                    let left = at.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(out_of_time(timeout, "no time left"));
                    }
                    let per_attempt = left.min(Duration::from_secs(30));
                    to_the_deadline = per_attempt == left;
                    req.with_agent(agent).configure().timeout_global(Some(per_attempt)).run()
                }
                None => agent.run(req),
            };
            let timed_out = to_the_deadline && matches!(sent, Err(ureq::Error::Timeout(_)));
            let (retry_reason, network) = match sent {
                Ok(resp) if retryable_status(resp.status().as_u16()) => (format!("HTTP {}", resp.status()), false),
                Ok(resp) => return Ok(resp),
                Err(e) if lookup_failed(&e) => {
                    return Err(Unreachable(format!(
                        "registry {}: its host `{}` was not found ({e}; 1 attempt: a failed name lookup is not \
                         retried); check the name, or the network connection",
                        self.registry.url,
                        self.registry.host()
                    ))
                    .into());
                }
                // Another attempt would fail the same way.
                Err(e) if is_tls(&e) => bail!(
                    "registry {}: TLS failed ({} {}: {e}): check its certificate; mzbuild trusts the public \
                     certificate authorities (Mozilla's list) only, and speaks plain http only to registries on \
                     127.0.0.1 or localhost",
                    self.registry.url,
                    call.method,
                    call.url
                ),
                Err(e) => (e.to_string(), true),
            };
            attempt += 1;
            let unreachable = |attempt: u32, why: &str| -> anyhow::Error {
                let attempts = if attempt == 1 { "1 attempt".to_string() } else { format!("{attempt} attempts") };
                let msg = format!(
                    "registry {} is unreachable or failing ({} {}: {retry_reason}, {attempts}{why}); check that it \
                     is up",
                    self.registry.url, call.method, call.url
                );
                if network {
                    Unreachable(msg).into()
                } else {
                    anyhow!(msg)
                }
            };
            if let Some((timeout, at)) = deadline {
                let now = Instant::now();
                if timed_out || now >= at {
                    return Err(out_of_time(timeout, &retry_reason));
                }
                // Giving up early is not a timeout: say what happened.
                if now + self.retry_base * 2u32.pow(attempt) >= at {
                    let why = format!("; no time for another within --timeout {}s", timeout.as_secs_f64());
                    return Err(unreachable(attempt, &why));
                }
            }
            if attempt >= 3 {
                return Err(unreachable(attempt, ""));
            }
            std::thread::sleep(self.retry_base * 2u32.pow(attempt));
        }
    }
}

/// Whether a transport error is TLS's (a certificate not trusted, a failed
/// handshake): not a network hiccup to retry, nor a timeout.
fn is_tls(e: &ureq::Error) -> bool {
    if matches!(e, ureq::Error::Tls(_) | ureq::Error::Rustls(_)) {
        return true;
    }
    let text = e.to_string().to_lowercase();
    ["certificate", "tls", "handshake", "corrupt message"].iter().any(|w| text.contains(w))
}

fn header(resp: &Response<Body>, name: &str) -> Option<String> {
    resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
}

/// `: CODE: message` from a registry's JSON error answer, when there is one.
fn error_detail(mut resp: Response<Body>) -> String {
    let Ok(text) = resp.body_mut().with_config().limit(64 << 10).read_to_string() else { return String::new() };
    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    let errors: Vec<String> = v["errors"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| format!("{}: {}", e["code"].as_str().unwrap_or("?"), e["message"].as_str().unwrap_or("")))
        .collect();
    if errors.is_empty() {
        String::new()
    } else {
        format!(" ({})", errors.join("; "))
    }
}

/// An upload URL with the blob's digest added to its query.
fn with_digest(location: &str, digest: &str) -> String {
    let sep = if location.contains('?') { '&' } else { '?' };
    format!("{location}{sep}digest={}", encode(digest))
}

/// The URL of the next page in a `Link: <url>; rel="next"` header.
fn next_page(link: &str) -> Option<String> {
    link.split(',').find(|part| part.contains("rel=\"next\"")).and_then(|part| {
        let start = part.find('<')? + 1;
        let end = part.find('>')?;
        Some(part[start..end].to_string())
    })
}

fn pull(repository: &str) -> String {
    format!("repository:{repository}:pull")
}

fn push(repository: &str) -> String {
    format!("repository:{repository}:push,pull")
}

fn retryable_status(s: u16) -> bool {
    s == 429 || (500..600).contains(&s)
}

/// Whether credentials may be sent to the token endpoint `realm` that a
/// registry on `registry_host` names: over https, or over plain http only
/// to the registry's own host (a registry on this machine or network that
/// itself speaks http). Any other realm would receive them in clear.
fn may_send_credentials(realm: &str, registry_host: &str) -> bool {
    if realm.starts_with("https://") {
        return true;
    }
    let Some(rest) = realm.strip_prefix("http://") else { return false };
    let host = |h: &str| h.split('/').next().unwrap_or(h).rsplit_once(':').map_or(h, |(h, _)| h).to_string();
    host(rest) == host(registry_host)
}

/// The `Authorization` value for basic auth.
pub fn basic(c: &Credentials) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", c.username, c.password)))
}

fn parse_challenge(h: &str) -> Auth {
    let (scheme, params) = h.split_once(' ').unwrap_or((h, ""));
    let mut map = HashMap::new();
    for part in split_params(params) {
        if let Some((k, v)) = part.split_once('=') {
            map.insert(k.trim().to_ascii_lowercase(), v.trim().trim_matches('"').to_string());
        }
    }
    match scheme.to_ascii_lowercase().as_str() {
        "basic" => Auth::Basic,
        "bearer" => match map.remove("realm") {
            Some(realm) => Auth::Bearer { realm, service: map.remove("service") },
            None => Auth::None,
        },
        _ => Auth::None,
    }
}

/// Split `a="x,y",b=z` on the commas outside quotes.
fn split_params(s: &str) -> Vec<String> {
    let (mut out, mut cur, mut quoted) = (vec![], String::new(), false);
    for c in s.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    out.push(cur);
    out
}

/// Everything but RFC 3986's unreserved characters is percent-encoded.
const QUERY: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

fn encode(s: &str) -> String {
    utf8_percent_encode(s, QUERY).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_page_of_a_tag_list() {
        let link = r#"</v2/a/b/tags/list?last=x&n=1000>; rel="next""#;
        assert_eq!(next_page(link).as_deref(), Some("/v2/a/b/tags/list?last=x&n=1000"));
        assert_eq!(next_page(r#"<https://r/v2/x>; rel="prev""#), None);
    }
    use crate::env::MapEnv;

    #[test]
    fn basic_auth_and_challenges() {
        let c = Credentials { username: "mzbuild".into(), password: "pw".into(), source: "$X".into() };
        assert_eq!(basic(&c), "Basic bXpidWlsZDpwdw==");
        match parse_challenge(
            r#"Bearer realm="https://ghcr.io/token",service="ghcr.io",scope="repository:a/b:pull,push""#,
        ) {
            Auth::Bearer { realm, service } => {
                assert_eq!(realm, "https://ghcr.io/token");
                assert_eq!(service.as_deref(), Some("ghcr.io"));
            }
            _ => panic!("not a bearer challenge"),
        }
        assert!(matches!(parse_challenge(r#"Basic realm="mzbuild""#), Auth::Basic));
        assert_eq!(encode("repository:a/b:pull"), "repository%3Aa%2Fb%3Apull");
    }

    #[test]
    fn credentials_go_to_https_realms_or_the_registry_itself() {
        assert!(may_send_credentials("https://ghcr.io/token", "ghcr.io"));
        assert!(may_send_credentials("https://auth.docker.io/token", "docker.io"));
        assert!(may_send_credentials("http://127.0.0.1:40123/token", "127.0.0.1:5001"));
        assert!(!may_send_credentials("http://evil.example/token", "127.0.0.1:5001"));
        assert!(!may_send_credentials("http://127.0.0.2/token", "127.0.0.1"));
        assert!(!may_send_credentials("ftp://127.0.0.1/token", "127.0.0.1"));
    }

    #[test]
    fn credentials_come_from_the_environment_and_stay_redacted() {
        let reg = Registry {
            url: "127.0.0.1:5001/x".into(),
            username: Some("u".into()),
            username_env: None,
            password_env: Some("TOK".into()),
        };
        let c = credentials(&reg, &MapEnv(&[("TOK", "s3cret")]), true).unwrap().unwrap();
        assert_eq!(c.password, "s3cret");
        assert!(!format!("{c:?}").contains("s3cret"));
        let e = credentials(&reg, &MapEnv(&[]), true).unwrap_err();
        assert!(e.to_string().contains("TOK") && e.to_string().contains("not set"), "{e}");
        assert!(credentials(&reg, &MapEnv(&[]), false).unwrap().is_none());
        // Trimmed as `docker login --password-stdin` trims.
        for (raw, used) in
            [("s3cret\n", "s3cret"), ("s3cret\r\n", "s3cret"), ("s3cret\n\n", "s3cret\n"), (" s3cret ", " s3cret ")]
        {
            let c = credentials(&reg, &MapEnv(&[("TOK", raw)]), true).unwrap().unwrap();
            assert_eq!(c.password, used, "{raw:?}");
        }
        assert!(credentials(&reg, &MapEnv(&[("TOK", "\n")]), false).unwrap().is_none());
    }
}
