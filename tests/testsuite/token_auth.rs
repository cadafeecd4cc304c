//! Tests of the test infrastructure itself: `support::token_registry`, a real
//! Distribution registry with bearer-token auth and its token service, driven
//! by real clients only (`curl`, `docker login`, `docker buildx build
//! --push`, `docker manifest inspect`), never by the tool under test.
//!
//! Each test starts its own `TokenRegistry` on free ports, so the tests run
//! in parallel. Secrets (the password, the bearer tokens) reach `curl` and
//! `docker login` on stdin, never on a command line.

use std::process::Command;

use support::registry::{unique, ACCEPT};
use support::token_registry::{
    jwt_claims, jwt_header, parse_challenge, KeyHeader, Mode, TokenRegistry, TokenRequest, EXPIRES_IN, ISSUER,
    PASSWORD, SERVICE, USER,
};
use support::{curl, run, Output};

/// An HTTP answer as `curl -i` shows it.
#[derive(Debug)]
struct Http {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Http {
    /// The first header called `name` (any case).
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    #[track_caller]
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }
}

/// `curl -i args...` with `config` on stdin, parsed.
#[track_caller]
fn http(config: &str, args: &[&str]) -> Http {
    let out = curl(config, &[&["-i"], args].concat());
    assert_eq!(out.code, Some(0), "curl {args:?} failed\n{out}");
    let (head, body) = out.stdout.split_once("\r\n\r\n").unwrap_or((&out.stdout, ""));
    let mut lines = head.lines();
    let status_line = lines.next().unwrap_or_default();
    let status = status_line.split_whitespace().nth(1).and_then(|s| s.parse().ok());
    let status = status.unwrap_or_else(|| panic!("no status line in\n{out}"));
    let headers =
        lines.filter_map(|l| l.split_once(':')).map(|(n, v)| (n.trim().to_string(), v.trim().to_string())).collect();
    Http { status, headers, body: body.to_string() }
}

/// The curl config that sends `token` as a bearer token.
fn bearer(token: &str) -> String {
    format!("header = \"Authorization: Bearer {token}\"\n")
}

/// The curl config that sends `USER` with `password` as Basic auth.
fn basic(password: &str) -> String {
    format!("user = \"{USER}:{password}\"\n")
}

/// `HEAD /v2/<repo>/manifests/<tag>` with the curl `config`.
#[track_caller]
fn head_manifest(reg: &TokenRegistry, config: &str, repo: &str, tag: &str) -> Http {
    http(config, &["-I", "-H", ACCEPT, &format!("http://{}/v2/{repo}/manifests/{tag}", reg.url())])
}

/// `POST /v2/<repo>/blobs/uploads/` (start a blob upload: needs `push`)
/// with the curl `config`.
#[track_caller]
fn start_upload(reg: &TokenRegistry, config: &str, repo: &str) -> Http {
    http(config, &["-X", "POST", "-d", "", &format!("http://{}/v2/{repo}/blobs/uploads/", reg.url())])
}

/// `GET realm?service=..&scope=..` as the Docker token protocol asks, with
/// the curl `config` (credentials, if any).
#[track_caller]
fn get_token(reg: &TokenRegistry, config: &str, scope: &str) -> Http {
    let (service, scope) = (format!("service={SERVICE}"), format!("scope={scope}"));
    http(config, &["-G", "--data-urlencode", &service, "--data-urlencode", &scope, reg.realm()])
}

/// The `token` of a token answer, after checking the answer's shape.
#[track_caller]
fn token_of(answer: &Http) -> String {
    assert_eq!(answer.status, 200, "{answer:?}");
    let json = answer.json();
    let token = json["token"].as_str().unwrap_or_else(|| panic!("no token in {json}"));
    assert_eq!(json["access_token"], json["token"], "{json}");
    assert_eq!(json["expires_in"], EXPIRES_IN, "{json}");
    let issued_at = json["issued_at"].as_str().unwrap_or_else(|| panic!("no issued_at in {json}"));
    // RFC 3339, as Docker clients parse it, and the token's `iat`.
    let iat = jwt_claims(token)["iat"].as_u64().unwrap_or_else(|| panic!("no iat in {token}"));
    let date = run(Command::new("date").args(["-u", "-d", &format!("@{iat}"), "+%Y-%m-%dT%H:%M:%SZ"]));
    assert_eq!(issued_at, date.ok().trim(), "{json}");
    assert_eq!(jwt_claims(token)["exp"], iat + EXPIRES_IN, "{json}");
    token.to_string()
}

/// `docker args...` with `DOCKER_CONFIG` set to `config`.
fn docker(config: &std::path::Path, args: &[&str]) -> Output {
    run(support::docker::command(args).env("DOCKER_CONFIG", config))
}

#[test]
fn anonymous_pull_follows_the_challenge_to_a_pull_token() {
    let reg = TokenRegistry::start();
    let repo = format!("{}/hello", unique());

    let challenged = head_manifest(&reg, "", &repo, "latest");
    assert_eq!(challenged.status, 401, "{challenged:?}");
    let challenge = challenged.header("www-authenticate").unwrap_or_else(|| panic!("no challenge: {challenged:?}"));
    let params = parse_challenge(challenge).unwrap_or_else(|| panic!("not a Bearer challenge: {challenge}"));
    let scope = format!("repository:{repo}:pull");
    let expected = [("realm", reg.realm()), ("service", SERVICE), ("scope", &scope)];
    let expected: Vec<(String, String)> = expected.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    assert_eq!(params, expected, "{challenge}");

    let token = token_of(&get_token(&reg, "", &scope));
    let claims = jwt_claims(&token);
    assert_eq!(claims["iss"], ISSUER);
    assert_eq!(claims["aud"], SERVICE);
    assert_eq!(claims["sub"], "");
    assert_eq!(claims["access"], serde_json::json!([{ "type": "repository", "name": repo, "actions": ["pull"] }]));
    assert!(jwt_header(&token)["x5c"].is_array(), "{}", jwt_header(&token));

    // The registry takes the token: the manifest is simply not there.
    let answer = head_manifest(&reg, &bearer(&token), &repo, "latest");
    assert_eq!(answer.status, 404, "{answer:?}\n{}", reg.registry_log());

    assert_eq!(
        reg.requests(),
        [TokenRequest {
            method: "GET".into(),
            service: Some(SERVICE.into()),
            scopes: vec![scope],
            user: None,
            authenticated: false,
            status: 200,
            granted: vec![format!("repository:{repo}:pull")],
        }]
    );
}

#[test]
fn anonymous_requests_get_no_push_and_can_be_refused_pull() {
    let reg = TokenRegistry::start();
    let repo = format!("{}/hello", unique());

    // Asking for push anonymously is not an error; the token just has pull.
    let token = token_of(&get_token(&reg, "", &format!("repository:{repo}:pull,push")));
    assert_eq!(jwt_claims(&token)["access"][0]["actions"], serde_json::json!(["pull"]));
    let upload = start_upload(&reg, &bearer(&token), &repo);
    assert_eq!(upload.status, 401, "{upload:?}");
    assert!(
        upload.header("www-authenticate").unwrap_or_default().contains("error=\"insufficient_scope\""),
        "{upload:?}"
    );

    reg.set_anonymous_pull(false);
    let token = token_of(&get_token(&reg, "", &format!("repository:{repo}:pull")));
    assert_eq!(jwt_claims(&token)["access"], serde_json::json!([]));
    let answer = head_manifest(&reg, &bearer(&token), &repo, "latest");
    assert_eq!(answer.status, 401, "{answer:?}");
    assert!(
        answer.header("www-authenticate").unwrap_or_default().contains("error=\"insufficient_scope\""),
        "{answer:?}"
    );
    assert_eq!(reg.requests().last().unwrap().granted, Vec::<String>::new());
}

#[test]
fn credentials_get_a_push_token_and_wrong_ones_a_401() {
    let reg = TokenRegistry::start();
    let repo = format!("{}/hello", unique());
    let scope = format!("repository:{repo}:pull,push");

    let token = token_of(&get_token(&reg, &basic(PASSWORD), &scope));
    let claims = jwt_claims(&token);
    assert_eq!(claims["sub"], USER);
    assert_eq!(
        claims["access"],
        serde_json::json!([{ "type": "repository", "name": repo, "actions": ["pull", "push"] }])
    );
    let upload = start_upload(&reg, &bearer(&token), &repo);
    assert_eq!(upload.status, 202, "{upload:?}\n{}", reg.registry_log());
    assert!(upload.header("location").is_some(), "{upload:?}");

    // The OAuth2 password grant (POST), as containerd and BuildKit ask; the
    // form, password included, goes in the config on stdin.
    let form = format!(
        "data-urlencode = \"grant_type=password\"\ndata-urlencode = \"service={SERVICE}\"\n\
         data-urlencode = \"scope={scope}\"\ndata-urlencode = \"username={USER}\"\n\
         data-urlencode = \"password={PASSWORD}\"\n"
    );
    let token = token_of(&http(&form, &[reg.realm()]));
    assert_eq!(jwt_claims(&token)["access"][0]["actions"], serde_json::json!(["pull", "push"]));

    let refused = get_token(&reg, &basic("wrong-password"), &scope);
    assert_eq!(refused.status, 401, "{refused:?}");
    assert!(refused.json()["token"].is_null(), "{refused:?}");

    let seen: Vec<(String, Option<String>, bool, u16)> =
        reg.requests().into_iter().map(|r| (r.method, r.user, r.authenticated, r.status)).collect();
    let user = Some(USER.to_string());
    assert_eq!(
        seen,
        [
            ("GET".into(), user.clone(), true, 200),
            ("POST".into(), user.clone(), true, 200),
            ("GET".into(), user, false, 401)
        ]
    );
}

#[test]
fn docker_login_and_buildx_push_then_the_manifest_is_there() {
    let reg = TokenRegistry::start();
    let config = reg.docker_config();
    assert!(reg.requests().iter().any(|r| r.authenticated && r.status == 200), "{:?}", reg.requests());
    // The password is in the private config, not in the user's.
    let auths = std::fs::read_to_string(config.path().join("config.json")).unwrap();
    assert!(auths.contains(reg.url()), "{auths}");

    reg.clear_requests();
    let repo = format!("{}/hello", unique());
    let reference = reg.push_image(config.path(), &repo, "v1");
    let requests = reg.requests();
    let push_granted = |granted: &String| {
        granted
            .strip_prefix(&format!("repository:{repo}:"))
            .is_some_and(|actions| actions.split(',').any(|a| a == "push"))
    };
    assert!(
        requests.iter().any(|r| r.authenticated && r.granted.iter().any(push_granted)),
        "no push token for {repo}: {requests:#?}"
    );

    let inspect = docker(config.path(), &["manifest", "inspect", "--insecure", &reference]);
    assert_eq!(inspect.code, Some(0), "{inspect}\n{}", reg.registry_log());
    assert!(inspect.stdout.contains("\"layers\""), "{inspect}");

    // Anonymous pull sees it too, over the whole challenge and token flow.
    let token = token_of(&get_token(&reg, "", &format!("repository:{repo}:pull")));
    let answer = head_manifest(&reg, &bearer(&token), &repo, "v1");
    assert_eq!(answer.status, 200, "{answer:?}");
    assert!(answer.header("docker-content-digest").is_some_and(|d| d.starts_with("sha256:")), "{answer:?}");
}

#[test]
fn a_failing_or_garbage_token_endpoint_fails_the_token_step() {
    let reg = TokenRegistry::start();
    let config = reg.docker_config();
    let repo = format!("{}/hello", unique());
    let reference = reg.push_image(config.path(), &repo, "v1");
    let scope = format!("repository:{repo}:pull");

    // What docker says when the token step fails, in each mode. A push
    // (`try_push_image`) fails with the same message, but only after
    // dockerd's retries, about 50 s, so it is not tried here.
    for (mode, status, content_type, error) in [
        (Mode::TokenEndpointFails, 500, "text/plain", "500 Internal Server Error"),
        (Mode::TokenEndpointGarbage, 200, "text/html", "unable to decode token response"),
    ] {
        reg.set_mode(mode);
        assert_eq!(reg.mode(), mode);
        reg.clear_requests();
        let answer = get_token(&reg, "", &scope);
        assert_eq!(answer.status, status, "{mode:?}: {answer:?}");
        assert_eq!(answer.header("content-type"), Some(content_type), "{mode:?}: {answer:?}");
        assert!(serde_json::from_str::<serde_json::Value>(&answer.body).is_err(), "{mode:?}: {answer:?}");

        let inspect = docker(config.path(), &["manifest", "inspect", "--insecure", &reference]);
        assert_ne!(inspect.code, Some(0), "{mode:?}: docker manifest inspect succeeded\n{inspect}");
        assert!(inspect.stderr.contains(error), "{mode:?}: not the token step\n{inspect}");
        let requests = reg.requests();
        assert!(requests.len() >= 2, "{mode:?}: docker did not ask for a token: {requests:#?}");
        assert!(requests.iter().all(|r| r.status == status && r.granted.is_empty()), "{mode:?}: {requests:#?}");
    }

    // The same client succeeds once the token service is back.
    reg.set_mode(Mode::Normal);
    let inspect = docker(config.path(), &["manifest", "inspect", "--insecure", &reference]);
    assert_eq!(inspect.code, Some(0), "{inspect}\n{}", reg.registry_log());
}

#[test]
fn a_kid_header_is_accepted_and_an_untrusted_signer_is_not() {
    let reg = TokenRegistry::start();
    let repo = format!("{}/hello", unique());
    let scope = format!("repository:{repo}:pull");

    reg.set_key_header(KeyHeader::Kid);
    let token = token_of(&get_token(&reg, "", &scope));
    let header = jwt_header(&token);
    assert!(header["x5c"].is_null(), "{header}");
    let kid = header["kid"].as_str().unwrap_or_else(|| panic!("no kid in {header}"));
    // libtrust's form: twelve groups of four base32 characters.
    assert!(kid.split(':').count() == 12 && kid.split(':').all(|g| g.len() == 4), "{kid}");
    let answer = head_manifest(&reg, &bearer(&token), &repo, "latest");
    assert_eq!(answer.status, 404, "the registry refused a kid token: {answer:?}\n{}", reg.registry_log());

    reg.set_mode(Mode::UntrustedSigner);
    let token = token_of(&get_token(&reg, "", &scope));
    assert_ne!(jwt_header(&token)["kid"].as_str(), Some(kid));
    let answer = head_manifest(&reg, &bearer(&token), &repo, "latest");
    assert_eq!(answer.status, 401, "{answer:?}");
    assert!(answer.header("www-authenticate").unwrap_or_default().contains("error=\"invalid_token\""), "{answer:?}");
}
