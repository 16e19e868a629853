//! `multipart/form-data` (RFC 7578) bodies, as a browser uploads a file: parts split on the
//! boundary, each with its form name, file name (if a file) and bytes. Small and bounded: the
//! body is already in memory (under the route's body limit), parts are at most `MAX_PARTS`.

/// Parts read from one body; more is refused.
const MAX_PARTS: usize = 16;

#[derive(Debug, PartialEq, Eq)]
pub struct Part {
    pub name: String,
    pub file_name: Option<String>,
    pub data: Vec<u8>,
}

/// The boundary of a `multipart/form-data; boundary=...` content type.
pub fn boundary(content_type: &str) -> Option<String> {
    let (kind, params) = content_type.split_once(';')?;
    if !kind.trim().eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    params.split(';').find_map(|p| {
        let (k, v) = p.trim().split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| v.trim().trim_matches('"').to_string())
            .filter(|b| !b.is_empty() && b.len() <= 70)
    })
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if needle.is_empty() || from > hay.len() {
        return None;
    }
    hay[from..]
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|i| i + from)
}

/// A `Content-Disposition` parameter (`name="csrf"`).
fn param(header: &str, key: &str) -> Option<String> {
    header.split(';').skip(1).find_map(|p| {
        let (k, v) = p.trim().split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case(key)
            .then(|| v.trim().trim_matches('"').to_string())
    })
}

/// The parts of `body`; an error says what is wrong with it.
pub fn parse(body: &[u8], boundary: &str) -> Result<Vec<Part>, String> {
    let delim = format!("--{boundary}");
    let mut at = find(body, delim.as_bytes(), 0).ok_or("no boundary in the body")?;
    let mut parts = Vec::new();
    loop {
        at += delim.len();
        if body[at..].starts_with(b"--") {
            return Ok(parts); // the closing delimiter
        }
        if !body[at..].starts_with(b"\r\n") {
            return Err("a boundary not followed by a line break".into());
        }
        at += 2;
        let head_end = find(body, b"\r\n\r\n", at).ok_or("a part without its blank line")?;
        let head = std::str::from_utf8(&body[at..head_end])
            .map_err(|_| "a part's headers are not text")?;
        let next_delim = format!("\r\n{delim}");
        let end = find(body, next_delim.as_bytes(), head_end + 4)
            .ok_or("a part without its closing boundary")?;
        let disposition = head
            .split("\r\n")
            .find(|l| {
                l.split(':')
                    .next()
                    .is_some_and(|k| k.trim().eq_ignore_ascii_case("content-disposition"))
            })
            .ok_or("a part without Content-Disposition")?;
        let name = param(disposition, "name").ok_or("a part without a name")?;
        if parts.len() == MAX_PARTS {
            return Err(format!("more than {MAX_PARTS} parts"));
        }
        parts.push(Part {
            name,
            file_name: param(disposition, "filename"),
            data: body[head_end + 4..end].to_vec(),
        });
        at = end + 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_browser_upload() {
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\ntok\r\n\
--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"icu.csv\"\r\n\
Content-Type: text/csv\r\n\r\nname,mac\r\npump,00:11:22:33:44:55\r\n\r\n--XyZ--\r\n";
        let b = boundary("multipart/form-data; boundary=XyZ").unwrap();
        let parts = parse(body, &b).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(
            (parts[0].name.as_str(), parts[0].data.as_slice()),
            ("csrf", &b"tok"[..])
        );
        assert_eq!(parts[1].file_name.as_deref(), Some("icu.csv"));
        assert_eq!(parts[1].data, b"name,mac\r\npump,00:11:22:33:44:55\r\n");
        assert!(boundary("application/x-www-form-urlencoded").is_none());
        for bad in [
            &b"nothing"[..],
            b"--XyZ\r\nno blank line",
            b"--XyZ\r\n\r\nno end",
        ] {
            assert!(parse(bad, "XyZ").is_err());
        }
    }
}
