//! Maps a request target to what the origin does with it. Pure string work: a path that
//! matches nothing (or a malformed number) is [`Route::Fixed`], the default body; never
//! an error, never a panic.

/// What a request asks the origin to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `GET /` and anything unknown: the configured default body.
    Fixed,
    /// `/size/N`: N pattern bytes with `Content-Length`.
    Size(u64),
    /// `/chunked/N`: N pattern bytes, chunked.
    Chunked(u64),
    /// `/echo`: the request body back, streamed.
    Echo,
    /// `/headers`: the request head exactly as received.
    Headers,
    /// `/delay/MS`: the default body after MS milliseconds.
    Delay(u64),
    /// `/status/CODE` with CODE in 200..=599.
    Status(u16),
    /// `/status/CODE` with anything else: answered 400, connection kept.
    BadStatus,
    /// `/close`: default body with `Connection: close`, then close.
    Close,
    /// `/reset`: close with RST, no answer.
    Reset,
    /// `/garbage`: `garbage\r\n\r\n`, then close.
    Garbage,
    /// `/stats`: the counters as JSON.
    Stats,
    /// `/stats/reset`: zero the counters.
    StatsReset,
}

/// Routes a request target (origin-form `/p?q`, or absolute-form `http://h/p`).
pub fn route(target: &str) -> Route {
    let path = strip_authority(target);
    let path = path.split(['?', '#']).next().unwrap_or("");
    match path {
        "/echo" => return Route::Echo,
        "/headers" => return Route::Headers,
        "/close" => return Route::Close,
        "/reset" => return Route::Reset,
        "/garbage" => return Route::Garbage,
        "/stats" => return Route::Stats,
        "/stats/reset" => return Route::StatsReset,
        _ => {}
    }
    if let Some(n) = number_after(path, "/size/") {
        return Route::Size(n);
    }
    if let Some(n) = number_after(path, "/chunked/") {
        return Route::Chunked(n);
    }
    if let Some(n) = number_after(path, "/delay/") {
        return Route::Delay(n);
    }
    if let Some(rest) = path.strip_prefix("/status/") {
        return match rest.parse::<u16>() {
            Ok(code) if (200..=599).contains(&code) => Route::Status(code),
            _ => Route::BadStatus,
        };
    }
    Route::Fixed
}

fn number_after(path: &str, prefix: &str) -> Option<u64> {
    let digits = path.strip_prefix(prefix)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn strip_authority(target: &str) -> &str {
    let rest = match target
        .strip_prefix("http://")
        .or_else(|| target.strip_prefix("https://"))
    {
        Some(rest) => rest,
        None => return target,
    };
    match rest.find('/') {
        Some(i) => &rest[i..],
        None => "/",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(route("/"), Route::Fixed);
        assert_eq!(route("/nope"), Route::Fixed);
        assert_eq!(route("/size/10"), Route::Size(10));
        assert_eq!(route("/size/10?x=1"), Route::Size(10));
        assert_eq!(route("/size/x"), Route::Fixed);
        assert_eq!(route("/size/+1"), Route::Fixed);
        assert_eq!(route("/size/99999999999999999999999"), Route::Fixed);
        assert_eq!(route("/chunked/0"), Route::Chunked(0));
        assert_eq!(route("/delay/5"), Route::Delay(5));
        assert_eq!(route("/status/503"), Route::Status(503));
        assert_eq!(route("/status/100"), Route::BadStatus);
        assert_eq!(route("/status/abc"), Route::BadStatus);
        assert_eq!(route("/echo"), Route::Echo);
        assert_eq!(route("http://h:1/echo?a"), Route::Echo);
        assert_eq!(route("http://h:1"), Route::Fixed);
        assert_eq!(route("/stats/reset"), Route::StatsReset);
        assert_eq!(route("*"), Route::Fixed);
    }
}
