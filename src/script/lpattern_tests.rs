//! The Rust matcher against Lua's own C one: same results, same errors.

use std::time::Duration;

use mlua::Lua;
use proptest::prelude::*;

use super::super::{budget, strlib};
use super::*;

/// Evaluates `call` (Lua source using `s`, `p`, `i`) in a state and renders
/// every result, errors without their location prefix.
fn render(lua: &Lua, call: &str, s: &str, p: &str, i: i64) -> String {
    let f: mlua::Function = lua
        .load(format!(
            r#"
            local s, p, i = ...
            local function show(...)
              local out = {{}}
              for k = 1, select('#', ...) do
                local v = select(k, ...)
                out[#out + 1] = type(v) .. ":" .. tostring(v)
              end
              return table.concat(out, " ")
            end
            local r = table.pack(pcall(function() {call} end))
            if not r[1] then
              local msg = tostring(r[2]):gsub("^[^\n]-:%d+: ", ""):gsub("\n.*", "")
              return "error: " .. msg
            end
            return show(table.unpack(r, 2, r.n))
            "#
        ))
        .into_function()
        .unwrap();
    f.call::<mlua::String>((s, p, i)).unwrap().to_string_lossy()
}

fn states() -> (Lua, Lua) {
    let c = Lua::new();
    (c, patched())
}

fn patched() -> Lua {
    let r = Lua::new();
    super::super::prelude::Prelude::install(&r).unwrap();
    strlib::install(&r, 1 << 26).unwrap();
    r
}

const CALLS: &[&str] = &[
    "return string.find(s, p, i)",
    "return string.match(s, p, i)",
    "local out = {} for a, b in string.gmatch(s, p, i) do out[#out+1] = tostring(a) .. '|' .. tostring(b) if #out > 40 then break end end return table.concat(out, ',')",
    "return string.gsub(s, p, '<%0>')",
    "return string.gsub(s, p, '%1-%%')",
    "return string.gsub(s, p, function(a, b) return a and (tostring(a) .. '/' .. tostring(b)) end)",
    "return string.gsub(s, p, {a = 'A', ['1'] = false, b = 2})",
    "return string.gsub(s, p, 'x', i)",
];

fn same(s: &str, p: &str, i: i64) {
    let (c, r) = states();
    for call in CALLS {
        let want = render(&c, call, s, p, i);
        let got = render(&r, call, s, p, i);
        assert_eq!(got, want, "{call} with s={s:?} p={p:?} i={i}");
    }
}

#[test]
fn known_cases_agree_with_c_lua() {
    let cases: &[(&str, &str)] = &[
        ("hello world", "o w"),
        ("hello world", "(o)(r)"),
        ("hello world", "()ll()"),
        ("key = value", "(%w+)%s*=%s*(%w+)"),
        ("f(a(b)c)d", "%b()"),
        ("THE (quick) fox", "%f[%a]%a+"),
        ("abcabc", "(abc)%1"),
        ("aaa", "a-"),
        ("aaa", "a-$"),
        ("aaa", "^a?a?"),
        ("", ".*"),
        ("", "^$"),
        ("x", "[]]"),
        ("a]b", "[]]"),
        ("a-b", "[a-]"),
        ("a^b", "[%^]"),
        ("abc", "[^%a]"),
        ("a.b", "%."),
        ("abc", "%"),
        ("abc", "[a"),
        ("abc", "(a"),
        ("abc", "a)"),
        ("abc", "%1"),
        ("abc", "(a)%2"),
        ("abc", "%f"),
        ("abc", "%fa"),
        ("abc", "%b"),
        ("abc", "%bx"),
        ("abc", "(()"),
        ("abc", "(())"),
        ("hello", "l+"),
        ("hello", ""),
        ("a\0b", "%z"),
        ("¡ñ", "[\u{80}-\u{ff}]+"),
        ("one two  three", "%s*"),
        ("abc", "$"),
        ("a$c", "a$c"),
        ("a", "a*?"),
    ];
    for (s, p) in cases {
        for i in [1, 2, -1, 0, 10, -10] {
            same(s, p, i);
        }
    }
}

#[test]
fn too_many_captures_and_too_complex_agree() {
    same("a", &"(".repeat(40), 1);
    same(&"a".repeat(300), &"a?".repeat(250), 1);
    same("abc", &"()".repeat(33), 1);
}

fn token() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "a", "b", ".", "%a", "%d", "%s", "%w", "%A", "%S", "[ab]", "[^a]", "[a-c]", "[%d]", "*",
        "+", "-", "?", "(", ")", "()", "%1", "%2", "%b()", "%f[%w]", "%f[%W]", "^", "$", "%", "[",
        "]", "%%", "%(", " ",
    ])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]
    #[test]
    fn random_patterns_agree_with_c_lua(
        toks in prop::collection::vec(token(), 0..7),
        subject in "[ab1 ()%-]{0,12}",
        init in -14i64..14,
    ) {
        let p: String = toks.concat();
        same(&subject, &p, init);
    }
}

#[test]
fn a_pathological_pattern_stops_at_the_deadline() {
    let src = "a".repeat(100_000);
    let mut calls = 0u32;
    let mut up = || {
        calls += 1;
        calls > 50
    };
    let r = search(src.as_bytes(), b".-.-.-.-.-b", 0, &mut up);
    assert!(
        matches!(r, Err(PatternError::TimeUp)),
        "{:?}",
        r.map(|f| f.map(|(a, b, _)| (a, b)))
    );
}

#[test]
fn library_calls_under_a_budget_are_stopped() {
    let lua = patched();
    let started = std::time::Instant::now();
    let r = budget::with_budget(Duration::from_millis(50), || {
        lua.load(r#"return (("a"):rep(1e5)):find(".-.-.-.-.-b")"#)
            .exec()
    });
    let err = r.unwrap_err().to_string();
    assert!(err.contains("time budget"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
    // Sizes are checked before anything is built.
    let err = lua
        .load(r#"return string.rep("x", 2^40)"#)
        .exec()
        .unwrap_err()
        .to_string();
    assert!(err.contains("too large"), "{err}");
    assert_eq!(
        lua.load(r#"return #string.rep("", 2^62)"#)
            .eval::<i64>()
            .unwrap(),
        0
    );
    assert_eq!(
        lua.load(r#"return string.rep("ab", 3, ",")"#)
            .eval::<String>()
            .unwrap(),
        "ab,ab,ab"
    );
}

#[test]
fn plain_find_is_linear() {
    let hay = "a".repeat(1_000_000);
    let needle = format!("{}b", "a".repeat(100_000));
    assert_eq!(find_plain(hay.as_bytes(), needle.as_bytes()), None);
    assert_eq!(find_plain(b"abc", b""), Some(0));
    assert_eq!(find_plain(b"abc", b"c"), Some(2));
}
