//! nvhttp requests: the HTTP/1.1 request head and its query string.
//!
//! Clients send `GET /endpoint?name=value&…` and nothing else; the pairing request carries the
//! hex of the client's certificate, so a request line reaches 5 KB. Everything here is
//! bounded: a head longer than [`MAX_HEAD`] or with more than [`MAX_HEADERS`] headers, a
//! target longer than [`MAX_TARGET`] or with more than [`MAX_PARAMS`] parameters is refused
//! before anything is kept.

use thiserror::Error;

/// Longest request head accepted (request line and headers), bytes.
pub const MAX_HEAD: usize = 16 * 1024;
/// Most headers accepted.
pub const MAX_HEADERS: usize = 32;
/// Longest request target accepted, bytes.
pub const MAX_TARGET: usize = 12 * 1024;
/// Most query parameters accepted.
pub const MAX_PARAMS: usize = 48;

/// Why a request was refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum RequestError {
    /// Not HTTP/1.x.
    #[error("malformed HTTP request: {0}")]
    Malformed(String),
    /// Over one of the limits.
    #[error("request too large: {0}")]
    TooLarge(&'static str),
    /// A method other than GET.
    #[error("method {0} not allowed")]
    Method(String),
    /// The query string is not valid percent-encoded UTF-8.
    #[error("bad query string: {0}")]
    Query(&'static str),
}

/// A parsed request: the path and its query parameters, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The path, e.g. `/serverinfo`.
    pub path: String,
    params: Vec<(String, String)>,
}

impl Request {
    /// Parses a request target, `path[?query]`.
    pub fn from_target(target: &str) -> Result<Request, RequestError> {
        if target.len() > MAX_TARGET {
            return Err(RequestError::TooLarge("request target"));
        }
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let path = decode_component(path)?;
        if !path.starts_with('/') {
            return Err(RequestError::Malformed(
                "target is not an absolute path".into(),
            ));
        }
        let mut params = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            if params.len() == MAX_PARAMS {
                return Err(RequestError::TooLarge("query parameters"));
            }
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            params.push((decode_component(k)?, decode_component(v)?));
        }
        Ok(Request { path, params })
    }

    /// The first value of parameter `name` (names are case-sensitive, as clients send them).
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// All parameters, in order.
    pub fn params(&self) -> &[(String, String)] {
        &self.params
    }
}

/// Parses a request head from `buf`. `Ok(None)`: incomplete, read more (unless `buf` already
/// holds [`MAX_HEAD`] bytes, which is an error). `Ok(Some((request, head_len)))` otherwise.
pub fn parse_head(buf: &[u8]) -> Result<Option<(Request, usize)>, RequestError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => {
            if n > MAX_HEAD {
                return Err(RequestError::TooLarge("request head"));
            }
            let method = req.method.unwrap_or_default();
            if method != "GET" {
                return Err(RequestError::Method(method.chars().take(16).collect()));
            }
            let target = req.path.unwrap_or_default();
            Ok(Some((Request::from_target(target)?, n)))
        }
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => {
            Err(RequestError::TooLarge("request head"))
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Err(httparse::Error::TooManyHeaders) => Err(RequestError::TooLarge("headers")),
        Err(e) => Err(RequestError::Malformed(e.to_string())),
    }
}

/// Percent-decoding (`%41` → `A`, `+` → space) into UTF-8.
fn decode_component(s: &str) -> Result<String, RequestError> {
    if !s.contains(['%', '+']) {
        return Ok(s.to_string());
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let Some(&[hi, lo]) = b.get(i + 1..i + 3) else {
                    return Err(RequestError::Query("truncated escape"));
                };
                // Two hex digits exactly: `from_str_radix` alone would also take a sign
                // (`%+f`, `%-0`).
                let digit = |c: u8| {
                    char::from(c)
                        .to_digit(16)
                        .ok_or(RequestError::Query("bad escape"))
                };
                out.push((digit(hi)? << 4 | digit(lo)?) as u8);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| RequestError::Query("not UTF-8"))
}

/// An HTTP/1.1 response with a body, closing the connection after it (as GameStream hosts do).
pub fn response(status: u16, content_type: &str, body: &[u8]) -> Vec<u8> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Payload Too Large",
        _ => "Error",
    };
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_pairing_request() {
        let cert = "2D".repeat(2500);
        let head = format!(
            "GET /pair?uniqueid=0123456789ABCDEF&uuid=abc&devicename=roth&updateState=1&phrase=getservercert&salt=00112233445566778899AABBCCDDEEFF&clientcert={cert} HTTP/1.1\r\nHost: 127.0.0.1:47989\r\nUser-Agent: curl\r\n\r\n"
        );
        let (r, n) = parse_head(head.as_bytes()).unwrap().unwrap();
        assert_eq!(n, head.len());
        assert_eq!(r.path, "/pair");
        assert_eq!(r.param("phrase"), Some("getservercert"));
        assert_eq!(r.param("clientcert").unwrap().len(), 5000);
        assert_eq!(r.param("missing"), None);
    }

    #[test]
    fn incomplete_heads_ask_for_more_and_limits_hold() {
        assert_eq!(
            parse_head(b"GET /serverinfo HTTP/1.1\r\nHost: x\r\n"),
            Ok(None)
        );
        let big = vec![b'a'; MAX_HEAD];
        assert!(parse_head(&big).is_err());
        let mut long = b"GET /x?".to_vec();
        long.extend(std::iter::repeat_n(b'a', MAX_HEAD));
        assert!(matches!(parse_head(&long), Err(RequestError::TooLarge(_))));
        let many: String = (0..=MAX_PARAMS).map(|i| format!("k{i}=v&")).collect();
        assert_eq!(
            Request::from_target(&format!("/x?{many}")),
            Err(RequestError::TooLarge("query parameters"))
        );
        assert!(matches!(
            parse_head(b"POST /pair HTTP/1.1\r\n\r\n"),
            Err(RequestError::Method(_))
        ));
    }

    #[test]
    fn a_percent_escape_with_a_sign_is_refused() {
        for bad in ["/x?a=%+f", "/x?a=%-0", "/x?a=%+0"] {
            assert_eq!(
                Request::from_target(bad),
                Err(RequestError::Query("bad escape")),
                "{bad}"
            );
        }
        assert_eq!(
            Request::from_target("/x?a=%2B%2d").unwrap().param("a"),
            Some("+-")
        );
    }

    #[test]
    fn percent_decoding() {
        let r = Request::from_target("/launch?mode=1920x1080x60&name=a%20b+c&e=&flag").unwrap();
        assert_eq!(r.param("name"), Some("a b c"));
        assert_eq!(r.param("e"), Some(""));
        assert_eq!(r.param("flag"), Some(""));
        for bad in ["/x?a=%4", "/x?a=%zz", "/x?a=%ff", "x", "/x?a=%", "/x?a=%é"] {
            assert!(Request::from_target(bad).is_err(), "{bad}");
        }
    }
}
