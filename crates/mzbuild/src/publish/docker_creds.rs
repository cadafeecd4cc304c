//! The credentials a developer already has, for reads: what `docker login`
//! stored for a registry in the user's docker config, either in `auths` or
//! behind a credential helper (`credHelpers`, `credsStore`), asked through
//! the `docker-credential-<name> get` protocol (the server on stdin, JSON on
//! stdout). Read only: the user's config is never written, and what a helper
//! answers is neither printed nor written anywhere; it lives in this run's
//! memory only.
//!
//! Where docker looks, in docker's order: the `credHelpers` entry of the
//! registry (that helper alone), else an `auths` entry that holds a user
//! name and password, else `credsStore`; else nothing (the registry is asked
//! anonymously: ghcr.io and Docker Hub hand out anonymous pull tokens for
//! public images).

use std::io::{Read, Write};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine as _;
use serde_json::Value;

use super::client::Credentials;
use crate::docker::user_docker_config_dir;
use crate::env::Env;
use crate::process::{self, GroupChild};

/// How long a credential helper may take (a keychain may ask the user to
/// allow the access first).
const HELPER_TIMEOUT: Duration = Duration::from_secs(60);

/// The server Docker Hub's logins are stored under.
const DOCKER_HUB_INDEX: &str = "https://index.docker.io/v1/";

/// The user's own docker credentials for the registry on `host`
/// (`host[:port]`), or `None` when the user has none for it. An error names
/// the config file or the helper, never what a helper answered.
pub fn user_credentials(env: &dyn Env, host: &str) -> Result<Option<Credentials>> {
    let Some(dir) = user_docker_config_dir(env) else { return Ok(None) };
    let path = dir.join("config.json");
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let config: Value = serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", path.display()))?;
    lookup(&config, host, &path, &|helper: &str, server: &str| {
        ask_helper(Path::new(&format!("docker-credential-{helper}")), server, HELPER_TIMEOUT)
    })
}

/// A user name and secret, as a helper answers.
type Answer = Option<(String, String)>;

/// What the user's docker `config` (read from `path`) holds for `host`;
/// `helper(name, server)` asks credential helper `name`.
fn lookup(
    config: &Value,
    host: &str,
    path: &Path,
    helper: &dyn Fn(&str, &str) -> Result<Answer>,
) -> Result<Option<Credentials>> {
    let server = if is_docker_hub(host) { DOCKER_HUB_INDEX } else { host };
    let from_helper = |name: &str| -> Result<Option<Credentials>> {
        let program = format!("docker-credential-{name}");
        let answer = helper(name, server).with_context(|| format!("credential helper {program} failed for {host}"))?;
        Ok(answer.map(|(username, password)| Credentials { username, password, source: program }))
    };
    if let Some(name) = entry(&config["credHelpers"], host).and_then(Value::as_str).filter(|n| !n.is_empty()) {
        return from_helper(name);
    }
    if let Some((username, password)) = entry(&config["auths"], host).and_then(auths_entry) {
        return Ok(Some(Credentials { username, password, source: format!("`auths` of {}", path.display()) }));
    }
    match config["credsStore"].as_str().filter(|n| !n.is_empty()) {
        Some(name) => from_helper(name),
        None => Ok(None),
    }
}

/// The value of `map` (an `auths` or `credHelpers` object) for `host`: its
/// keys may be `host`, `https://host` or `https://host/v1/`, and Docker
/// Hub's is `https://index.docker.io/v1/`.
fn entry<'a>(map: &'a Value, host: &str) -> Option<&'a Value> {
    let map = map.as_object()?;
    let same = |key: &str| {
        let key = key.strip_prefix("https://").or_else(|| key.strip_prefix("http://")).unwrap_or(key);
        let key = key.split('/').next().unwrap_or(key);
        key == host || (is_docker_hub(key) && is_docker_hub(host))
    };
    map.iter().find(|(k, _)| same(k)).map(|(_, v)| v)
}

fn is_docker_hub(host: &str) -> bool {
    matches!(host, "docker.io" | "index.docker.io" | "registry-1.docker.io")
}

/// The user name and password of an `auths` entry: `auth` (base64 of
/// `user:password`), or the older `username` and `password`. An entry with
/// neither (a marker that a credential store holds the login) or with only
/// an `identitytoken` (an OAuth refresh token, not a password) gives none.
fn auths_entry(entry: &Value) -> Option<(String, String)> {
    if let Some(auth) = entry["auth"].as_str().filter(|a| !a.is_empty()) {
        let bytes = base64::engine::general_purpose::STANDARD.decode(auth.trim()).ok()?;
        let text = String::from_utf8(bytes).ok()?;
        let (user, password) = text.split_once(':')?;
        return (!user.is_empty() && !password.is_empty()).then(|| (user.to_string(), password.to_string()));
    }
    let user = entry["username"].as_str().filter(|u| !u.is_empty())?;
    let password = entry["password"].as_str().filter(|p| !p.is_empty())?;
    Some((user.to_string(), password.to_string()))
}

/// `program get` with `server` on stdin: the user name and secret it holds
/// for the server, or `None` when it holds none ("credentials not found").
/// Killed after `timeout`. Its output never goes into an error.
fn ask_helper(program: &Path, server: &str, timeout: Duration) -> Result<Answer> {
    let mut cmd = process::command(program);
    cmd.arg("get").stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::null());
    let mut child = GroupChild::spawn(&mut cmd).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            anyhow!("it is not installed (no {} on PATH); install it, or fix the docker config", program.display())
        }
        _ => anyhow!("cannot run it: {e}"),
    })?;
    if let Some(mut stdin) = child.take_stdin() {
        // A helper that exits without reading is judged by its exit status.
        let _ = stdin.write_all(server.as_bytes());
    }
    let mut stdout = child.take_stdout().expect("stdout is piped");
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = (&mut stdout).take(1 << 20).read_to_end(&mut out);
        out
    });
    let status = child.wait_timeout(timeout).context("waiting for it")?;
    let out = reader.join().unwrap_or_default();
    let Some(status) = status else { bail!("it did not answer within {}s", timeout.as_secs_f64()) };
    let text = String::from_utf8_lossy(&out);
    if !status.success() {
        if text.contains("credentials not found") {
            return Ok(None);
        }
        bail!("it exited with {status}");
    }
    let answer: Value =
        serde_json::from_str(&text).map_err(|_| anyhow!("its answer is not the JSON of the protocol"))?;
    let username = answer["Username"].as_str().unwrap_or("");
    let secret = answer["Secret"].as_str().unwrap_or("");
    if username == "<token>" {
        bail!("it holds an identity token (an OAuth refresh token), which mzbuild cannot use; a password or access token works")
    }
    if username.is_empty() || secret.is_empty() {
        return Ok(None);
    }
    Ok(Some((username.to_string(), secret.to_string())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::cell::RefCell;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    /// What `lookup` found: user name, password, where from.
    type Found = Option<(String, String, String)>;

    /// `lookup` with helpers that answer from `held` (helper, server) and
    /// record what they were asked.
    fn find(config: &Value, host: &str, held: &[(&str, &str)]) -> (Result<Found>, Vec<String>) {
        let asked = RefCell::new(vec![]);
        let helper = |name: &str, server: &str| -> Result<Answer> {
            asked.borrow_mut().push(format!("{name} {server}"));
            match name {
                "broken" => bail!("exit status 1"),
                _ => Ok(held.contains(&(name, server)).then(|| ("u".to_string(), format!("{name}-pw")))),
            }
        };
        let found = lookup(config, host, Path::new("/home/u/.docker/config.json"), &helper)
            .map(|c| c.map(|c| (c.username, c.password, c.source)));
        (found, asked.into_inner())
    }

    #[test]
    fn auths_helpers_and_the_store_in_dockers_order() {
        let config = json!({
            "auths": {
                "https://127.0.0.1:5001": { "auth": b64("mzbuild:pw") },
                "ghcr.io": {},
                "https://index.docker.io/v1/": { "identitytoken": "x" },
                "old.example": { "username": "o", "password": "opw" },
            },
            "credHelpers": { "gcr.io": "gcloud", "127.0.0.1:5001": "" },
            "credsStore": "desktop",
        });
        let (found, asked) = find(&config, "127.0.0.1:5001", &[]);
        let (user, pw, source) = found.unwrap().unwrap();
        assert_eq!((user.as_str(), pw.as_str()), ("mzbuild", "pw"));
        assert_eq!(source, "`auths` of /home/u/.docker/config.json");
        assert!(asked.is_empty(), "{asked:?}");
        assert_eq!(find(&config, "old.example", &[]).0.unwrap().unwrap().1, "opw");
        // An empty entry (the store holds it) goes to the store, with the host.
        let (found, asked) = find(&config, "ghcr.io", &[("desktop", "ghcr.io")]);
        assert_eq!(found.unwrap().unwrap().2, "docker-credential-desktop");
        assert_eq!(asked, ["desktop ghcr.io"]);
        // Docker Hub's logins live under its index URL.
        let (_, asked) = find(&config, "docker.io", &[]);
        assert_eq!(asked, ["desktop https://index.docker.io/v1/"]);
        // A registry's own helper, and only it.
        let (found, asked) = find(&config, "gcr.io", &[]);
        assert!(found.unwrap().is_none());
        assert_eq!(asked, ["gcloud gcr.io"]);
        // Nothing configured: nothing asked.
        let (found, asked) = find(&json!({"auths": {}}), "ghcr.io", &[]);
        assert!(found.unwrap().is_none() && asked.is_empty());
    }

    #[test]
    fn a_failing_helper_is_named_without_its_answer() {
        let config = json!({ "credsStore": "broken" });
        let e = find(&config, "ghcr.io", &[]).0.unwrap_err();
        assert_eq!(format!("{e}"), "credential helper docker-credential-broken failed for ghcr.io");
    }

    fn script(dir: &Path, body: &str) -> std::path::PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join("docker-credential-t");
        std::fs::write(&path, format!("#!/bin/sh\n{body}")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[test]
    fn the_helper_protocol() {
        let dir = tempfile::tempdir().unwrap();
        let t = Duration::from_secs(20);
        // The server comes on stdin; the answer is JSON.
        let helper = script(
            dir.path(),
            r#"read -r server; printf '{"ServerURL":"%s","Username":"u","Secret":"s-%s"}' "$server" "$server""#,
        );
        assert_eq!(ask_helper(&helper, "h:1", t).unwrap(), Some(("u".into(), "s-h:1".into())));
        let helper = script(dir.path(), "echo 'credentials not found in native keychain'; exit 1\n");
        assert_eq!(ask_helper(&helper, "h", t).unwrap(), None);
        let helper = script(dir.path(), "echo 'SECRET-ISH'; exit 3\n");
        let e = format!("{:#}", ask_helper(&helper, "h", t).unwrap_err());
        assert!(e.contains("exit status: 3") && !e.contains("SECRET-ISH"), "{e}");
        let helper = script(dir.path(), "echo 'SECRET-ISH'\n");
        let e = format!("{:#}", ask_helper(&helper, "h", t).unwrap_err());
        assert!(e.contains("not the JSON") && !e.contains("SECRET-ISH"), "{e}");
        let helper = script(dir.path(), r#"echo '{"Username":"<token>","Secret":"x"}'"#);
        assert!(format!("{:#}", ask_helper(&helper, "h", t).unwrap_err()).contains("identity token"));
        let helper = script(dir.path(), "exec sleep 30\n");
        let e = format!("{:#}", ask_helper(&helper, "h", Duration::from_millis(300)).unwrap_err());
        assert!(e.contains("did not answer within"), "{e}");
        let e = format!("{:#}", ask_helper(&dir.path().join("docker-credential-none"), "h", t).unwrap_err());
        assert!(e.contains("is not installed"), "{e}");
    }
}
