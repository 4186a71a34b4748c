//! Lua values to JSON and back, for `bot.store` and `bot.json`: exact or
//! refused. A value JSON cannot hold as it is (a table with both list items
//! and names, a list with holes, NaN, a function, a cycle, nesting past
//! `MAX_DEPTH`) is an error naming the problem and where it is, so nothing
//! is stored that would read back different. Both directions are bounded
//! in depth (no stack overflow, whatever the input) and check the time
//! budget as they go.

use std::fmt::Write as _;

use mlua::{Lua, Table, Value};
use serde_json::{Map, Number, Value as Json};

use super::budget;

/// How deep tables may nest in a stored or encoded value.
pub const MAX_DEPTH: usize = 64;

/// Where in the value a problem is, as `.key[2].name`.
#[derive(Default)]
struct Path(Vec<PathItem>);

enum PathItem {
    Key(String),
    Index(i64),
}

impl Path {
    fn show(&self) -> String {
        if self.0.is_empty() {
            return "the value".into();
        }
        let mut s = String::from("value");
        for item in &self.0 {
            match item {
                PathItem::Key(k) => {
                    let _ = write!(s, ".{k}");
                }
                PathItem::Index(i) => {
                    let _ = write!(s, "[{i}]");
                }
            }
        }
        s
    }
}

struct ToJson {
    path: Path,
    /// Tables on the way down, to find cycles.
    open: Vec<*const std::ffi::c_void>,
    steps: usize,
}

impl ToJson {
    fn err<T>(&self, what: impl std::fmt::Display) -> Result<T, String> {
        Err(format!("{} {what}", self.path.show()))
    }

    fn tick(&mut self) -> Result<(), String> {
        self.steps += 1;
        if self.steps.is_multiple_of(1024) && budget::time_up() {
            return Err(budget::message());
        }
        Ok(())
    }

    fn value(&mut self, v: &Value) -> Result<Json, String> {
        self.tick()?;
        match v {
            Value::Nil => Ok(Json::Null),
            Value::Boolean(b) => Ok(Json::Bool(*b)),
            Value::Integer(i) => Ok(Json::Number((*i).into())),
            Value::Number(n) => match Number::from_f64(*n) {
                Some(n) => Ok(Json::Number(n)),
                None => self.err(format_args!("is {n}, which JSON cannot hold")),
            },
            Value::String(s) => match s.to_str() {
                Ok(s) => Ok(Json::String(s.to_string())),
                Err(_) => self.err("is a string that is not valid UTF-8"),
            },
            Value::Table(t) => self.table(t),
            other => self.err(format_args!(
                "is a {}, which cannot be stored",
                other.type_name()
            )),
        }
    }

    fn table(&mut self, t: &Table) -> Result<Json, String> {
        let ptr = t.to_pointer();
        if self.open.contains(&ptr) {
            return self.err("refers back to a table that contains it (a cycle)");
        }
        if self.open.len() >= MAX_DEPTH {
            return self.err(format_args!("is nested deeper than {MAX_DEPTH} levels"));
        }
        // Classify the keys first: a list (1..n), or names, never both.
        let mut ints: Vec<i64> = Vec::new();
        let mut names: Vec<String> = Vec::new();
        for pair in t.pairs::<Value, Value>() {
            self.tick()?;
            let (k, _) = pair.map_err(|e| e.to_string())?;
            match k {
                Value::Integer(i) => ints.push(i),
                Value::String(s) => match s.to_str() {
                    Ok(s) => names.push(s.to_string()),
                    Err(_) => return self.err("has a key that is not valid UTF-8"),
                },
                Value::Number(n) => {
                    return self.err(format_args!(
                        "has the key {n}: only whole numbers 1..n or strings can be keys"
                    ));
                }
                other => {
                    return self.err(format_args!(
                        "has a {} key: only whole numbers 1..n or strings can be keys",
                        other.type_name()
                    ));
                }
            }
        }
        if !ints.is_empty() && !names.is_empty() {
            return self.err(format_args!(
                "mixes list items with named keys (e.g. {:?}); JSON has either a list or an object",
                names[0]
            ));
        }
        self.open.push(ptr);
        let out = if !ints.is_empty() {
            ints.sort_unstable();
            let n = ints.len() as i64;
            if let Some((i, k)) = ints.iter().enumerate().find(|(i, k)| **k != *i as i64 + 1) {
                let _ = i;
                self.open.pop();
                return self.err(format_args!(
                    "is a list with a hole: key {k} without all of 1..{k} (a list needs keys 1..n)"
                ));
            }
            let mut items = Vec::with_capacity(n as usize);
            for i in 1..=n {
                let v: Value = t.raw_get(i).map_err(|e| e.to_string())?;
                self.path.0.push(PathItem::Index(i));
                let j = self.value(&v);
                self.path.0.pop();
                items.push(j?);
            }
            Json::Array(items)
        } else {
            names.sort_unstable();
            let mut map = Map::new();
            for k in names {
                let v: Value = t.raw_get(k.as_str()).map_err(|e| e.to_string())?;
                self.path.0.push(PathItem::Key(k.clone()));
                let j = self.value(&v);
                self.path.0.pop();
                map.insert(k, j?);
            }
            Json::Object(map)
        };
        self.open.pop();
        Ok(out)
    }
}

/// A Lua value as JSON, exactly, or why not. `nil` is JSON null.
pub fn to_json(v: &Value) -> Result<Json, String> {
    ToJson {
        path: Path::default(),
        open: Vec::new(),
        steps: 0,
    }
    .value(v)
}

/// JSON as a Lua value: objects and arrays are tables, null is nil.
pub fn from_json(lua: &Lua, j: &Json) -> Result<Value, String> {
    fn go(lua: &Lua, j: &Json, depth: usize, steps: &mut usize) -> Result<Value, String> {
        *steps += 1;
        if (*steps).is_multiple_of(1024) && budget::time_up() {
            return Err(budget::message());
        }
        let e = |e: mlua::Error| e.to_string();
        Ok(match j {
            Json::Null => Value::Nil,
            Json::Bool(b) => Value::Boolean(*b),
            Json::Number(n) => match n.as_i64() {
                Some(i) => Value::Integer(i),
                None => Value::Number(n.as_f64().unwrap_or(f64::NAN)),
            },
            Json::String(s) => Value::String(lua.create_string(s).map_err(e)?),
            Json::Array(items) => {
                if depth >= MAX_DEPTH {
                    return Err(format!("is nested deeper than {MAX_DEPTH} levels"));
                }
                let t = lua.create_table_with_capacity(items.len(), 0).map_err(e)?;
                for (i, item) in items.iter().enumerate() {
                    t.raw_set(i + 1, go(lua, item, depth + 1, steps)?)
                        .map_err(e)?;
                }
                Value::Table(t)
            }
            Json::Object(map) => {
                if depth >= MAX_DEPTH {
                    return Err(format!("is nested deeper than {MAX_DEPTH} levels"));
                }
                let t = lua.create_table_with_capacity(0, map.len()).map_err(e)?;
                for (k, v) in map {
                    t.raw_set(k.as_str(), go(lua, v, depth + 1, steps)?)
                        .map_err(e)?;
                }
                Value::Table(t)
            }
        })
    }
    go(lua, j, 0, &mut 0)
}

#[cfg(test)]
#[path = "convert_tests.rs"]
mod tests;
