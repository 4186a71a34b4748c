//! Lua 5.4 pattern matching in Rust, with a step budget.
//!
//! Lua's own matcher (lstrlib.c) runs in C, where the count hook never
//! fires: `("a"):rep(1e5):find(".-.-.-b")` would hold an engine thread for
//! hours. This is the same backtracking algorithm, byte for byte the same
//! results and error messages, but every step counts and `time_up` is asked
//! every few thousand steps. Differential tests against the C version live
//! in `lpattern_tests.rs`.

/// Lua's limit on captures per pattern.
pub const MAX_CAPTURES: usize = 32;
/// Lua's limit on nested pattern items (`MAXCCALLS`).
const MAX_DEPTH: usize = 200;
/// Steps between two budget checks.
const CHECK_EVERY: u32 = 4096;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PatternError {
    /// The message Lua gives for a malformed pattern or capture use.
    Bad(String),
    /// The run's time budget is spent.
    TimeUp,
}

type Res<T> = Result<T, PatternError>;

fn bad<T>(msg: impl Into<String>) -> Res<T> {
    Err(PatternError::Bad(msg.into()))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CapLen {
    Unfinished,
    Position,
    Len(usize),
}

/// One capture as found: a byte range of the subject or a position (1-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capture {
    Str(usize, usize),
    Pos(usize),
}

/// The matcher's state for one subject and pattern.
pub struct Matcher<'a> {
    src: &'a [u8],
    pat: &'a [u8],
    level: usize,
    capture: [(usize, CapLen); MAX_CAPTURES],
    depth: usize,
    steps: u32,
    time_up: &'a mut dyn FnMut() -> bool,
}

impl<'a> Matcher<'a> {
    /// `time_up` is asked every few thousand steps; `true` stops the match.
    pub fn new(src: &'a [u8], pat: &'a [u8], time_up: &'a mut dyn FnMut() -> bool) -> Self {
        Matcher {
            src,
            pat,
            level: 0,
            capture: [(0, CapLen::Unfinished); MAX_CAPTURES],
            depth: MAX_DEPTH,
            steps: 0,
            time_up,
        }
    }

    /// Clears captures before a match attempt at a new position.
    pub fn restart(&mut self) {
        self.level = 0;
        self.depth = MAX_DEPTH;
    }

    /// The pattern byte at `i`, or 0 past the end (C reads the terminator).
    fn p(&self, i: usize) -> u8 {
        self.pat.get(i).copied().unwrap_or(0)
    }

    fn tick(&mut self) -> Res<()> {
        self.steps = self.steps.wrapping_add(1);
        if self.steps.is_multiple_of(CHECK_EVERY) && (self.time_up)() {
            return Err(PatternError::TimeUp);
        }
        Ok(())
    }

    fn class_end(&self, mut p: usize) -> Res<usize> {
        let c = self.p(p);
        p += 1;
        match c {
            b'%' => {
                if p >= self.pat.len() {
                    return bad("malformed pattern (ends with '%')");
                }
                Ok(p + 1)
            }
            b'[' => {
                if self.p(p) == b'^' {
                    p += 1;
                }
                loop {
                    if p >= self.pat.len() {
                        return bad("malformed pattern (missing ']')");
                    }
                    let c = self.p(p);
                    p += 1;
                    if c == b'%' && p < self.pat.len() {
                        p += 1;
                    }
                    if self.p(p) == b']' {
                        break;
                    }
                }
                Ok(p + 1)
            }
            _ => Ok(p),
        }
    }

    fn single_match(&self, s: usize, p: usize, ep: usize) -> bool {
        let Some(&c) = self.src.get(s) else {
            return false;
        };
        match self.p(p) {
            b'.' => true,
            b'%' => match_class(c, self.p(p + 1)),
            b'[' => self.match_bracket_class(c, p, ep - 1),
            pc => pc == c,
        }
    }

    /// `p` at '[', `ec` at the closing ']'.
    fn match_bracket_class(&self, c: u8, mut p: usize, ec: usize) -> bool {
        let mut sig = true;
        if self.p(p + 1) == b'^' {
            sig = false;
            p += 1;
        }
        loop {
            p += 1;
            if p >= ec {
                break;
            }
            let pc = self.p(p);
            if pc == b'%' {
                p += 1;
                if match_class(c, self.p(p)) {
                    return sig;
                }
            } else if self.p(p + 1) == b'-' && p + 2 < ec {
                p += 2;
                if self.p(p - 2) <= c && c <= self.p(p) {
                    return sig;
                }
            } else if pc == c {
                return sig;
            }
        }
        !sig
    }

    fn match_balance(&mut self, s: usize, p: usize) -> Res<Option<usize>> {
        if p + 1 >= self.pat.len() {
            return bad("malformed pattern (missing arguments to '%b')");
        }
        if self.src.get(s) != Some(&self.p(p)) {
            return Ok(None);
        }
        let (b, e) = (self.p(p), self.p(p + 1));
        let mut cont = 1usize;
        let mut s = s;
        loop {
            s += 1;
            if s >= self.src.len() {
                return Ok(None);
            }
            self.tick()?;
            let c = self.src[s];
            if c == e {
                cont -= 1;
                if cont == 0 {
                    return Ok(Some(s + 1));
                }
            } else if c == b {
                cont += 1;
            }
        }
    }

    fn max_expand(&mut self, s: usize, p: usize, ep: usize) -> Res<Option<usize>> {
        let mut i = 0usize;
        while self.single_match(s + i, p, ep) {
            i += 1;
            self.tick()?;
        }
        loop {
            if let Some(r) = self.do_match(s + i, ep + 1)? {
                return Ok(Some(r));
            }
            if i == 0 {
                return Ok(None);
            }
            i -= 1;
        }
    }

    fn min_expand(&mut self, mut s: usize, p: usize, ep: usize) -> Res<Option<usize>> {
        loop {
            if let Some(r) = self.do_match(s, ep + 1)? {
                return Ok(Some(r));
            }
            if self.single_match(s, p, ep) {
                s += 1;
            } else {
                return Ok(None);
            }
        }
    }

    fn start_capture(&mut self, s: usize, p: usize, what: CapLen) -> Res<Option<usize>> {
        if self.level >= MAX_CAPTURES {
            return bad("too many captures");
        }
        self.capture[self.level] = (s, what);
        self.level += 1;
        let r = self.do_match(s, p)?;
        if r.is_none() {
            self.level -= 1;
        }
        Ok(r)
    }

    fn end_capture(&mut self, s: usize, p: usize) -> Res<Option<usize>> {
        let Some(l) = (0..self.level)
            .rev()
            .find(|&l| self.capture[l].1 == CapLen::Unfinished)
        else {
            return bad("invalid pattern capture");
        };
        self.capture[l].1 = CapLen::Len(s - self.capture[l].0);
        let r = self.do_match(s, p)?;
        if r.is_none() {
            self.capture[l].1 = CapLen::Unfinished;
        }
        Ok(r)
    }

    fn check_capture(&self, l: u8) -> Res<usize> {
        let l = l as i32 - b'1' as i32;
        if l < 0 || l as usize >= self.level || self.capture[l as usize].1 == CapLen::Unfinished {
            return bad(format!("invalid capture index %{}", l + 1));
        }
        Ok(l as usize)
    }

    fn match_capture(&mut self, s: usize, l: u8) -> Res<Option<usize>> {
        let l = self.check_capture(l)?;
        let (init, len) = self.capture[l];
        let len = match len {
            CapLen::Len(n) => n,
            // A position capture has no text: C compares its (negative)
            // length as a huge size, which never fits.
            _ => return Ok(None),
        };
        if self.src.len() - s >= len && self.src[init..init + len] == self.src[s..s + len] {
            Ok(Some(s + len))
        } else {
            Ok(None)
        }
    }

    /// Matches the pattern from `p` against the subject from `s`: the end of
    /// the match, or None.
    pub fn do_match(&mut self, mut s: usize, mut p: usize) -> Res<Option<usize>> {
        if self.depth == 0 {
            return bad("pattern too complex");
        }
        self.depth -= 1;
        let r = self.match_inner(&mut s, &mut p);
        self.depth += 1;
        r
    }

    fn match_inner(&mut self, s: &mut usize, p: &mut usize) -> Res<Option<usize>> {
        loop {
            self.tick()?;
            if *p >= self.pat.len() {
                return Ok(Some(*s));
            }
            match self.p(*p) {
                b'(' => {
                    return if self.p(*p + 1) == b')' {
                        self.start_capture(*s, *p + 2, CapLen::Position)
                    } else {
                        self.start_capture(*s, *p + 1, CapLen::Unfinished)
                    };
                }
                b')' => return self.end_capture(*s, *p + 1),
                b'$' if *p + 1 == self.pat.len() => {
                    return Ok((*s == self.src.len()).then_some(*s));
                }
                b'%' if self.p(*p + 1) == b'b' => match self.match_balance(*s, *p + 2)? {
                    Some(ns) => {
                        *s = ns;
                        *p += 4;
                        continue;
                    }
                    None => return Ok(None),
                },
                b'%' if self.p(*p + 1) == b'f' => {
                    *p += 2;
                    if self.p(*p) != b'[' {
                        return bad("missing '[' after '%f' in pattern");
                    }
                    let ep = self.class_end(*p)?;
                    let previous = if *s == 0 { 0 } else { self.src[*s - 1] };
                    let current = self.src.get(*s).copied().unwrap_or(0);
                    if !self.match_bracket_class(previous, *p, ep - 1)
                        && self.match_bracket_class(current, *p, ep - 1)
                    {
                        *p = ep;
                        continue;
                    }
                    return Ok(None);
                }
                b'%' if self.p(*p + 1).is_ascii_digit() => {
                    match self.match_capture(*s, self.p(*p + 1))? {
                        Some(ns) => {
                            *s = ns;
                            *p += 2;
                            continue;
                        }
                        None => return Ok(None),
                    }
                }
                _ => {
                    let ep = self.class_end(*p)?;
                    let suffix = self.p(ep);
                    if !self.single_match(*s, *p, ep) {
                        if matches!(suffix, b'*' | b'?' | b'-') {
                            *p = ep + 1;
                            continue;
                        }
                        return Ok(None);
                    }
                    match suffix {
                        b'?' => {
                            if let Some(r) = self.do_match(*s + 1, ep + 1)? {
                                return Ok(Some(r));
                            }
                            *p = ep + 1;
                            continue;
                        }
                        b'+' => return self.max_expand(*s + 1, *p, ep),
                        b'*' => return self.max_expand(*s, *p, ep),
                        b'-' => return self.min_expand(*s, *p, ep),
                        _ => {
                            *s += 1;
                            *p = ep;
                            continue;
                        }
                    }
                }
            }
        }
    }

    /// Capture `i` of a match `s..e` (the whole match when there are none).
    pub fn capture(&self, i: usize, s: usize, e: usize) -> Res<Capture> {
        if i >= self.level {
            if i != 0 {
                return bad(format!("invalid capture index %{}", i + 1));
            }
            return Ok(Capture::Str(s, e));
        }
        let (init, len) = self.capture[i];
        match len {
            CapLen::Unfinished => bad("unfinished capture"),
            CapLen::Position => Ok(Capture::Pos(init + 1)),
            CapLen::Len(n) => Ok(Capture::Str(init, init + n)),
        }
    }

    /// All captures of a match, as `string.match` returns them; `whole`
    /// says whether a pattern without captures yields the whole match.
    pub fn captures(&self, s: usize, e: usize, whole: bool) -> Res<Vec<Capture>> {
        let n = if self.level == 0 && whole {
            1
        } else {
            self.level
        };
        (0..n).map(|i| self.capture(i, s, e)).collect()
    }
}

/// C-locale character classes, as Lua's `match_class`.
fn match_class(c: u8, cl: u8) -> bool {
    let res = match cl.to_ascii_lowercase() {
        b'a' => c.is_ascii_alphabetic(),
        b'c' => c.is_ascii_control(),
        b'd' => c.is_ascii_digit(),
        b'g' => c.is_ascii_graphic(),
        b'l' => c.is_ascii_lowercase(),
        b'p' => c.is_ascii_punctuation(),
        b's' => matches!(c, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r'),
        b'u' => c.is_ascii_uppercase(),
        b'w' => c.is_ascii_alphanumeric(),
        b'x' => c.is_ascii_hexdigit(),
        // Deprecated in 5.2, still matched by 5.4.
        b'z' => c == 0,
        _ => return cl == c,
    };
    if cl.is_ascii_uppercase() { !res } else { res }
}

/// Whether a pattern has none of the characters that make it a pattern.
pub fn no_specials(p: &[u8]) -> bool {
    !p.iter().any(|c| b"^$*+?.([%-".contains(c))
}

/// `posrelatI`: a 1-based, possibly negative start position, as an offset.
pub fn start_offset(pos: i64, len: usize) -> usize {
    let pos = if pos > 0 {
        pos as u64
    } else if pos == 0 || pos < -(len as i64) {
        1
    } else {
        (len as i64 + pos + 1) as u64
    };
    (pos - 1).min(usize::MAX as u64) as usize
}

/// A plain substring search in linear time (Lua's `lmemfind` is quadratic).
pub fn find_plain(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    memchr::memmem::find(hay, needle)
}

/// One match of `pat` in `src` from offset `init` for `find`/`match`:
/// the start, the end and the matcher holding the captures.
pub fn search<'a>(
    src: &'a [u8],
    pat: &'a [u8],
    init: usize,
    time_up: &'a mut dyn FnMut() -> bool,
) -> Res<Option<(usize, usize, Matcher<'a>)>> {
    let (anchor, pat) = match pat.first() {
        Some(b'^') => (true, &pat[1..]),
        _ => (false, pat),
    };
    let mut m = Matcher::new(src, pat, time_up);
    let mut s1 = init;
    loop {
        m.restart();
        if let Some(e) = m.do_match(s1, 0)? {
            return Ok(Some((s1, e, m)));
        }
        if anchor || s1 >= src.len() {
            return Ok(None);
        }
        s1 += 1;
    }
}

#[cfg(test)]
#[path = "lpattern_tests.rs"]
mod tests;
