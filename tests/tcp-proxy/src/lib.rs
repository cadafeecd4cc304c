//! A TCP proxy on 127.0.0.1 in front of one upstream address, for the
//! integration tests and the copy benchmark: it forwards every connection
//! and counts the bytes clients send (`sent`), and a test can take it down
//! (connections refused, live ones dropped) and bring it back on the same
//! port, or stall it (new connections accepted and never answered: a
//! registry that hangs).
//!
//! `splice` is its forwarding, one connection's worth, for servers that read
//! a request before they pass the connection on (the HTTP test server of
//! `tests/support`). The standard library only: `cargo xtask` links this
//! crate for `bench copy`.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The proxy (see the crate docs). Dropping it takes it down.
pub struct Proxy {
    port: u16,
    target: String,
    shared: Arc<Shared>,
    acceptor: Option<(Arc<AtomicBool>, JoinHandle<()>)>,
}

#[derive(Default)]
struct Shared {
    /// Live connections by id: (client side, upstream side).
    live: Mutex<BTreeMap<usize, (TcpStream, TcpStream)>>,
    /// While set, new connections are accepted and held open, never
    /// answered.
    stalled: AtomicBool,
    held: Mutex<Vec<TcpStream>>,
    /// Connections accepted and forwarded, in total.
    accepted: AtomicUsize,
    next_id: AtomicUsize,
    /// Bytes clients sent upstream, in total.
    sent: AtomicU64,
}

impl Proxy {
    /// A proxy on a free port of 127.0.0.1 forwarding to `target`
    /// (`host:port`).
    pub fn start(target: &str) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let mut proxy = Proxy { port, target: target.to_string(), shared: Arc::default(), acceptor: None };
        proxy.serve(listener)?;
        Ok(proxy)
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:<port>`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Connections accepted and forwarded so far.
    pub fn accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Bytes clients sent through it so far.
    pub fn sent(&self) -> u64 {
        self.shared.sent.load(Ordering::SeqCst)
    }

    /// From now on, hold new connections open without answering (`false`:
    /// forward them again). Live connections go on.
    pub fn stall(&self, stalled: bool) {
        self.shared.stalled.store(stalled, Ordering::SeqCst);
    }

    /// Connections held by `stall`, in total so far.
    pub fn held(&self) -> usize {
        self.shared.held.lock().unwrap().len()
    }

    /// Stop accepting (connections are refused) and drop the live ones.
    pub fn down(&mut self) {
        if let Some((stop, handle)) = self.acceptor.take() {
            stop.store(true, Ordering::SeqCst);
            let _ = handle.join();
        }
        for (_, (client, server)) in std::mem::take(&mut *self.shared.live.lock().unwrap()) {
            let _ = client.shutdown(Shutdown::Both);
            let _ = server.shutdown(Shutdown::Both);
        }
        for client in std::mem::take(&mut *self.shared.held.lock().unwrap()) {
            let _ = client.shutdown(Shutdown::Both);
        }
    }

    /// Listen again, on the same port (retried for up to 10 s while the
    /// system still holds it).
    pub fn up(&mut self) -> std::io::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match TcpListener::bind(("127.0.0.1", self.port)) {
                Ok(listener) => break listener,
                Err(e) if Instant::now() >= deadline => return Err(e),
                // A poll interval, not a wait for an event.
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        self.serve(listener)
    }

    fn serve(&mut self, listener: TcpListener) -> std::io::Result<()> {
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let (shared, target, stopping) = (self.shared.clone(), self.target.clone(), stop.clone());
        let handle = std::thread::spawn(move || {
            // Returning drops the listener: connections are refused from then on.
            while !stopping.load(Ordering::SeqCst) {
                let client = match listener.accept() {
                    Ok((client, _)) => client,
                    Err(_) => {
                        // A poll interval (so that `down` can stop the
                        // loop), not a wait for an event.
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                };
                if client.set_nonblocking(false).is_err() {
                    continue;
                }
                if shared.stalled.load(Ordering::SeqCst) {
                    shared.held.lock().unwrap().push(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(&target) else { continue };
                shared.accepted.fetch_add(1, Ordering::SeqCst);
                let id = shared.next_id.fetch_add(1, Ordering::SeqCst);
                let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else { continue };
                shared.live.lock().unwrap().insert(id, (c2, s2));
                let shared = shared.clone();
                std::thread::spawn(move || {
                    let _ = splice(client, &[], server, &shared.sent);
                    shared.live.lock().unwrap().remove(&id);
                });
            }
        });
        self.acceptor = Some((stop, handle));
        Ok(())
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.down();
    }
}

/// Forward between `client` and `server` until both directions have ended:
/// `early` (bytes already read from the client) and then what the client
/// sends go to the server, counted in `sent`; what the server sends goes to
/// the client. A direction that ends shuts down the writing side of its
/// destination and the reading side of its source.
pub fn splice(client: TcpStream, early: &[u8], server: TcpStream, sent: &AtomicU64) -> std::io::Result<()> {
    let (mut from_client, mut to_server) = (client.try_clone()?, server.try_clone()?);
    std::thread::scope(|scope| {
        scope.spawn(move || {
            let mut buf = vec![0u8; 64 << 10];
            let mut pending = early;
            loop {
                if !pending.is_empty() {
                    if to_server.write_all(pending).is_err() {
                        break;
                    }
                    sent.fetch_add(pending.len() as u64, Ordering::Relaxed);
                }
                match from_client.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => pending = &buf[..n],
                }
            }
            let _ = to_server.shutdown(Shutdown::Write);
            let _ = from_client.shutdown(Shutdown::Read);
        });
        let (mut from_server, mut to_client) = (&server, &client);
        let _ = std::io::copy(&mut from_server, &mut to_client);
        let _ = client.shutdown(Shutdown::Write);
        let _ = server.shutdown(Shutdown::Read);
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server on 127.0.0.1 that answers each connection with what it
    /// read, once the client has shut down its side.
    fn echo() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            for mut conn in listener.incoming().flatten() {
                let mut got = vec![];
                let _ = conn.read_to_end(&mut got);
                let _ = conn.write_all(&got);
            }
        });
        addr
    }

    fn round_trip(host: &str, bytes: &[u8]) -> std::io::Result<Vec<u8>> {
        let mut conn = TcpStream::connect(host)?;
        conn.write_all(bytes)?;
        conn.shutdown(Shutdown::Write)?;
        let mut back = vec![];
        conn.read_to_end(&mut back)?;
        Ok(back)
    }

    #[test]
    fn forwards_counts_goes_down_comes_back_and_stalls() {
        let mut proxy = Proxy::start(&echo()).unwrap();
        assert_eq!(round_trip(&proxy.host(), b"hello").unwrap(), b"hello");
        assert_eq!((proxy.accepted(), proxy.sent()), (1, 5));

        proxy.down();
        assert!(TcpStream::connect(proxy.host()).is_err(), "down, yet it accepts");
        proxy.up().unwrap();
        assert_eq!(round_trip(&proxy.host(), b"again").unwrap(), b"again");
        assert_eq!((proxy.accepted(), proxy.sent()), (2, 10));

        proxy.stall(true);
        let mut held = TcpStream::connect(proxy.host()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while proxy.held() == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!((proxy.held(), proxy.accepted()), (1, 2));
        // Never answered: the read waits until `down` drops the connection.
        held.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        proxy.down();
        let read = held.read(&mut [0; 1]);
        assert!(matches!(read, Ok(0)), "a held connection outlived `down`: {read:?}");
    }

    #[test]
    fn splice_sends_what_was_read_early_first() {
        let upstream = TcpListener::bind("127.0.0.1:0").unwrap();
        let upstream_addr = upstream.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut conn, _) = upstream.accept().unwrap();
            let mut got = vec![];
            conn.read_to_end(&mut got).unwrap();
            conn.write_all(b"ok").unwrap();
            got
        });
        let front = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(front.local_addr().unwrap()).unwrap();
        let (accepted, _) = front.accept().unwrap();
        let sent = AtomicU64::new(0);
        std::thread::scope(|scope| {
            let spliced =
                scope.spawn(|| splice(accepted, b"early ", TcpStream::connect(upstream_addr).unwrap(), &sent));
            client.write_all(b"late").unwrap();
            client.shutdown(Shutdown::Write).unwrap();
            let mut back = vec![];
            client.read_to_end(&mut back).unwrap();
            assert_eq!(back, b"ok");
            spliced.join().unwrap().unwrap();
        });
        assert_eq!(server.join().unwrap(), b"early late");
        assert_eq!(sent.load(Ordering::Relaxed), 10);
    }
}
