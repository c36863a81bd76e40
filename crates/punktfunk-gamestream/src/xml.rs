//! XML replies of nvhttp: one `<root>` element carrying `status_code` (and on errors
//! `status_message`), always sent with HTTP status 200 because clients read the status from
//! the XML and some treat an HTTP error as a transport failure.

/// Builds `<?xml …?><root status_code="…">children</root>`.
#[derive(Debug, Clone)]
pub struct Reply {
    status: u16,
    message: Option<String>,
    query: Option<String>,
    body: String,
}

impl Reply {
    /// A success (`status_code="200"`).
    pub fn ok() -> Reply {
        Reply::status(200)
    }

    /// Any status code, no message.
    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            message: None,
            query: None,
            body: String::new(),
        }
    }

    /// An error with a message.
    pub fn error(status: u16, message: &str) -> Reply {
        Reply {
            message: Some(message.to_string()),
            ..Reply::status(status)
        }
    }

    /// The 401 every HTTPS request from an unknown or revoked certificate gets.
    pub fn unauthorized(path: &str) -> Reply {
        Reply {
            query: Some(path.to_string()),
            ..Reply::error(
                401,
                "The client is not authorized. Certificate verification failed.",
            )
        }
    }

    /// Adds `<name>value</name>` (value escaped).
    pub fn field(mut self, name: &str, value: impl std::fmt::Display) -> Reply {
        self.body.push('<');
        self.body.push_str(name);
        self.body.push('>');
        self.body.push_str(&escape(&value.to_string()));
        self.body.push_str("</");
        self.body.push_str(name);
        self.body.push('>');
        self
    }

    /// Adds an already-built element (e.g. one `<App>`).
    pub fn raw(mut self, xml: &str) -> Reply {
        self.body.push_str(xml);
        self
    }

    /// The status code.
    pub fn code(&self) -> u16 {
        self.status
    }

    /// The document.
    pub fn render(&self) -> String {
        let mut s =
            String::from("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<root status_code=\"");
        s.push_str(&self.status.to_string());
        s.push('"');
        if let Some(q) = &self.query {
            s.push_str(" query=\"");
            s.push_str(&escape(q));
            s.push('"');
        }
        if let Some(m) = &self.message {
            s.push_str(" status_message=\"");
            s.push_str(&escape(m));
            s.push('"');
        }
        if self.body.is_empty() {
            s.push_str("/>");
        } else {
            s.push('>');
            s.push_str(&self.body);
            s.push_str("</root>");
        }
        s
    }
}

/// One `<App>` element of `/applist`.
pub fn app(id: u32, title: &str, hdr: bool) -> String {
    format!(
        "<App><IsHdrSupported>{}</IsHdrSupported><AppTitle>{}</AppTitle><ID>{id}</ID></App>",
        u8::from(hdr),
        escape(title)
    )
}

/// Escapes text for element content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => {}
            c => out.push(c),
        }
    }
    out
}

/// Reads the text of the first `<name>` element of `xml` (for tests and the test client; the
/// host never parses XML).
pub fn text_of<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{name}>"))? + start;
    Some(&xml[start..end])
}

/// Reads the `status_code` attribute of the root.
pub fn status_of(xml: &str) -> Option<u16> {
    let i = xml.find("status_code=\"")? + "status_code=\"".len();
    let j = xml[i..].find('"')? + i;
    xml[i..j].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_success_errors_and_401() {
        let r = Reply::ok()
            .field("paired", 1)
            .field("plaincert", "AB")
            .render();
        assert_eq!(
            r,
            "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<root status_code=\"200\"><paired>1</paired><plaincert>AB</plaincert></root>"
        );
        let e = Reply::error(400, "bad \"salt\" <x>")
            .field("paired", 0)
            .render();
        assert!(e.contains("status_code=\"400\" status_message=\"bad &quot;salt&quot; &lt;x&gt;\""));
        assert_eq!(status_of(&e), Some(400));
        assert_eq!(text_of(&e, "paired"), Some("0"));
        let u = Reply::unauthorized("/applist").render();
        assert!(u.ends_with(
            "<root status_code=\"401\" query=\"/applist\" status_message=\"The client is not authorized. Certificate verification failed.\"/>"
        ));
        assert_eq!(
            app(7, "Tom & Jerry", false),
            "<App><IsHdrSupported>0</IsHdrSupported><AppTitle>Tom &amp; Jerry</AppTitle><ID>7</ID></App>"
        );
    }
}
