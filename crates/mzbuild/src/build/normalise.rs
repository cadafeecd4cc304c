//! mzbuild's own `rewrite-timestamp`, for builders that ignore it (the
//! `docker` driver: measured on docker 26.1, its layers keep the build's
//! time on the directories a `COPY` creates, e.g. `usr/local/bin/` for
//! `COPY x /usr/local/bin/x` onto `scratch`). After the build, the image is
//! streamed out of the engine (`docker save`), every tar header's mtime
//! later than [`SOURCE_DATE_EPOCH`](super::context::SOURCE_DATE_EPOCH) is
//! set to it (in place: the header block and its checksum, or the digits of
//! a PAX `mtime=` record, so no size changes), the config gets the new diff
//! IDs, and the result is streamed back in (`docker load`) under the same
//! tags. Memory stays bounded: layers pass through block by block; only the
//! JSON files of the archive (configs, manifests) are held.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

use crate::docker::Docker;
use crate::process::GroupChild;

const BLOCK: usize = 512;

/// Rewrite the local image `tags[0]` as described in the module doc, and
/// tag the result with every one of `tags`. Output of the docker commands
/// goes to `log`; past `timeout` both are killed.
pub fn normalise(docker: &Docker, tags: &[String], epoch: u64, log: &Path, timeout: Duration) -> Result<()> {
    let source = tags.first().ok_or_else(|| anyhow!("no tag to normalise"))?;
    // An image without layers (`FROM scratch` alone) has no file times, and
    // docker save refuses it ("empty export").
    // (Two questions: with other fields beside it, `len .RootFS.Layers`
    // fails on a layerless image, whose RootFS has no `Layers` key.)
    let inspect = |reference: &str, format: &str| -> Option<String> {
        let out = docker
            .command(&["image", "inspect", "--format", format, reference])
            .output()
            .ok()
            .filter(|o| o.status.success())?;
        Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    if inspect(source, "{{len .RootFS.Layers}}").as_deref() == Some("0") {
        return Ok(());
    }
    let before = inspect(source, "{{.Id}}");
    let logf = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
    // Both in process groups of their own, registered like builds: an
    // interrupt or mzbuild's death kills them, and so does `timeout`.
    let mut save_cmd = docker.command(&["save", source]);
    save_cmd.stdout(Stdio::piped()).stderr(logf.try_clone()?);
    let mut save = GroupChild::spawn(&mut save_cmd).context("running docker save")?;
    let mut load_cmd = docker.command(&["load"]);
    load_cmd.stdin(Stdio::piped()).stdout(logf.try_clone()?).stderr(logf.try_clone()?);
    let mut load = GroupChild::spawn(&mut load_cmd).context("running docker load")?;
    let input = save.take_stdout().expect("piped");
    let output = load.take_stdin().expect("piped");
    let deadline = Instant::now() + timeout;
    let left = || deadline.saturating_duration_since(Instant::now());
    let (rewritten, saved, loaded) = std::thread::scope(|s| {
        // The rewrite owns both pipes: killing either side ends it.
        let rewriter = s.spawn(move || rewrite(input, output, tags, epoch));
        let saved = save.wait_timeout(left());
        if !matches!(saved, Ok(Some(_))) {
            load.kill();
        }
        let loaded = load.wait_timeout(left());
        let rewritten = rewriter.join().unwrap_or_else(|_| Err(anyhow!("the rewrite panicked")));
        (rewritten, saved, loaded)
    });
    let (saved, loaded) = match (saved?, loaded?) {
        (Some(s), Some(l)) => (s, l),
        _ => bail!(
            "normalising the timestamps of {source}: docker save | docker load timed out after {}s and was killed; \
             see {}",
            timeout.as_secs(),
            log.display()
        ),
    };
    if !saved.success() || !loaded.success() {
        bail!(
            "normalising the timestamps of {source}: docker save ({saved}) or docker load ({loaded}) failed; see {}",
            log.display()
        );
    }
    rewritten.with_context(|| format!("normalising the timestamps of {source}"))?;
    // The image as built lost its tags to the normalised one: remove it, or
    // every build would leave an untagged image (and the build-cache
    // records it holds) in the engine. Without -f: if anything else still
    // names it, it stays.
    if let (Some(old), Some(new)) = (before, inspect(source, "{{.Id}}")) {
        if old != new {
            let _ = docker.command(&["rmi", &old]).stdout(Stdio::null()).stderr(Stdio::null()).status();
        }
    }
    Ok(())
}

/// Read a `docker save` archive from `input`, write a `docker load`
/// archive (one image, tagged `tags`) to `output`.
pub fn rewrite(input: impl Read, output: impl Write, tags: &[String], epoch: u64) -> Result<()> {
    let mut archive = tar::Archive::new(input);
    let mut out = tar::Builder::new(io::BufWriter::with_capacity(1 << 16, output));
    let mut json: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    // Layer path in the input -> (path in the output, new diff ID).
    let mut layers: BTreeMap<String, (String, String)> = BTreeMap::new();
    for entry in archive.entries().context("reading docker save's output")? {
        let mut entry = entry?;
        if entry.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let path = entry.path()?.display().to_string();
        let size = entry.header().size()?;
        let mut first = [0u8; 1];
        let n = if size > 0 { entry.read(&mut first)? } else { 0 };
        // JSON (configs, manifests, the index; manifest.json is a list) or
        // a layer (a tar, whose first byte is a path's).
        if n == 1 && matches!(first[0], b'{' | b'[') && size < (64 << 20) {
            let mut bytes = vec![first[0]];
            entry.read_to_end(&mut bytes)?;
            json.insert(path, bytes);
            continue;
        }
        // A layer: patched block by block on its way out.
        let name = format!("{}/layer.tar", path.replace('/', "_"));
        let mut header = tar::Header::new_gnu();
        header.set_size(size);
        header.set_mode(0o644);
        header.set_mtime(epoch);
        header.set_entry_type(tar::EntryType::Regular);
        let mut clamp = Clamp::new(io::Cursor::new(first[..n].to_vec()).chain(entry), epoch);
        out.append_data(&mut header, &name, &mut clamp)?;
        let digest = clamp.digest();
        layers.insert(path, (name, digest));
    }
    let manifest: Value = serde_json::from_slice(json.get("manifest.json").ok_or_else(|| anyhow!("no manifest.json"))?)
        .context("manifest.json is not JSON")?;
    let first = &manifest[0];
    let config_path = first["Config"].as_str().ok_or_else(|| anyhow!("manifest.json names no Config"))?;
    let mut config: Value = serde_json::from_slice(json.get(config_path).ok_or_else(|| anyhow!("no {config_path}"))?)?;
    let mut names = vec![];
    let mut ids = vec![];
    for l in first["Layers"].as_array().ok_or_else(|| anyhow!("manifest.json names no Layers"))? {
        let l = l.as_str().unwrap_or_default();
        let (name, id) = layers.get(l).ok_or_else(|| anyhow!("manifest.json names a layer {l} the archive lacks"))?;
        names.push(Value::from(name.clone()));
        ids.push(Value::from(id.clone()));
    }
    config["rootfs"]["diff_ids"] = Value::Array(ids);
    let config_bytes = serde_json::to_vec(&config)?;
    let config_name = format!("{}.json", hex_sha256(&config_bytes));
    let new_manifest = serde_json::to_vec(&serde_json::json!([{
        "Config": config_name,
        "RepoTags": tags,
        "Layers": names,
    }]))?;
    for (name, bytes) in [(config_name.as_str(), &config_bytes), ("manifest.json", &new_manifest)] {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(epoch);
        header.set_entry_type(tar::EntryType::Regular);
        out.append_data(&mut header, name, bytes.as_slice())?;
    }
    out.into_inner()?.flush()?;
    Ok(())
}

fn hex_sha256(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// A reader of a tar stream that sets every mtime later than `epoch` to
/// `epoch`, and hashes what it hands out.
struct Clamp<R> {
    inner: R,
    epoch: u64,
    /// Data blocks of the current entry still to pass unchanged.
    data_left: u64,
    /// Ready to hand out.
    buf: Vec<u8>,
    at: usize,
    sha: ring::digest::Context,
    done: bool,
}

impl<R: Read> Clamp<R> {
    fn new(inner: R, epoch: u64) -> Clamp<R> {
        Clamp {
            inner,
            epoch,
            data_left: 0,
            buf: vec![],
            at: 0,
            sha: ring::digest::Context::new(&ring::digest::SHA256),
            done: false,
        }
    }

    fn digest(self) -> String {
        let d = self.sha.finish();
        format!("sha256:{}", d.as_ref().iter().map(|b| format!("{b:02x}")).collect::<String>())
    }

    /// Read one block; `false` at the end of the stream.
    fn block(&mut self, b: &mut [u8; BLOCK]) -> io::Result<bool> {
        let mut got = 0;
        while got < BLOCK {
            match self.inner.read(&mut b[got..])? {
                0 if got == 0 => return Ok(false),
                0 => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "a layer ends inside a tar block")),
                n => got += n,
            }
        }
        Ok(true)
    }

    /// The next piece of output (a header with its PAX data, or a data block).
    fn fill(&mut self) -> io::Result<()> {
        let mut b = [0u8; BLOCK];
        if !self.block(&mut b)? {
            self.done = true;
            return Ok(());
        }
        if self.data_left > 0 {
            self.data_left -= 1;
            self.buf.extend_from_slice(&b);
            return Ok(());
        }
        if b.iter().all(|x| *x == 0) {
            self.buf.extend_from_slice(&b);
            return Ok(());
        }
        let size = parse_number(&b[124..136]).ok_or_else(|| bad("size"))?;
        let blocks = size.div_ceil(BLOCK as u64);
        clamp_header(&mut b, self.epoch)?;
        self.buf.extend_from_slice(&b);
        if matches!(b[156], b'x' | b'g') {
            // PAX records: patched in place (same length).
            let mut data = vec![0u8; blocks as usize * BLOCK];
            for chunk in data.chunks_mut(BLOCK) {
                let mut blk = [0u8; BLOCK];
                if !self.block(&mut blk)? {
                    return Err(bad("PAX data"));
                }
                chunk.copy_from_slice(&blk);
            }
            clamp_pax(&mut data[..size as usize], self.epoch);
            self.buf.extend_from_slice(&data);
        } else {
            self.data_left = blocks;
        }
        Ok(())
    }
}

impl<R: Read> Read for Clamp<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.at == self.buf.len() {
            self.buf.clear();
            self.at = 0;
            if self.done {
                return Ok(0);
            }
            self.fill()?;
            self.sha.update(&self.buf);
        }
        let n = out.len().min(self.buf.len() - self.at);
        out[..n].copy_from_slice(&self.buf[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("a layer has a tar header with an unreadable {what}"))
}

/// A tar number field: octal digits (NUL/space padded), or base-256.
fn parse_number(field: &[u8]) -> Option<u64> {
    if field[0] & 0x80 != 0 {
        return Some(field[1..].iter().fold(0u64, |n, b| (n << 8) | u64::from(*b)));
    }
    let text: String = field.iter().take_while(|b| **b != 0).map(|b| *b as char).collect();
    let text = text.trim();
    if text.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(text, 8).ok()
}

/// Set the header's mtime to `epoch` if it is later; fix the checksum.
fn clamp_header(b: &mut [u8; BLOCK], epoch: u64) -> io::Result<()> {
    let mtime = parse_number(&b[136..148]).ok_or_else(|| bad("mtime"))?;
    if mtime <= epoch {
        return Ok(());
    }
    b[136..148].copy_from_slice(format!("{epoch:011o}\0").as_bytes());
    b[148..156].copy_from_slice(b"        ");
    let sum: u32 = b.iter().map(|x| u32::from(*x)).sum();
    b[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    Ok(())
}

/// In PAX records (`LEN key=value\n`), replace the digits of `mtime`,
/// `atime` and `ctime` values later than `epoch` with `epoch`, zero-padded
/// to the same length.
fn clamp_pax(data: &mut [u8], epoch: u64) {
    let mut at = 0;
    while at < data.len() {
        let Some(space) = data[at..].iter().position(|b| *b == b' ') else { return };
        let Some(len) = std::str::from_utf8(&data[at..at + space]).ok().and_then(|s| s.parse::<usize>().ok()) else {
            return;
        };
        if len == 0 || at + len > data.len() {
            return;
        }
        let record = &mut data[at + space + 1..at + len];
        for key in [&b"mtime="[..], b"atime=", b"ctime="] {
            if record.starts_with(key) {
                let end = record.len() - 1;
                let value = &mut record[key.len()..end];
                let secs: Option<u64> =
                    std::str::from_utf8(value).ok().and_then(|v| v.split('.').next()).and_then(|s| s.parse().ok());
                if secs.is_some_and(|s| s > epoch) {
                    let int_len = value.iter().position(|b| *b == b'.').unwrap_or(value.len());
                    let digits = format!("{epoch:0int_len$}");
                    if digits.len() == int_len {
                        value[..int_len].copy_from_slice(digits.as_bytes());
                        for b in value[int_len..].iter_mut().skip(1) {
                            *b = b'0';
                        }
                    }
                }
            }
        }
        at += len;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(entries: &[(&str, u64)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, mtime) in entries {
            let mut h = tar::Header::new_ustar();
            h.set_size(3);
            h.set_mode(0o644);
            h.set_mtime(*mtime);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, path, &b"abc"[..]).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn mtimes(bytes: &[u8]) -> Vec<(String, u64)> {
        let mut ar = tar::Archive::new(bytes);
        ar.entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (e.path().unwrap().display().to_string(), e.header().mtime().unwrap())
            })
            .collect()
    }

    #[test]
    fn later_mtimes_become_the_epoch_and_the_rest_stays() {
        let input = layer(&[("usr/", 1_765_000_000), ("usr/bin/x", 0), ("old", 5)]);
        let mut clamp = Clamp::new(input.as_slice(), 10);
        let mut out = vec![];
        clamp.read_to_end(&mut out).unwrap();
        assert_eq!(out.len(), input.len());
        assert_eq!(mtimes(&out), [("usr/".to_string(), 10), ("usr/bin/x".to_string(), 0), ("old".to_string(), 5)]);
        assert_eq!(clamp.digest(), format!("sha256:{}", hex_sha256(&out)));
        // The content is untouched.
        let mut ar = tar::Archive::new(out.as_slice());
        for e in ar.entries().unwrap() {
            let mut s = String::new();
            e.unwrap().read_to_string(&mut s).unwrap();
            assert_eq!(s, "abc");
        }
    }

    #[test]
    fn pax_times_keep_their_length() {
        let mut data = b"30 mtime=1765000000.123456789\n20 atime=1765000000\n".to_vec();
        let len = data.len();
        clamp_pax(&mut data, 0);
        assert_eq!(data.len(), len);
        assert_eq!(&data[..], b"30 mtime=0000000000.000000000\n20 atime=0000000000\n");
    }

    #[test]
    fn a_saved_image_is_rewritten_with_new_diff_ids() {
        let layer_bytes = layer(&[("usr/", 1_765_000_000)]);
        let old_id = format!("sha256:{}", hex_sha256(&layer_bytes));
        let config =
            format!(r#"{{"rootfs":{{"type":"layers","diff_ids":["{old_id}"]}},"created":"1970-01-01T00:00:00Z"}}"#);
        let manifest = r#"[{"Config":"blobs/sha256/c","RepoTags":["old:tag"],"Layers":["blobs/sha256/l"]}]"#;
        let mut saved = tar::Builder::new(Vec::new());
        for (path, bytes) in [
            ("blobs/sha256/c", config.as_bytes()),
            ("blobs/sha256/l", &layer_bytes),
            ("manifest.json", manifest.as_bytes()),
        ] {
            let mut h = tar::Header::new_ustar();
            h.set_size(bytes.len() as u64);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            saved.append_data(&mut h, path, bytes).unwrap();
        }
        let saved = saved.into_inner().unwrap();
        let mut out = vec![];
        rewrite(saved.as_slice(), &mut out, &["a/x:t".into(), "b/x:t".into()], 0).unwrap();
        let mut files = BTreeMap::new();
        for e in tar::Archive::new(out.as_slice()).entries().unwrap() {
            let mut e = e.unwrap();
            let mut bytes = vec![];
            e.read_to_end(&mut bytes).unwrap();
            files.insert(e.path().unwrap().display().to_string(), bytes);
        }
        let new_layer = &files["blobs_sha256_l/layer.tar"];
        assert_eq!(mtimes(new_layer), [("usr/".to_string(), 0)]);
        let manifest: Value = serde_json::from_slice(&files["manifest.json"]).unwrap();
        assert_eq!(manifest[0]["RepoTags"], serde_json::json!(["a/x:t", "b/x:t"]));
        let config: Value = serde_json::from_slice(&files[manifest[0]["Config"].as_str().unwrap()]).unwrap();
        assert_eq!(config["rootfs"]["diff_ids"][0], format!("sha256:{}", hex_sha256(new_layer)).as_str());
        assert_ne!(config["rootfs"]["diff_ids"][0], old_id.as_str());
    }
}
