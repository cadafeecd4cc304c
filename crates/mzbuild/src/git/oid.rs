//! Git object ids and their hex form: the leaf that the index, the blob
//! cache and the object reader share.

/// A git object id (SHA-1 repositories only).
pub type Oid = [u8; 20];

pub fn hex(oid: &[u8]) -> String {
    oid.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn parse_hex(s: &str) -> Option<Oid> {
    let b = s.as_bytes();
    if b.len() != 40 {
        return None;
    }
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    let mut out = [0u8; 20];
    let mut i = 0;
    while i < 20 {
        out[i] = (nibble(b[2 * i])? << 4) | nibble(b[2 * i + 1])?;
        i += 1;
    }
    Some(out)
}
