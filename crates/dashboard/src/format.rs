//! How values are shown to a person: URLs with their secrets masked, times
//! with their time zone, JSON bodies indented. Pure functions.

/// What stands for a hidden value.
pub const MASK: &str = "•••";

/// A URL as the dashboard shows it: every query-string value, any password
/// and any fragment replaced by [`MASK`], since receivers often put a token
/// there (the real-time seed recommends it). Keys stay readable.
pub fn mask_url(raw: &str) -> String {
    let (rest, fragment) = match raw.split_once('#') {
        Some((rest, _)) => (rest, Some(MASK)),
        None => (raw, None),
    };
    let (base, query) = match rest.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (rest, None),
    };
    let mut out = mask_userinfo(base);
    if let Some(query) = query {
        out.push('?');
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((key, _)) => format!("{key}={MASK}"),
                None if pair.is_empty() => String::new(),
                None => MASK.to_owned(),
            })
            .collect();
        out.push_str(&pairs.join("&"));
    }
    if let Some(fragment) = fragment {
        out.push('#');
        out.push_str(fragment);
    }
    out
}

fn mask_userinfo(base: &str) -> String {
    let Some(scheme_end) = base.find("://") else {
        return base.to_owned();
    };
    let authority_start = scheme_end + 3;
    let authority_end = base[authority_start..]
        .find('/')
        .map_or(base.len(), |i| authority_start + i);
    match base[authority_start..authority_end].rfind('@') {
        Some(at) => format!(
            "{}{MASK}@{}",
            &base[..authority_start],
            &base[authority_start + at + 1..]
        ),
        None => base.to_owned(),
    }
}

/// Unix milliseconds as `2025-10-10 10:23:27 UTC`: the page's script shows
/// it in the viewer's own time zone, and this is what shows without script.
pub fn utc_time(ms: i64) -> String {
    let (date, (h, m, s), _) = civil(ms);
    format!("{date} {h:02}:{m:02}:{s:02} UTC")
}

/// Unix milliseconds as RFC 3339 (`2025-10-10T10:23:27.000Z`), for `<time datetime>`.
pub fn iso_time(ms: i64) -> String {
    let (date, (h, m, s), millis) = civil(ms);
    format!("{date}T{h:02}:{m:02}:{s:02}.{millis:03}Z")
}

/// Unix milliseconds as the value of a `datetime-local` input, in UTC
/// (`2025-10-10T10:23`).
pub fn utc_input(ms: i64) -> String {
    let (date, (h, m, _), _) = civil(ms);
    format!("{date}T{h:02}:{m:02}")
}

/// A `datetime-local` value (`2025-10-10T10:23`, seconds optional) read as
/// UTC, in Unix milliseconds; `None` if it is not one.
pub fn parse_utc_input(raw: &str) -> Option<i64> {
    let (date, time) = raw.trim().split_once('T')?;
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (year, month, day) = (d.next()??, d.next()??, d.next()??);
    let mut t = time.splitn(3, ':');
    let hour: i64 = t.next()?.parse().ok()?;
    let minute: i64 = t.next()?.parse().ok()?;
    let second: f64 = t.next().map_or(Some(0.0), |s| s.parse().ok())?;
    let valid = (1..=9999).contains(&year)
        && (1..=12).contains(&month)
        && (1..=31).contains(&day)
        && (0..24).contains(&hour)
        && (0..60).contains(&minute)
        && (0.0..60.0).contains(&second);
    if !valid || date.len() != 10 {
        return None;
    }
    // Howard Hinnant's `days_from_civil`.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let ms = ((days * 86_400 + hour * 3_600 + minute * 60) * 1000) + (second * 1000.0) as i64;
    // A day that does not exist (31 April) comes back as another date.
    (utc_input(ms)[..10] == date[..10]).then_some(ms)
}

/// The UTC calendar date, time of day and milliseconds of a Unix time
/// (Howard Hinnant's `civil_from_days`).
fn civil(ms: i64) -> (String, (i64, i64, i64), i64) {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let of_day = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        format!("{year:04}-{month:02}-{day:02}"),
        (of_day / 3600, of_day % 3600 / 60, of_day % 60),
        millis,
    )
}

/// JSON nested deeper than this is shown as sent, not indented.
pub const PRETTY_MAX_DEPTH: usize = herald_domain::json::MAX_DEPTH;

/// Indenting that would make more text than this shows the body as sent.
/// Indentation grows with depth, so a stored 64 KiB body of nested brackets
/// became a 2 GB page before this bound.
pub const PRETTY_MAX_BYTES: usize = 512 * 1024;

/// A body for reading: JSON indented by two spaces with its keys in the order
/// sent (re-indenting the text rather than parsing into a map, which would
/// sort them); anything else, and JSON past [`PRETTY_MAX_DEPTH`] or whose
/// indented form would pass [`PRETTY_MAX_BYTES`], as text.
pub fn pretty_body(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    if serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_err() {
        return text.into_owned();
    }
    indent_json(&text, PRETTY_MAX_DEPTH, PRETTY_MAX_BYTES).unwrap_or_else(|| text.into_owned())
}

/// `text` indented, or `None` once it opens more than `max_depth` arrays
/// and objects inside each other (empty ones count, as in
/// `herald_domain::json::nests_deeper_than`) or the result would pass
/// `max_bytes`.
fn indent_json(text: &str, max_depth: usize, max_bytes: usize) -> Option<String> {
    let mut out = String::with_capacity(text.len().saturating_mul(2).min(max_bytes));
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    let mut chars = text.chars().peekable();
    let newline = |out: &mut String, depth: usize| {
        out.push('\n');
        out.push_str(&"  ".repeat(depth));
    };
    while let Some(c) = chars.next() {
        if out.len() > max_bytes {
            return None;
        }
        if in_string {
            out.push(c);
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => {
                in_string = true;
                out.push(c);
            }
            '{' | '[' => {
                // An empty container opens a level too, one past `depth`.
                if depth >= max_depth {
                    return None;
                }
                out.push(c);
                while chars.peek().is_some_and(|n| n.is_whitespace()) {
                    chars.next();
                }
                if chars.peek().is_some_and(|&n| n == '}' || n == ']') {
                    if let Some(close) = chars.next() {
                        out.push(close);
                    }
                } else {
                    depth += 1;
                    newline(&mut out, depth);
                }
            }
            '}' | ']' => {
                depth = depth.saturating_sub(1);
                newline(&mut out, depth);
                out.push(c);
            }
            ',' => {
                out.push(c);
                newline(&mut out, depth);
            }
            ':' => out.push_str(": "),
            c if c.is_whitespace() => {}
            c => out.push(c),
        }
    }
    (out.len() <= max_bytes).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datetime_inputs_read_as_utc_and_round_trip() {
        let ms = 1_765_198_584_000; // 2025-12-08T12:56:24Z
        assert_eq!(utc_input(ms), "2025-12-08T12:56");
        assert_eq!(parse_utc_input("2025-12-08T12:56"), Some(ms - 24_000));
        assert_eq!(parse_utc_input("2025-12-08T12:56:24"), Some(ms));
        assert_eq!(parse_utc_input("1970-01-01T00:00"), Some(0));
        assert_eq!(
            parse_utc_input("2024-02-29T00:00").map(utc_input).as_deref(),
            Some("2024-02-29T00:00")
        );
        for bad in [
            "",
            "2025-12-08",
            "2025-13-01T00:00",
            "2025-04-31T00:00",
            "2025-12-08T24:00",
            "x-y-zT1:2",
            "2025-1-8T00:00",
        ] {
            assert_eq!(parse_utc_input(bad), None, "{bad}");
        }
    }

    #[test]
    fn query_values_passwords_and_fragments_are_masked() {
        assert_eq!(
            mask_url("https://my-app.com/api/webhook/recall?token=abc&x=1"),
            "https://my-app.com/api/webhook/recall?token=•••&x=•••"
        );
        assert_eq!(mask_url("https://h.example.com/hook"), "https://h.example.com/hook");
        assert_eq!(
            mask_url("https://h.example.com/h?secret"),
            "https://h.example.com/h?•••"
        );
        assert_eq!(
            mask_url("https://user:pw@h.example.com/h#frag"),
            "https://•••@h.example.com/h#•••"
        );
        assert_eq!(
            mask_url("https://h.example.com/a@b?k=v"),
            "https://h.example.com/a@b?k=•••"
        );
    }

    #[test]
    fn times_are_shown_in_utc() {
        assert_eq!(utc_time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc_time(1_765_198_584_697), "2025-12-08 12:56:24 UTC");
        assert_eq!(iso_time(1_765_198_584_697), "2025-12-08T12:56:24.697Z");
        assert_eq!(utc_time(951_782_400_000), "2000-02-29 00:00:00 UTC");
    }

    #[test]
    fn json_is_indented_in_the_order_sent() {
        let body = br#"{"z":1,"a":{"b":[1,2],"e":{}},"s":"x,{y}: \"q\""}"#;
        assert_eq!(
            pretty_body(body),
            "{\n  \"z\": 1,\n  \"a\": {\n    \"b\": [\n      1,\n      2\n    ],\n    \"e\": {}\n  },\n  \"s\": \"x,{y}: \\\"q\\\"\"\n}"
        );
        assert_eq!(pretty_body(b"not json <b>"), "not json <b>");
    }

    #[test]
    fn deep_or_huge_json_is_shown_as_sent() {
        let deep = format!("{}{}", "[".repeat(32_000), "]".repeat(32_000));
        assert_eq!(pretty_body(deep.as_bytes()), deep);
        let just_deep_enough = format!("{}{}", "[".repeat(PRETTY_MAX_DEPTH), "]".repeat(PRETTY_MAX_DEPTH));
        assert!(pretty_body(just_deep_enough.as_bytes()).contains("\n  ["));
        let one_too_deep = format!(
            "{}{}",
            "[".repeat(PRETTY_MAX_DEPTH + 1),
            "]".repeat(PRETTY_MAX_DEPTH + 1)
        );
        assert_eq!(pretty_body(one_too_deep.as_bytes()), one_too_deep);
        // 100 levels, then 20,000 short items: every item a line indented
        // 200 spaces, about 4 MB indented.
        let wide = format!("{}{}{}", "[".repeat(100), vec!["1"; 20_000].join(","), "]".repeat(100));
        let shown = pretty_body(wide.as_bytes());
        assert_eq!(shown, wide);
        assert!(shown.len() <= PRETTY_MAX_BYTES);
    }
}
