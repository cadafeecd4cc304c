//! A tiny service shipped as a `FROM scratch` image: prints a greeting read
//! from a template file, or serves it over HTTP with `--serve ADDR`.

// A service of its own: the environment bans of clippy.toml are for the build engine.
#![allow(clippy::disallowed_methods)]

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::ExitCode;

const DEFAULT_TEMPLATE: &str = "/etc/greeter/greeting.txt";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let template_path = std::env::var("GREETER_TEMPLATE").unwrap_or_else(|_| DEFAULT_TEMPLATE.to_string());
    let template = match std::fs::read_to_string(&template_path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("greeter: cannot read template {template_path}: {e}");
            return ExitCode::FAILURE;
        }
    };
    match args.as_slice() {
        [flag, addr] if flag == "--serve" => serve(addr, &template),
        [] => {
            println!("greeter {}: {}", env!("CARGO_PKG_VERSION"), greeting::render(&template, "world"));
            ExitCode::SUCCESS
        }
        [name] => {
            println!("greeter {}: {}", env!("CARGO_PKG_VERSION"), greeting::render(&template, name));
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("usage: greeter [NAME] | greeter --serve ADDR");
            ExitCode::from(2)
        }
    }
}

fn serve(addr: &str, template: &str) -> ExitCode {
    let listener = match TcpListener::bind(addr) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("greeter: cannot listen on {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!("greeter: listening on {addr}");
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let mut buf = [0u8; 1024];
        let _ = stream.read(&mut buf);
        let body = greeting::render(template, "world") + "\n";
        let _ = write!(stream, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
    }
    ExitCode::SUCCESS
}
