//! The registry HTTP API (distribution v2), for "is this image published?"
//! and "are these credentials good?" without docker: `HEAD
//! /v2/<repo>/manifests/<tag>` with every manifest media type, basic auth,
//! and the bearer-token flow (anonymous or with credentials) that public
//! registries use. Retries network errors, 5xx and 429 with backoff.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};

use crate::registry::Registry;
use crate::settings::Env;

pub const MANIFEST_TYPES: &str = "application/vnd.docker.distribution.manifest.v2+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.oci.image.index.v1+json";

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
    let password = match env.var(var).filter(|v| !v.is_empty()) {
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
        (None, Some(uvar)) => env.var(uvar).filter(|v| !v.is_empty()).ok_or_else(|| {
            anyhow!("registry {}: the environment variable {uvar} (its user name) is not set: export it", reg.url)
        })?,
        (None, None) => {
            bail!("registry {}: `password-env` is set but no `username` or `username-env`: add one", reg.url)
        }
    };
    Ok(Some(Credentials { username, password, source: format!("${var}") }))
}

pub struct Client {
    pub registry: Registry,
    creds: Option<Credentials>,
    agent: ureq::Agent,
    /// Bearer tokens by scope.
    tokens: Mutex<HashMap<String, String>>,
    /// Set once the registry asked for basic auth: later requests send the
    /// credentials up front instead of being refused first.
    basic: std::sync::atomic::AtomicBool,
    base: String,
    retry_base: Duration,
}

enum Auth {
    None,
    Basic,
    Bearer { realm: String, service: Option<String> },
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
        Client {
            registry: registry.clone(),
            creds,
            agent,
            tokens: Mutex::new(HashMap::new()),
            basic: std::sync::atomic::AtomicBool::new(false),
            base,
            retry_base: Duration::from_millis(500),
        }
    }

    pub fn credentials(&self) -> Option<&Credentials> {
        self.creds.as_ref()
    }

    /// Whether `repo:tag` exists (any manifest or index type).
    pub fn manifest_exists(&self, repo: &str, tag: &str) -> Result<bool> {
        let url = format!("{}/v2/{repo}/manifests/{tag}", self.base);
        let scope = format!("repository:{repo}:pull");
        let status = self.request_with_auth("HEAD", &url, &scope)?;
        match status {
            200 => Ok(true),
            404 => Ok(false),
            401 | 403 => bail!(
                "registry {} refused to say whether {repo}:{tag} exists (HTTP {status}): {}",
                self.registry.url,
                self.auth_hint()
            ),
            s => bail!("registry {}: unexpected HTTP {s} for HEAD {url}", self.registry.url),
        }
    }

    /// Check the credentials now, before anything is built: a wrong token
    /// must fail in seconds. `repo` is a repository we will push to.
    pub fn verify_credentials(&self, repo: &str) -> Result<()> {
        let Some(creds) = &self.creds else { return Ok(()) };
        let url = format!("{}/v2/", self.base);
        let status = self.request_with_auth("GET", &url, &format!("repository:{repo}:push,pull"))?;
        match status {
            200 => Ok(()),
            401 | 403 => bail!(
                "registry {} rejected the credentials of user `{}` (token from {}): HTTP {status}; check the token and its permissions",
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
    fn request_with_auth(&self, method: &str, url: &str, scope: &str) -> Result<u16> {
        use std::sync::atomic::Ordering::Relaxed;
        let up_front = match &self.creds {
            Some(c) if self.basic.load(Relaxed) => Some(basic(c)),
            _ => self.tokens.lock().unwrap().get(scope).map(|t| format!("Bearer {t}")),
        };
        let sent_basic = up_front.as_deref().is_some_and(|a| a.starts_with("Basic "));
        let (status, challenge) = self.send(method, url, up_front)?;
        if status != 401 {
            return Ok(status);
        }
        match parse_challenge(challenge.as_deref().unwrap_or("")) {
            Auth::None => Ok(status),
            Auth::Basic => match &self.creds {
                Some(c) if !sent_basic => {
                    let status = self.send(method, url, Some(basic(c)))?.0;
                    if status != 401 {
                        self.basic.store(true, Relaxed);
                    }
                    Ok(status)
                }
                _ => Ok(status),
            },
            Auth::Bearer { realm, service } => {
                let Some(token) = self.fetch_token(&realm, service.as_deref(), scope)? else { return Ok(401) };
                self.tokens.lock().unwrap().insert(scope.to_string(), token.clone());
                Ok(self.send(method, url, Some(format!("Bearer {token}")))?.0)
            }
        }
    }

    fn fetch_token(&self, realm: &str, service: Option<&str>, scope: &str) -> Result<Option<String>> {
        let mut url = format!("{realm}?scope={}", encode(scope));
        if let Some(s) = service {
            url.push_str(&format!("&service={}", encode(s)));
        }
        let auth = self.creds.as_ref().map(basic);
        let mut attempt = 0;
        loop {
            let mut req = self.agent.get(&url);
            if let Some(a) = &auth {
                req = req.header("Authorization", a);
            }
            match req.call() {
                Ok(mut resp) if resp.status().as_u16() == 200 => {
                    let v: serde_json::Value = serde_json::from_str(&resp.body_mut().read_to_string()?)?;
                    let t = v["token"].as_str().or(v["access_token"].as_str());
                    return Ok(t.map(str::to_string));
                }
                Ok(resp) if resp.status().as_u16() == 401 || resp.status().as_u16() == 403 => return Ok(None),
                Ok(resp) if retryable_status(resp.status().as_u16()) && attempt < 2 => {}
                Ok(resp) => {
                    bail!("registry {}: token endpoint {realm} answered HTTP {}", self.registry.url, resp.status())
                }
                Err(_) if attempt < 2 => {}
                Err(e) => bail!("registry {}: cannot reach token endpoint {realm}: {e}", self.registry.url),
            }
            attempt += 1;
            std::thread::sleep(self.retry_base * 2u32.pow(attempt));
        }
    }

    /// Send with retries on network errors, 5xx and 429 (3 attempts).
    fn send(&self, method: &str, url: &str, authorization: Option<String>) -> Result<(u16, Option<String>)> {
        let mut attempt = 0;
        loop {
            let mut req = match method {
                "HEAD" => self.agent.head(url),
                _ => self.agent.get(url),
            }
            .header("Accept", MANIFEST_TYPES);
            if let Some(a) = &authorization {
                req = req.header("Authorization", a);
            }
            let r = req.call();
            let retry_reason = match &r {
                Ok(resp) if retryable_status(resp.status().as_u16()) => format!("HTTP {}", resp.status()),
                Ok(resp) => {
                    let challenge =
                        resp.headers().get("www-authenticate").and_then(|v| v.to_str().ok()).map(str::to_string);
                    return Ok((resp.status().as_u16(), challenge));
                }
                Err(e) => e.to_string(),
            };
            attempt += 1;
            if attempt >= 3 {
                bail!(
                    "registry {} is unreachable or failing ({method} {url}: {retry_reason}, {attempt} attempts); check that it is up",
                    self.registry.url
                );
            }
            std::thread::sleep(self.retry_base * 2u32.pow(attempt));
        }
    }
}

fn retryable_status(s: u16) -> bool {
    s == 429 || (500..600).contains(&s)
}

fn basic(c: &Credentials) -> String {
    format!("Basic {}", base64(format!("{}:{}", c.username, c.password).as_bytes()))
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

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Standard base64 of a string (for basic auth headers elsewhere).
pub fn base64_of(s: &str) -> String {
    base64(s.as_bytes())
}

fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::MapEnv;

    #[test]
    fn base64_and_challenges() {
        assert_eq!(base64(b"mzbuild:pw"), "bXpidWlsZDpwdw==");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"abc"), "YWJj");
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
    }
}
