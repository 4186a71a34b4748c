use mlua::{Lua, Value};
use proptest::prelude::*;

use super::*;

fn eval(lua: &Lua, src: &str) -> Value {
    lua.load(src).eval().unwrap()
}

fn refused(src: &str) -> String {
    let lua = Lua::new();
    match to_json(&eval(&lua, src)) {
        Ok(j) => panic!("{src} was accepted as {j}"),
        Err(e) => e,
    }
}

#[test]
fn values_json_cannot_hold_exactly_are_refused_with_the_reason() {
    assert!(refused("return {1, 2, x = 3, [true] = 4}").contains("key"));
    assert!(refused("return {1, 2, x = 3}").contains("mixes list items"));
    assert!(refused("return {[1] = 1, [1e6] = 2}").contains("hole"));
    assert!(refused("return {[2] = 'b'}").contains("hole"));
    assert!(refused("return {[0] = 'zero', 'one'}").contains("hole"));
    assert!(refused("return 0/0").contains("JSON cannot hold"));
    assert!(refused("return 1/0").contains("JSON cannot hold"));
    assert!(refused("return {a = {b = -1/0}}").starts_with("value.a.b "));
    assert!(refused("return {print}").contains("function"));
    assert!(refused("return {[1.5] = 1}").contains("1.5"));
    assert!(refused("local t = {} t.self = t return t").contains("cycle"));
    assert!(refused("return '\\255'").contains("UTF-8"));
    assert!(refused("return {['\\255'] = 1}").contains("UTF-8"));
}

#[test]
fn deep_nesting_is_refused_without_overflowing_the_stack() {
    let lua = Lua::new();
    let v = eval(
        &lua,
        "local t = {} local c = t for i = 1, 200000 do c[1] = {} c = c[1] end return t",
    );
    assert!(to_json(&v).unwrap_err().contains("deeper than 64"));
    let ok = eval(
        &lua,
        "local t = {} local c = t for i = 1, 63 do c[1] = {} c = c[1] end return t",
    );
    let j = to_json(&ok).unwrap();
    assert!(deep_eq(&from_json(&lua, &j).unwrap(), &ok));
    // JSON deeper than the limit never becomes a Lua value either.
    let deep: serde_json::Value =
        serde_json::from_str(&format!("{}{}", "[".repeat(100), "]".repeat(100))).unwrap();
    assert!(from_json(&lua, &deep).unwrap_err().contains("deeper"));
}

#[test]
fn null_is_nil_and_types_survive() {
    let lua = Lua::new();
    assert!(from_json(&lua, &serde_json::Value::Null).unwrap().is_nil());
    let j: serde_json::Value = serde_json::from_str(r#"{"a": null, "i": 3, "f": 3.0}"#).unwrap();
    let v = from_json(&lua, &j).unwrap();
    let t = v.as_table().unwrap();
    assert!(t.raw_get::<Value>("a").unwrap().is_nil());
    assert!(matches!(
        t.raw_get::<Value>("i").unwrap(),
        Value::Integer(3)
    ));
    assert!(matches!(t.raw_get::<Value>("f").unwrap(), Value::Number(f) if f == 3.0));
}

/// Structural equality of Lua values (tables by content, raw).
fn deep_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Table(x), Value::Table(y)) => {
            let count = |t: &mlua::Table| t.pairs::<Value, Value>().count();
            if count(x) != count(y) {
                return false;
            }
            x.pairs::<Value, Value>().all(|p| {
                let (k, v) = p.unwrap();
                deep_eq(&v, &y.raw_get::<Value>(k).unwrap())
            })
        }
        (Value::Number(x), Value::Number(y)) => x == y || (x.is_nan() && y.is_nan()),
        (Value::String(x), Value::String(y)) => x.as_bytes() == y.as_bytes(),
        _ => a == b,
    }
}

#[derive(Debug, Clone)]
enum G {
    Nil,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Vec<u8>),
    Table(Vec<(K, G)>),
}

#[derive(Debug, Clone)]
enum K {
    Int(i64),
    Str(String),
    Bool(bool),
    Float(f64),
}

fn gen_value() -> impl Strategy<Value = G> {
    let leaf = prop_oneof![
        Just(G::Nil),
        any::<bool>().prop_map(G::Bool),
        any::<i64>().prop_map(G::Int),
        prop_oneof![
            any::<f64>(),
            Just(f64::NAN),
            Just(f64::INFINITY),
            Just(-0.0),
            Just(2.0)
        ]
        .prop_map(G::Float),
        prop_oneof![
            "[a-z]{0,6}".prop_map(|s| s.into_bytes()),
            prop::collection::vec(any::<u8>(), 0..4)
        ]
        .prop_map(G::Str),
    ];
    let key = prop_oneof![
        (0i64..5).prop_map(K::Int),
        "[a-c]{1,2}".prop_map(K::Str),
        any::<bool>().prop_map(K::Bool),
        Just(K::Float(1.5)),
    ];
    leaf.prop_recursive(4, 40, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(|items| {
                G::Table(
                    items
                        .into_iter()
                        .enumerate()
                        .map(|(i, v)| (K::Int(i as i64 + 1), v))
                        .collect(),
                )
            }),
            prop::collection::vec((key.clone(), inner), 0..6).prop_map(G::Table),
        ]
    })
}

fn build(lua: &Lua, g: &G) -> Value {
    match g {
        G::Nil => Value::Nil,
        G::Bool(b) => Value::Boolean(*b),
        G::Int(i) => Value::Integer(*i),
        G::Float(f) => Value::Number(*f),
        G::Str(s) => Value::String(lua.create_string(s).unwrap()),
        G::Table(entries) => {
            let t = lua.create_table().unwrap();
            for (k, v) in entries {
                let k = match k {
                    K::Int(i) => Value::Integer(*i),
                    K::Str(s) => Value::String(lua.create_string(s).unwrap()),
                    K::Bool(b) => Value::Boolean(*b),
                    K::Float(f) => Value::Number(*f),
                };
                t.raw_set(k, build(lua, v)).unwrap();
            }
            Value::Table(t)
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]
    /// Whatever `to_json` accepts reads back equal, through JSON text too.
    #[test]
    fn every_accepted_value_reads_back_equal(g in gen_value()) {
        let lua = Lua::new();
        let v = build(&lua, &g);
        if let Ok(j) = to_json(&v) {
            let text = serde_json::to_string(&j).unwrap();
            let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
            let back = from_json(&lua, &parsed).unwrap();
            prop_assert!(deep_eq(&back, &v), "{g:?} came back as {text}");
        }
    }
}
