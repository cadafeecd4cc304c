//! One small HTTP/1.1 server for the tests, with a hook: on 127.0.0.1, a
//! thread per connection, one request per connection (every answer says
//! `Connection: close`). The hook sees each request's head, may read its
//! body, and answers it (`Reply::Respond`) or passes the connection on to
//! another server unchanged (`Reply::Forward`, through `tcp_proxy::splice`).
//! The token service of `token_registry` and the size-limiting proxy of
//! `body_limit` are hooks of it. Heads are parsed by `httparse` (here and in
//! `get`, its client side). Dropping the server stops it.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// The most headers a head may have.
const MAX_HEADERS: usize = 64;
/// How long reading a request's head or body may block.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// A request as the hook sees it: its head, and its body still to read.
pub struct Request {
    pub method: String,
    /// The request target (`/token?service=...`).
    pub target: String,
    /// The headers as sent, in order.
    pub headers: Vec<(String, String)>,
    /// The head as sent, up to and with its empty line.
    head: Vec<u8>,
    /// What was read past the head: the start of the body.
    early: Vec<u8>,
    stream: TcpStream,
}

impl Request {
    /// The first header called `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    /// The target without its query.
    pub fn path(&self) -> &str {
        self.target.split_once('?').map_or(&self.target, |(p, _)| p)
    }

    /// The query (after `?`), or "".
    pub fn query(&self) -> &str {
        self.target.split_once('?').map_or("", |(_, q)| q)
    }

    /// `Content-Length`, if any.
    pub fn content_length(&self) -> Option<u64> {
        self.header("content-length").and_then(|v| v.parse().ok())
    }

    /// Whether the client waits for `100 Continue` before it sends the body.
    pub fn expects_continue(&self) -> bool {
        self.header("expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
    }

    /// The body (`Content-Length` bytes, at most `limit`).
    pub fn body(&mut self, limit: u64) -> std::io::Result<Vec<u8>> {
        let length = self.content_length().unwrap_or(0).min(limit) as usize;
        let mut body = std::mem::take(&mut self.early);
        body.truncate(length);
        let have = body.len();
        body.resize(length, 0);
        self.stream.read_exact(&mut body[have..])?;
        Ok(body)
    }

    /// Read the body and drop it.
    pub fn skip_body(&mut self) -> std::io::Result<()> {
        let length = self.content_length().unwrap_or(0);
        let have = (self.early.len() as u64).min(length);
        self.early.clear();
        std::io::copy(&mut (&self.stream).take(length - have), &mut std::io::sink())?;
        Ok(())
    }
}

/// What the hook does with a request.
pub enum Reply {
    /// Answer it, and close the connection.
    Respond(Response),
    /// Pass the connection on to `host:port`: the request as it came (but
    /// with `Connection: close`), then everything either side sends.
    Forward(String),
}

/// An answer.
pub struct Response {
    pub status: u16,
    /// Headers besides `Content-Length` and `Connection`.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// `status` with an empty body.
    pub fn empty(status: u16) -> Response {
        Response { status, headers: vec![], body: vec![] }
    }

    /// `status` with `body` of type `content_type`.
    pub fn text(status: u16, content_type: &str, body: impl Into<String>) -> Response {
        Response { headers: vec![("Content-Type".into(), content_type.into())], body: body.into().into(), status }
    }

    /// `status` with `body` as JSON.
    pub fn json(status: u16, body: serde_json::Value) -> Response {
        Response::text(status, "application/json", body.to_string())
    }

    /// With the header `name: value` too.
    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Response {
        self.headers.push((name.into(), value.into()));
        self
    }
}

type Hook = dyn Fn(&mut Request) -> Reply + Send + Sync;

/// The server (see the module docs).
pub struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// A server on a free port of 127.0.0.1 that answers with `hook`.
    pub fn start(hook: impl Fn(&mut Request) -> Reply + Send + Sync + 'static) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let (stopping, hook) = (stop.clone(), Arc::new(hook) as Arc<Hook>);
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                let hook = hook.clone();
                // One thread per connection: clients may hold one open
                // while they open another.
                std::thread::spawn(move || {
                    let _ = serve(stream, &*hook);
                });
            }
        });
        Server { addr, stop, thread: Some(thread) }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `127.0.0.1:<port>`.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so that it sees `stop`.
        let _ = TcpStream::connect(self.addr);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(stream: TcpStream, hook: &Hook) -> std::io::Result<()> {
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    let Some((buf, head_len)) = read_head(&stream, |buf| {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        httparse::Request::new(&mut headers).parse(buf)
    })?
    else {
        return Ok(()); // the wake-up connection of Drop, or a probe
    };
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    parsed.parse(&buf[..head_len]).map_err(std::io::Error::other)?;
    let mut request = Request {
        method: parsed.method.unwrap_or_default().to_string(),
        target: parsed.path.unwrap_or_default().to_string(),
        headers: owned(parsed.headers),
        head: buf[..head_len].to_vec(),
        early: buf[head_len..].to_vec(),
        stream: stream.try_clone()?,
    };
    match hook(&mut request) {
        Reply::Respond(response) => {
            let mut stream = stream;
            write_response(&mut stream, &response)?;
            stream.shutdown(Shutdown::Both)
        }
        Reply::Forward(upstream) => {
            stream.set_read_timeout(None)?;
            let mut up = TcpStream::connect(upstream)?;
            up.write_all(&forwarded_head(&request))?;
            tcp_proxy::splice(stream, &request.early, up, &AtomicU64::new(0))
        }
    }
}

/// The request's head with its `Connection` headers replaced by
/// `Connection: close`.
fn forwarded_head(request: &Request) -> Vec<u8> {
    let text = String::from_utf8_lossy(&request.head);
    let mut out = String::new();
    for line in text.split_inclusive("\r\n") {
        let name = line.split(':').next().unwrap_or_default().trim();
        if name.eq_ignore_ascii_case("connection") {
            continue;
        }
        if line == "\r\n" {
            out.push_str("Connection: close\r\n");
        }
        out.push_str(line);
    }
    out.into_bytes()
}

fn write_response(stream: &mut TcpStream, response: &Response) -> std::io::Result<()> {
    let reason = match response.status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Payload Too Large",
        500 => "Internal Server Error",
        _ => "Unknown",
    };
    let mut head = format!("HTTP/1.1 {} {reason}\r\n", response.status);
    for (name, value) in &response.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\nConnection: close\r\n\r\n", response.body.len()));
    stream.write_all(head.as_bytes())?;
    stream.write_all(&response.body)?;
    stream.flush()
}

/// Read from `stream` until `parse` finds a whole head: what was read, and
/// the head's length. `None` if the stream ends before a byte came.
fn read_head(
    mut stream: &TcpStream,
    parse: impl Fn(&[u8]) -> httparse::Result<usize>,
) -> std::io::Result<Option<(Vec<u8>, usize)>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return match buf.is_empty() {
                true => Ok(None),
                false => Err(std::io::ErrorKind::UnexpectedEof.into()),
            };
        }
        buf.extend_from_slice(&chunk[..n]);
        if let httparse::Status::Complete(len) = parse(&buf).map_err(std::io::Error::other)? {
            return Ok(Some((buf, len)));
        }
    }
}

fn owned(headers: &[httparse::Header]) -> Vec<(String, String)> {
    headers.iter().map(|h| (h.name.to_string(), String::from_utf8_lossy(h.value).trim().to_string())).collect()
}

/// The first header called `name` (any case) of `headers`.
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

/// `GET path` on `addr` (`host:port`) over a fresh connection: the status
/// and the headers of the answer.
pub fn get(addr: &str, path: &str) -> std::io::Result<(u16, Vec<(String, String)>)> {
    let addr_parsed = addr.parse().map_err(std::io::Error::other)?;
    let mut stream = TcpStream::connect_timeout(&addr_parsed, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
    let parse = |buf: &[u8]| {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        httparse::Response::new(&mut headers).parse(buf)
    };
    let (buf, len) = read_head(&stream, parse)?.ok_or(std::io::ErrorKind::UnexpectedEof)?;
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    response.parse(&buf[..len]).map_err(std::io::Error::other)?;
    Ok((response.code.unwrap_or_default(), owned(response.headers)))
}
