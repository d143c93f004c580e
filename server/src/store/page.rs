//! Page sizes and opaque page tokens for every `List*` RPC.
//!
//! A token is the sort key of the last row of the previous page, base64url-encoded
//! with a version tag, so clients treat it as opaque and the order stays stable.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};

use crate::error::{Error, Result};

pub const DEFAULT_PAGE_SIZE: u64 = 50;
pub const MAX_PAGE_SIZE: u64 = 1000;

/// A validated page request.
#[derive(Clone, Debug)]
pub struct Page {
    pub size: u64,
    /// The sort key after which this page starts.
    pub after: Option<String>,
}

impl Page {
    pub fn parse(page_size: u32, page_token: &str) -> Result<Page> {
        Page::parse_with_default(page_size, page_token, DEFAULT_PAGE_SIZE)
    }

    pub fn parse_with_default(page_size: u32, page_token: &str, default: u64) -> Result<Page> {
        let size = match u64::from(page_size) {
            0 => default,
            n if n > MAX_PAGE_SIZE => {
                return Err(Error::invalid(
                    "page_size",
                    format!("must be at most {MAX_PAGE_SIZE}"),
                ));
            }
            n => n,
        };
        let after = if page_token.is_empty() {
            None
        } else {
            Some(decode(page_token).ok_or_else(|| {
                Error::invalid("page_token", "is not a token returned by this server")
            })?)
        };
        Ok(Page { size, after })
    }

    /// The sort key as an integer (for listings keyed by sequence).
    pub fn after_i64(&self) -> Result<Option<i64>> {
        self.after
            .as_deref()
            .map(|s| {
                s.parse::<i64>().map_err(|_| {
                    Error::invalid("page_token", "is not a token returned by this server")
                })
            })
            .transpose()
    }

    /// Splits `rows` (fetched with `size + 1`) into the page and the next token.
    pub fn finish<T>(&self, mut rows: Vec<T>, key: impl Fn(&T) -> String) -> (Vec<T>, String) {
        if rows.len() as u64 > self.size {
            rows.truncate(self.size as usize);
            let token = rows.last().map(|r| encode(&key(r))).unwrap_or_default();
            (rows, token)
        } else {
            (rows, String::new())
        }
    }
}

fn encode(key: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("p1:{key}"))
}

fn decode(token: &str) -> Option<String> {
    let bytes = URL_SAFE_NO_PAD.decode(token).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    text.strip_prefix("p1:").map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_pages_split() {
        let page = Page::parse(2, "").unwrap();
        let (rows, token) = page.finish(vec![1, 2, 3], |r| r.to_string());
        assert_eq!(rows, vec![1, 2]);
        let next = Page::parse(2, &token).unwrap();
        assert_eq!(next.after_i64().unwrap(), Some(2));
        let (rows, token) = next.finish(vec![3], |r| r.to_string());
        assert_eq!((rows, token.as_str()), (vec![3], ""));
        assert!(Page::parse(0, "garbage!").is_err());
        assert!(Page::parse(5000, "").is_err());
        assert_eq!(Page::parse(0, "").unwrap().size, DEFAULT_PAGE_SIZE);
    }
}
