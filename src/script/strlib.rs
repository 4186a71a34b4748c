//! The library functions that replace Lua's C ones where those could run
//! unbounded outside the count hook: `string.find/match/gmatch/gsub` on the
//! budgeted matcher, `string.rep` with its size checked up front, and
//! `table.move` and `os.date` bounded (see `sandbox.rs` for the latter two).
//! They are installed in the state's global `string` table, which is also
//! what method calls on strings (`s:find(...)`) reach.

use std::cell::RefCell;
use std::rc::Rc;

use mlua::{Lua, MultiValue, Table, Value};

use super::budget;
use super::lpattern::{self, Capture, Matcher, PatternError};
use super::prelude::{self, FResult, Fail};

fn time_up() -> bool {
    budget::time_up()
}

fn pattern_error(e: PatternError) -> Fail {
    match e {
        PatternError::Bad(msg) => Fail::Msg(msg),
        PatternError::TimeUp => Fail::Msg(budget::message()),
    }
}

fn opt_int(lua: &Lua, v: Option<Value>, what: &str, default: i64) -> FResult<i64> {
    match v {
        None | Some(Value::Nil) => Ok(default),
        Some(v) => lua.coerce_integer(v.clone())?.ok_or_else(|| {
            Fail::Msg(format!(
                "bad argument {what} (number expected, got {})",
                v.type_name()
            ))
        }),
    }
}

/// A string argument, as `luaL_checklstring` takes it (numbers convert).
fn string_arg(lua: &Lua, v: Value, what: &str) -> FResult<mlua::String> {
    let ty = v.type_name();
    lua.coerce_string(v)?
        .ok_or_else(|| Fail::Msg(format!("bad argument {what} (string expected, got {ty})")))
}

fn capture_value(lua: &Lua, src: &[u8], c: Capture) -> FResult<Value> {
    Ok(match c {
        Capture::Str(a, b) => Value::String(lua.create_string(&src[a..b])?),
        Capture::Pos(p) => Value::Integer(p as i64),
    })
}

fn push_captures(
    lua: &Lua,
    src: &[u8],
    m: &Matcher<'_>,
    s: usize,
    e: usize,
    whole: bool,
    out: &mut MultiValue,
) -> FResult<()> {
    for c in m.captures(s, e, whole).map_err(pattern_error)? {
        out.push_back(capture_value(lua, src, c)?);
    }
    Ok(())
}

fn fail() -> MultiValue {
    MultiValue::from_vec(vec![Value::Nil])
}

fn find_aux(
    lua: &Lua,
    (s, p, init, plain): (Value, Value, Option<Value>, Option<Value>),
    find: bool,
) -> FResult<MultiValue> {
    let name = if find { "'find'" } else { "'match'" };
    let s = string_arg(lua, s, &format!("#1 to {name}"))?;
    let p = string_arg(lua, p, &format!("#2 to {name}"))?;
    let src = s.as_bytes();
    let pat = p.as_bytes();
    let init = lpattern::start_offset(opt_int(lua, init, &format!("#3 to {name}"), 1)?, src.len());
    if init > src.len() {
        return Ok(fail());
    }
    let plain = plain.is_some_and(|v| !matches!(v, Value::Nil | Value::Boolean(false)));
    if find && (plain || lpattern::no_specials(&pat)) {
        return Ok(match lpattern::find_plain(&src[init..], &pat) {
            Some(at) => MultiValue::from_vec(vec![
                Value::Integer((init + at + 1) as i64),
                Value::Integer((init + at + pat.len()) as i64),
            ]),
            None => fail(),
        });
    }
    let mut up = time_up;
    let found = lpattern::search(&src, &pat, init, &mut up).map_err(pattern_error)?;
    let Some((start, end, m)) = found else {
        return Ok(fail());
    };
    let mut out = MultiValue::new();
    if find {
        out.push_back(Value::Integer((start + 1) as i64));
        out.push_back(Value::Integer(end as i64));
        push_captures(lua, &src, &m, start, end, false, &mut out)?;
    } else {
        push_captures(lua, &src, &m, start, end, true, &mut out)?;
    }
    Ok(out)
}

/// The most bytes a library function may build outside Lua's allocator.
fn check_size(len: usize, limit: usize) -> FResult<()> {
    if len > limit {
        return prelude::msg("resulting string too large");
    }
    Ok(())
}

fn gsub(
    lua: &Lua,
    (s, p, repl, max): (Value, Value, Value, Option<Value>),
    limit: usize,
) -> FResult<(Value, i64)> {
    let s = string_arg(lua, s, "#1 to 'gsub'")?;
    let p = string_arg(lua, p, "#2 to 'gsub'")?;
    let src_ref = s.as_bytes();
    let src: &[u8] = &src_ref;
    let pat_ref = p.as_bytes();
    let (anchor, pat) = match pat_ref.first() {
        Some(b'^') => (true, &pat_ref[1..]),
        _ => (false, &pat_ref[..]),
    };
    let repl_str = match &repl {
        Value::String(_) | Value::Integer(_) | Value::Number(_) => {
            lua.coerce_string(repl.clone())?
        }
        Value::Function(_) | Value::Table(_) => None,
        other => {
            return prelude::msg(format!(
                "bad argument #3 to 'gsub' (string/function/table expected, got {})",
                other.type_name()
            ));
        }
    };
    let max = opt_int(lua, max, "#4 to 'gsub'", src.len() as i64 + 1)?;
    let mut up = time_up;
    let mut m = Matcher::new(src, pat, &mut up);
    let mut out: Vec<u8> = Vec::new();
    let mut pos = 0usize;
    let mut last: Option<usize> = None;
    let mut n = 0i64;
    let mut changed = false;
    while n < max {
        m.restart();
        let e = m.do_match(pos, 0).map_err(pattern_error)?;
        match e {
            Some(e) if Some(e) != last => {
                n += 1;
                changed |= add_value(lua, &m, src, pos, e, &repl, repl_str.as_ref(), &mut out)?;
                pos = e;
                last = Some(e);
            }
            _ if pos < src.len() => {
                out.push(src[pos]);
                pos += 1;
            }
            _ => break,
        }
        check_size(out.len(), limit)?;
        if anchor {
            break;
        }
    }
    if !changed {
        return Ok((Value::String(s.clone()), n));
    }
    out.extend_from_slice(&src[pos..]);
    check_size(out.len(), limit)?;
    Ok((Value::String(lua.create_string(&out)?), n))
}

#[allow(clippy::too_many_arguments)]
fn add_value(
    lua: &Lua,
    m: &Matcher<'_>,
    src: &[u8],
    s: usize,
    e: usize,
    repl: &Value,
    repl_str: Option<&mlua::String>,
    out: &mut Vec<u8>,
) -> FResult<bool> {
    let err = pattern_error;
    let value = match repl {
        Value::Function(f) => {
            let mut args = MultiValue::new();
            push_captures(lua, src, m, s, e, true, &mut args)?;
            prelude::call(lua, f, args)?
                .pop_front()
                .unwrap_or(Value::Nil)
        }
        Value::Table(t) => {
            let key = capture_value(lua, src, m.capture(0, s, e).map_err(err)?)?;
            t.get::<Value>(key)?
        }
        _ => {
            let Some(r) = repl_str else {
                return Ok(false);
            };
            let r = r.as_bytes();
            let mut i = 0;
            while i < r.len() {
                let c = r[i];
                if c != b'%' {
                    out.push(c);
                    i += 1;
                    continue;
                }
                i += 1;
                let d = r.get(i).copied().unwrap_or(0);
                match d {
                    b'%' => out.push(b'%'),
                    b'0' => out.extend_from_slice(&src[s..e]),
                    b'1'..=b'9' => match m.capture((d - b'1') as usize, s, e).map_err(err)? {
                        Capture::Str(a, b) => out.extend_from_slice(&src[a..b]),
                        Capture::Pos(p) => out.extend_from_slice(p.to_string().as_bytes()),
                    },
                    _ => return prelude::msg("invalid use of '%' in replacement string"),
                }
                i += 1;
            }
            return Ok(true);
        }
    };
    match value {
        Value::Nil | Value::Boolean(false) => {
            out.extend_from_slice(&src[s..e]);
            Ok(false)
        }
        v @ (Value::String(_) | Value::Integer(_) | Value::Number(_)) => {
            if let Some(s) = lua.coerce_string(v)? {
                out.extend_from_slice(&s.as_bytes());
            }
            Ok(true)
        }
        other => prelude::msg(format!(
            "invalid replacement value (a {})",
            other.type_name()
        )),
    }
}

struct GmatchState {
    src: mlua::String,
    pat: Vec<u8>,
    pos: usize,
    last: Option<usize>,
}

fn gmatch_next(lua: &Lua, st: &RefCell<GmatchState>) -> FResult<MultiValue> {
    let mut guard = st.borrow_mut();
    let GmatchState {
        src,
        pat,
        pos,
        last,
    } = &mut *guard;
    let src_ref = src.as_bytes();
    let src: &[u8] = &src_ref;
    let mut up = time_up;
    let mut m = Matcher::new(src, pat, &mut up);
    let mut from = *pos;
    while from <= src.len() {
        m.restart();
        if let Some(e) = m.do_match(from, 0).map_err(pattern_error)?
            && Some(e) != *last
        {
            let mut out = MultiValue::new();
            push_captures(lua, src, &m, from, e, true, &mut out)?;
            *pos = e;
            *last = Some(e);
            return Ok(out);
        }
        from += 1;
    }
    *pos = usize::MAX;
    Ok(MultiValue::new())
}

fn rep(
    lua: &Lua,
    (s, n, sep): (Value, Value, Option<Value>),
    limit: usize,
) -> FResult<mlua::String> {
    let s = string_arg(lua, s, "#1 to 'rep'")?;
    let sep = match sep {
        None | Some(Value::Nil) => None,
        Some(v) => Some(string_arg(lua, v, "#3 to 'rep'")?),
    };
    if n.is_nil() {
        return prelude::msg("bad argument #2 to 'rep' (number expected, got no value)");
    }
    let n = opt_int(lua, Some(n), "#2 to 'rep'", 0)?;
    let s = s.as_bytes();
    let sep_ref = sep.as_ref().map(|x| x.as_bytes());
    let sep: &[u8] = sep_ref.as_deref().unwrap_or(&[]);
    if n <= 0 || (s.is_empty() && sep.is_empty()) {
        return Ok(lua.create_string("")?);
    }
    let n = n as u128;
    let total = s.len() as u128 * n + sep.len() as u128 * (n - 1);
    if total > limit as u128 {
        return prelude::msg("resulting string too large");
    }
    // One unit (s plus sep), then doubling copies: log(n) memcpys.
    let total = total as usize;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&s);
    if n > 1 {
        out.extend_from_slice(sep);
        while out.len() < total {
            let take = out.len().min(total - out.len());
            out.extend_from_within(..take);
        }
    }
    out.truncate(total);
    Ok(lua.create_string(&out)?)
}

/// Replaces the pattern functions and `rep` in the state's `string` table.
/// `limit` bounds what they build outside Lua's allocator (the state's
/// memory limit). Needs the prelude installed first.
pub fn install(lua: &Lua, limit: usize) -> mlua::Result<()> {
    let string: Table = lua.globals().raw_get("string")?;
    string.raw_set(
        "find",
        prelude::function(lua, |lua, args| find_aux(lua, args, true))?,
    )?;
    string.raw_set(
        "match",
        prelude::function(lua, |lua, (s, p, init): (Value, Value, Option<Value>)| {
            find_aux(lua, (s, p, init, None), false)
        })?,
    )?;
    string.raw_set(
        "gmatch",
        prelude::function(lua, |lua, (s, p, init): (Value, Value, Option<Value>)| {
            let s = string_arg(lua, s, "#1 to 'gmatch'")?;
            let p = string_arg(lua, p, "#2 to 'gmatch'")?;
            let len = s.as_bytes().len();
            let init = lpattern::start_offset(opt_int(lua, init, "#3 to 'gmatch'", 1)?, len);
            let st = Rc::new(RefCell::new(GmatchState {
                pat: p.as_bytes().to_vec(),
                src: s,
                pos: init.min(len + 1),
                last: None,
            }));
            Ok(prelude::function(lua, move |lua, ()| {
                gmatch_next(lua, &st)
            })?)
        })?,
    )?;
    string.raw_set(
        "gsub",
        prelude::function(lua, move |lua, args| gsub(lua, args, limit))?,
    )?;
    string.raw_set(
        "rep",
        prelude::function(lua, move |lua, args| rep(lua, args, limit))?,
    )?;
    Ok(())
}

/// Runs `pattern` against `text` for `bot.hear`: the captures (the whole
/// match when there are none), or None. Bounded by the running budget.
pub fn hear_match(lua: &Lua, text: &str, pattern: &str) -> FResult<Option<MultiValue>> {
    let mut up = time_up;
    let src = text.as_bytes();
    let found = lpattern::search(src, pattern.as_bytes(), 0, &mut up).map_err(pattern_error)?;
    let Some((s, e, m)) = found else {
        return Ok(None);
    };
    let mut out = MultiValue::new();
    push_captures(lua, src, &m, s, e, true, &mut out)?;
    Ok(Some(out))
}

/// Checks a pattern's syntax the way matching would, for `bot.hear` at
/// registration: an error message, or None.
pub fn pattern_problem(pattern: &str) -> Option<String> {
    // Matching against the empty string walks every item once.
    let mut never = || false;
    match lpattern::search(b"", pattern.as_bytes(), 0, &mut never) {
        Err(PatternError::Bad(m)) => Some(m),
        _ => {
            // Items after a failing one are not reached on "": also try a
            // subject that makes most classes match.
            let probe = b"aA0 .%()[]-_";
            match lpattern::search(probe, pattern.as_bytes(), 0, &mut never) {
                Err(PatternError::Bad(m)) => Some(m),
                _ => None,
            }
        }
    }
}
