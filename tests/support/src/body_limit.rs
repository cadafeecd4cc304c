//! A registry that refuses large request bodies, as registries behind some
//! proxies and CDNs do (HTTP 413 above a size limit): the HTTP test server
//! (`http`) on 127.0.0.1 in front of a real registry. A `PUT` or `PATCH`
//! whose `Content-Length` is above the limit gets 413 (before its body when
//! the client sent `Expect: 100-continue`, else after reading it); every
//! other request is passed through unchanged, one request per connection
//! (`Connection: close`). Every request is logged. Dropping the proxy stops
//! it.

use std::sync::{Arc, Mutex};

use super::http::{Reply, Response, Server};

/// One request the proxy saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    pub method: String,
    /// The `Content-Length` it announced, if any.
    pub length: Option<u64>,
    /// Whether the proxy answered 413 instead of passing it on.
    pub refused: bool,
}

/// The proxy (see the module docs).
pub struct BodyLimitProxy {
    server: Server,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl BodyLimitProxy {
    /// A proxy in front of `upstream` (`host:port`) that refuses bodies of
    /// more than `limit` bytes.
    pub fn start(upstream: &str, limit: u64) -> BodyLimitProxy {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (upstream, log) = (upstream.to_string(), seen.clone());
        let server = Server::start(move |request| {
            let length = request.content_length();
            let refused = matches!(request.method.as_str(), "PUT" | "PATCH") && length.is_some_and(|l| l > limit);
            log.lock().unwrap().push(Seen { method: request.method.clone(), length, refused });
            if !refused {
                return Reply::Forward(upstream.clone());
            }
            if !request.expects_continue() {
                let _ = request.skip_body();
            }
            Reply::Respond(Response::empty(413))
        });
        BodyLimitProxy { server, seen }
    }

    /// `127.0.0.1:<port>`.
    pub fn host(&self) -> String {
        self.server.host()
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}
