//! znode paths: the reference's validation rules (`PathUtils.validatePath`)
//! and the parent/child split every operation needs.

/// Why a path is not a valid znode path. The server answers BadArguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidPath(pub &'static str);

/// `PathUtils.validatePath`: absolute, no empty segment, no trailing slash,
/// no `.`/`..` segment, no NUL or other characters the reference refuses.
pub fn validate(path: &str) -> Result<(), InvalidPath> {
    if path.is_empty() {
        return Err(InvalidPath("path must not be empty"));
    }
    if !path.starts_with('/') {
        return Err(InvalidPath("path must start with / character"));
    }
    if path.len() == 1 {
        return Ok(());
    }
    if path.ends_with('/') {
        return Err(InvalidPath("path must not end with / character"));
    }
    // The two characters before `c` and the one after it, without
    // collecting the path's characters (an allocation per request).
    let (mut before, mut last) = ('/', '/');
    let mut rest = path[1..].chars().peekable();
    while let Some(c) = rest.next() {
        let after = rest.peek().copied();
        if c == '\0' {
            return Err(InvalidPath("null character not allowed"));
        } else if c == '/' && last == '/' {
            return Err(InvalidPath("empty node name specified"));
        } else if c == '.' && last == '.' {
            if before == '/' && (after.is_none() || after == Some('/')) {
                return Err(InvalidPath("relative paths not allowed"));
            }
        } else if c == '.' {
            if last == '/' && (after.is_none() || after == Some('/')) {
                return Err(InvalidPath("relative paths not allowed"));
            }
        } else if (c > '\u{0000}' && c <= '\u{001f}')
            || ('\u{007f}'..='\u{009F}').contains(&c)
            || ('\u{e000}'..='\u{f8ff}').contains(&c) // surrogates cannot occur in a Rust string
            || ('\u{fff0}'..='\u{ffff}').contains(&c)
        {
            return Err(InvalidPath("invalid character"));
        }
        before = last;
        last = c;
    }
    Ok(())
}

/// Splits `/a/b` into (`/a`, `b`) and `/a` into (`/`, `a`). `None` for the root
/// or a string with no slash at all.
pub fn split(path: &str) -> Option<(&str, &str)> {
    let i = path.rfind('/')?;
    if path.len() == 1 {
        return None;
    }
    let parent = if i == 0 { "/" } else { &path[..i] };
    Some((parent, &path[i + 1..]))
}

/// Joins a parent path and a child name.
pub fn join(parent: &str, name: &str) -> String {
    let mut s = String::with_capacity(parent.len() + 1 + name.len());
    s.push_str(parent);
    if parent != "/" {
        s.push('/');
    }
    s.push_str(name);
    s
}

/// True when `path` is `ancestor` or below it.
pub fn is_at_or_below(path: &str, ancestor: &str) -> bool {
    ancestor == "/"
        || path == ancestor
        || (path.starts_with(ancestor) && path.as_bytes().get(ancestor.len()) == Some(&b'/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_matches_the_reference_rules() {
        for ok in [
            "/",
            "/a",
            "/a/b",
            "/a.b",
            "/..a",
            "/a/.b",
            "/zookeeper/quota",
            "/a..",
            "/a/...",
            "/a/b..",
            "/a/.b.",
            "/\u{e9}t\u{e9}/..x",
        ] {
            assert_eq!(validate(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "a",
            "/a/",
            "//",
            "/a//b",
            "/a/./b",
            "/a/..",
            "/.",
            "/a\0b",
            "/a\u{1}",
            "/..",
            "/a/../b",
            "/\u{e9}/..",
            "/a/\u{f8ff}",
        ] {
            assert!(validate(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn split_and_join() {
        assert_eq!(split("/a"), Some(("/", "a")));
        assert_eq!(split("/a/b"), Some(("/a", "b")));
        assert_eq!(split("/"), None);
        assert_eq!(join("/", "a"), "/a");
        assert_eq!(join("/a", "b"), "/a/b");
        assert!(is_at_or_below("/a/b", "/a"));
        assert!(!is_at_or_below("/ab", "/a"));
    }
}
