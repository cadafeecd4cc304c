//! A registry that refuses large request bodies, as registries behind some
//! proxies and CDNs do (HTTP 413 above a size limit): a small HTTP/1.1 proxy
//! on 127.0.0.1, in a thread, in front of a real registry. A `PUT` or
//! `PATCH` whose `Content-Length` is above the limit gets 413 (before its
//! body when the client sent `Expect: 100-continue`, else after reading
//! it); every other request is passed through unchanged, one request per
//! connection (`Connection: close`). Every request is logged. Dropping the
//! proxy stops it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

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
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl BodyLimitProxy {
    /// A proxy in front of `upstream` (`host:port`) that refuses bodies of
    /// more than `limit` bytes.
    pub fn start(upstream: &str, limit: u64) -> BodyLimitProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (upstream, seen2, stop2) = (upstream.to_string(), seen.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let (upstream, seen) = (upstream.clone(), seen2.clone());
                std::thread::spawn(move || {
                    let _ = serve(conn, &upstream, limit, &seen);
                });
            }
        });
        BodyLimitProxy { addr, seen, stop, thread: Some(thread) }
    }

    /// `127.0.0.1:<port>`.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for BodyLimitProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(client: TcpStream, upstream: &str, limit: u64, seen: &Mutex<Vec<Seen>>) -> std::io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let mut head = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let end = line == "\r\n";
        head.push(line);
        if end {
            break;
        }
    }
    let method = head[0].split(' ').next().unwrap_or_default().to_string();
    let header = |name: &str| {
        head[1..].iter().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    };
    let length: Option<u64> = header("content-length").and_then(|v| v.parse().ok());
    let refused = matches!(method.as_str(), "PUT" | "PATCH") && length.is_some_and(|l| l > limit);
    seen.lock().unwrap().push(Seen { method, length, refused });
    let mut client = client;
    if refused {
        let expects = header("expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
        if !expects {
            std::io::copy(&mut (&mut reader).take(length.unwrap_or(0)), &mut std::io::sink())?;
        }
        client.write_all(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
        return client.shutdown(Shutdown::Both);
    }
    let mut up = TcpStream::connect(upstream)?;
    for line in &head {
        let name = line.split(':').next().unwrap_or_default().trim();
        if name.eq_ignore_ascii_case("connection") {
            continue;
        }
        if line == "\r\n" {
            up.write_all(b"Connection: close\r\n")?;
        }
        up.write_all(line.as_bytes())?;
    }
    // Whatever the reader buffered of the body goes first, then the rest.
    let mut up_write = up.try_clone()?;
    let to_upstream = std::thread::spawn(move || {
        let _ = std::io::copy(&mut reader, &mut up_write);
        let _ = up_write.shutdown(Shutdown::Write);
    });
    let _ = std::io::copy(&mut up, &mut client);
    let _ = client.shutdown(Shutdown::Both);
    let _ = up.shutdown(Shutdown::Both);
    let _ = to_upstream.join();
    Ok(())
}
