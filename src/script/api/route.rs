//! `bot.route`: the inbound HTTP routes a generation registers, and a
//! request and its answer as scripts see them.
//!
//! Routes are registered while the scripts load, nowhere else: the whole
//! set is known when the generation is swapped in and the API's table is
//! replaced at once, and a clash between two scripts is a load error like
//! any other (the reload is refused, the old routes keep serving).

use std::rc::Rc;

use mlua::{Function, Lua, Table, Value};

use super::super::prelude;
use super::{Ctx, check_options, here};
use crate::automation::routes::{HookRequest, HookResponse, RouteSpecError, RouteTable};

/// Most headers an answer may carry.
const MAX_HEADERS: usize = 100;

pub struct RouteReg {
    pub script: usize,
    pub func: Function,
    method: String,
    path: String,
    public: bool,
    origin: String,
}

/// One generation's routes: the registrations, and the table the API
/// matches requests in (route index `i` is registration `i`).
pub struct RouteRegs {
    regs: Vec<RouteReg>,
    table: RouteTable,
}

impl RouteRegs {
    pub fn new(generation: u64) -> RouteRegs {
        RouteRegs {
            regs: Vec::new(),
            table: RouteTable::new(generation),
        }
    }

    fn add(&mut self, reg: RouteReg) -> Result<(), RouteSpecError> {
        self.table
            .add(&reg.method, &reg.path, reg.public, &reg.origin)?;
        self.regs.push(reg);
        Ok(())
    }

    /// Drops a script's routes; whether it had any.
    pub fn forget(&mut self, script: usize) -> bool {
        if !self.regs.iter().any(|r| r.script == script) {
            return false;
        }
        let generation = self.table.generation();
        let old = std::mem::take(&mut self.regs);
        *self = RouteRegs::new(generation);
        for r in old.into_iter().filter(|r| r.script != script) {
            // Cannot fail: a subset of routes that were all valid together.
            let _ = self.add(r);
        }
        true
    }

    pub fn clear(&mut self) {
        let generation = self.table.generation();
        *self = RouteRegs::new(generation);
    }

    pub fn table(&self) -> RouteTable {
        self.table.clone()
    }

    /// The handler of route `index` and the script it belongs to.
    pub fn handler(&self, index: u32) -> Option<(Function, usize)> {
        let r = self.regs.get(usize::try_from(index).ok()?)?;
        Some((r.func.clone(), r.script))
    }

    /// "POST /ci" of route `index`, for error reports.
    pub fn describe(&self, index: u32) -> String {
        match usize::try_from(index).ok().and_then(|i| self.regs.get(i)) {
            Some(r) => format!("{} {}", r.method.to_ascii_uppercase(), r.path),
            None => "?".into(),
        }
    }
}

pub fn install(lua: &Lua, bot: &Table, ctx: &Rc<Ctx>, idx: usize) -> mlua::Result<()> {
    let weak = Rc::downgrade(ctx);
    bot.raw_set(
        "route",
        prelude::function(
            lua,
            move |lua, (method, path, func, opts): (Value, Value, Value, Value)| {
                let Some(ctx) = weak.upgrade() else {
                    return Ok(());
                };
                let Value::String(method) = method else {
                    return prelude::msg(format!(
                        "bot.route needs a method (\"GET\", \"POST\", ...), got {}",
                        method.type_name()
                    ));
                };
                let Value::String(path) = path else {
                    return prelude::msg(format!(
                        "bot.route needs a path such as \"/ci\", got {}",
                        path.type_name()
                    ));
                };
                let Value::Function(func) = func else {
                    return prelude::msg(format!(
                        "bot.route needs a function, got {}",
                        func.type_name()
                    ));
                };
                let public = match opts {
                    Value::Nil => false,
                    Value::Table(t) => {
                        check_options(&t, &["public"], "bot.route")?;
                        match t.raw_get::<Value>("public")? {
                            Value::Nil => false,
                            Value::Boolean(b) => b,
                            other => {
                                return prelude::msg(format!(
                                    "bot.route: public must be a boolean, got {}",
                                    other.type_name()
                                ));
                            }
                        }
                    }
                    other => {
                        return prelude::msg(format!(
                            "bot.route's options must be a table such as {{public = true}}, got {}",
                            other.type_name()
                        ));
                    }
                };
                if ctx.live.get() || ctx.disposed.get() {
                    return prelude::msg(
                        "bot.route must be called while the scripts load (at a script's top level), not from a handler",
                    );
                }
                let reg = RouteReg {
                    script: idx,
                    func,
                    method: method.to_string_lossy(),
                    path: path.to_string_lossy(),
                    public,
                    origin: here(lua),
                };
                ctx.routes
                    .borrow_mut()
                    .add(reg)
                    .or_else(|e| prelude::msg(e.to_string()))
            },
        )?,
    )?;
    Ok(())
}

/// `req` for a route handler: `method`, `path`, `query` (name → value; of
/// a repeated name the first), `headers` (lowercase name → value; repeated
/// ones joined with ", " as HTTP allows), `body`.
pub fn request_table(lua: &Lua, req: &HookRequest) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    t.raw_set("method", req.method.as_str())?;
    t.raw_set("path", req.path.as_str())?;
    let query = lua.create_table()?;
    for (k, v) in &req.query {
        if query.raw_get::<Value>(k.as_str())?.is_nil() {
            query.raw_set(k.as_str(), v.as_str())?;
        }
    }
    t.raw_set("query", query)?;
    t.raw_set("headers", header_table(lua, &req.headers)?)?;
    t.raw_set("body", lua.create_string(&req.body)?)?;
    Ok(t)
}

/// Headers as a table: lowercase names, repeated ones joined with ", ".
pub fn header_table(lua: &Lua, headers: &[(String, String)]) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    for (k, v) in headers {
        let k = k.to_ascii_lowercase();
        let joined = match t.raw_get::<Option<String>>(k.as_str())? {
            Some(prev) => format!("{prev}, {v}"),
            None => v.clone(),
        };
        t.raw_set(k, joined)?;
    }
    Ok(t)
}

/// A handler's return value as the answer: a table `{status=, headers=,
/// body=}`, a string (200, text/plain) or nil (204). Anything else is the
/// script's mistake, reported by the caller.
pub fn answer(v: Value) -> Result<HookResponse, String> {
    match v {
        Value::Nil => Ok(HookResponse {
            status: 204,
            headers: Vec::new(),
            body: Vec::new(),
        }),
        Value::String(s) => {
            let mut r = HookResponse::text("");
            r.body = s.as_bytes().to_vec();
            Ok(r)
        }
        Value::Table(t) => table_answer(&t),
        other => Err(format!(
            "returned {}; expected a table {{status=, headers=, body=}}, a string or nil",
            show_value(&other)
        )),
    }
}

fn table_answer(t: &Table) -> Result<HookResponse, String> {
    let e = |e: mlua::Error| e.to_string();
    for pair in t.pairs::<Value, Value>() {
        let (k, _) = pair.map_err(e)?;
        let ok = matches!(&k, Value::String(s) if matches!(s.as_bytes().as_ref(), b"status" | b"headers" | b"body"));
        if !ok {
            return Err(format!(
                "returned a table with the key {}; expected only status, headers and body",
                show_key(&k)
            ));
        }
    }
    let status = match t.raw_get::<Value>("status").map_err(e)? {
        Value::Nil => 200,
        Value::Integer(n) => u16::try_from(n).map_err(|_| format!("returned status {n}"))?,
        Value::Number(n) if n.fract() == 0.0 && (0.0..=65535.0).contains(&n) => n as u16,
        other => {
            return Err(format!(
                "returned status = {}; expected a whole number such as 200",
                show_value(&other)
            ));
        }
    };
    let mut headers = Vec::new();
    match t.raw_get::<Value>("headers").map_err(e)? {
        Value::Nil => {}
        Value::Table(h) => {
            for pair in h.pairs::<Value, Value>() {
                let (k, v) = pair.map_err(e)?;
                let Value::String(name) = &k else {
                    return Err(format!(
                        "returned a header named by {}; names are strings",
                        show_key(&k)
                    ));
                };
                let name = name.to_string_lossy();
                match v {
                    Value::Table(list) => {
                        for item in list.sequence_values::<Value>() {
                            headers.push((name.clone(), header_value(&name, &item.map_err(e)?)?));
                        }
                    }
                    other => headers.push((name.clone(), header_value(&name, &other)?)),
                }
                if headers.len() > MAX_HEADERS {
                    return Err(format!("returned more than {MAX_HEADERS} headers"));
                }
            }
        }
        other => {
            return Err(format!(
                "returned headers = {}; expected a table of name = value",
                show_value(&other)
            ));
        }
    }
    let body = match t.raw_get::<Value>("body").map_err(e)? {
        Value::Nil => Vec::new(),
        Value::String(s) => s.as_bytes().to_vec(),
        other => {
            return Err(format!(
                "returned body = {}; expected a string",
                show_value(&other)
            ));
        }
    };
    Ok(HookResponse {
        status,
        headers,
        body,
    })
}

fn header_value(name: &str, v: &Value) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s.to_string_lossy()),
        Value::Integer(n) => Ok(n.to_string()),
        Value::Number(n) => Ok(n.to_string()),
        other => Err(format!(
            "returned header {name:?} = {}; expected a string",
            show_value(other)
        )),
    }
}

fn show_key(k: &Value) -> String {
    match k {
        Value::String(s) => format!("{:?}", s.to_string_lossy()),
        Value::Integer(n) => n.to_string(),
        other => format!("a {}", other.type_name()),
    }
}

fn show_value(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{:?}", s.to_string_lossy()),
        Value::Integer(n) => n.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Boolean(b) => b.to_string(),
        other => format!("a {}", other.type_name()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_convert_as_documented() {
        let lua = Lua::new();
        let eval = |src: &str| -> Value { lua.load(src).eval().unwrap() };
        assert_eq!(answer(eval("nil")).unwrap().status, 204);
        let text = answer(eval("'hi'")).unwrap();
        assert_eq!((text.status, text.body.as_slice()), (200, &b"hi"[..]));
        assert_eq!(text.headers[0].0, "content-type");
        let full = answer(eval(
            "{status = 201, headers = {['X-A'] = '1', ['x-b'] = {'2', '3'}, n = 4}, body = 'made'}",
        ))
        .unwrap();
        assert_eq!(full.status, 201);
        assert_eq!(full.body, b"made");
        let mut h = full.headers.clone();
        h.sort();
        assert_eq!(
            h,
            [
                ("X-A".to_string(), "1".to_string()),
                ("n".into(), "4".into()),
                ("x-b".into(), "2".into()),
                ("x-b".into(), "3".into()),
            ]
        );
        assert_eq!(answer(eval("{}")).unwrap().status, 200);
        for (src, why) in [
            ("true", "returned true"),
            ("12", "returned 12"),
            ("{status = 'ok'}", "status = \"ok\""),
            ("{status = 2.5}", "status = 2.5"),
            ("{status = -1}", "status -1"),
            ("{code = 200}", "key \"code\""),
            ("{[1] = 'x'}", "key 1"),
            ("{body = {}}", "body = a table"),
            ("{headers = 'x'}", "headers = \"x\""),
            ("{headers = {a = true}}", "header \"a\" = true"),
            ("{headers = {[1] = 'x'}}", "named by 1"),
        ] {
            let e = answer(eval(src)).unwrap_err();
            assert!(e.contains(why), "{src}: {e}");
        }
        let many = answer(eval(
            "local h = {} for i = 1, 101 do h['x' .. i] = 'v' end return {headers = h}",
        ))
        .unwrap_err();
        assert!(many.contains("more than 100"), "{many}");
    }

    #[test]
    fn requests_become_tables() {
        let lua = Lua::new();
        let req = HookRequest {
            method: "POST".into(),
            path: "/ci".into(),
            query: vec![
                ("a".into(), "1".into()),
                ("b".into(), "x y".into()),
                ("a".into(), "2".into()),
            ],
            headers: vec![
                ("x-one".into(), "1".into()),
                ("X-One".into(), "2".into()),
                ("content-type".into(), "text/plain".into()),
            ],
            body: vec![0, 255, b'z'],
        };
        let t = request_table(&lua, &req).unwrap();
        lua.globals().set("req", t).unwrap();
        let got: String = lua
            .load(
                "return table.concat({req.method, req.path, req.query.a, req.query.b, \
                 req.headers['x-one'], req.headers['content-type'], #req.body, \
                 req.body:byte(2)}, '|')",
            )
            .eval()
            .unwrap();
        assert_eq!(got, "POST|/ci|1|x y|1, 2|text/plain|3|255");
    }
}
