//! Inbound HTTP routes that scripts register (`bot.route`): the table the
//! API server looks requests up in, and the trait through which it hands
//! a request to whoever runs the handler (the script engine).
//!
//! A table belongs to one load (generation) of one instance's scripts. The
//! engine builds the whole table while a load runs and swaps it in when
//! the load succeeds, so a request sees either the old routes or the new
//! ones, never half of each, and a route the reload dropped answers 404.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Longest route path a script may register.
pub const MAX_PATH_LEN: usize = 512;

/// Which route of which load: the engine finds the handler by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RouteId {
    pub generation: u64,
    /// Registration order within the load.
    pub index: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub id: RouteId,
    /// Uppercase ("POST").
    pub method: String,
    /// As registered and as matched: "/ci", relative to
    /// `/v1/instances/{name}/hooks`.
    pub path: String,
    /// Served without the admin key or the instance's token.
    pub public: bool,
    /// Where the script registered it ("ci.lua:12"), for errors.
    pub origin: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteSpecError {
    #[error("invalid route method {0:?}: expected GET, POST, PUT, PATCH or DELETE")]
    Method(String),
    #[error("invalid route path {path:?}: {why}")]
    Path { path: String, why: &'static str },
    #[error("route {method} {path} is registered twice: at {first} and at {second}")]
    Duplicate {
        method: String,
        path: String,
        first: String,
        second: String,
    },
}

/// Methods a route may answer. HEAD and OPTIONS are left to the server.
pub const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

/// One load's routes for one instance.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    generation: u64,
    routes: Vec<Route>,
    by_key: HashMap<(String, String), usize>,
}

impl RouteTable {
    pub fn new(generation: u64) -> RouteTable {
        RouteTable {
            generation,
            ..RouteTable::default()
        }
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// Registers a route; the method is case-insensitive. A second route
    /// with the same method and path is an error naming both origins.
    pub fn add(
        &mut self,
        method: &str,
        path: &str,
        public: bool,
        origin: &str,
    ) -> Result<RouteId, RouteSpecError> {
        let method_uc = method.to_ascii_uppercase();
        if !METHODS.contains(&method_uc.as_str()) {
            return Err(RouteSpecError::Method(method.to_string()));
        }
        check_path(path).map_err(|why| RouteSpecError::Path {
            path: path.to_string(),
            why,
        })?;
        let key = (method_uc.clone(), path.to_string());
        if let Some(&i) = self.by_key.get(&key) {
            return Err(RouteSpecError::Duplicate {
                method: method_uc,
                path: path.to_string(),
                first: self.routes[i].origin.clone(),
                second: origin.to_string(),
            });
        }
        let id = RouteId {
            generation: self.generation,
            index: u32::try_from(self.routes.len()).unwrap_or(u32::MAX),
        };
        self.by_key.insert(key, self.routes.len());
        self.routes.push(Route {
            id,
            method: method_uc,
            path: path.to_string(),
            public,
            origin: origin.to_string(),
        });
        Ok(id)
    }

    /// The route for a request; `method` must be uppercase, as HTTP sends it.
    pub fn find(&self, method: &str, path: &str) -> Option<&Route> {
        self.by_key
            .get(&(method.to_string(), path.to_string()))
            .map(|&i| &self.routes[i])
    }

    /// The methods registered for `path`, for a 405's `Allow`.
    pub fn methods_for(&self, path: &str) -> Vec<&str> {
        self.routes
            .iter()
            .filter(|r| r.path == path)
            .map(|r| r.method.as_str())
            .collect()
    }
}

/// A path is matched byte for byte against the request's (still
/// percent-encoded) path, so only characters that need no encoding are
/// accepted, and no segment that a client or proxy would normalize away.
fn check_path(path: &str) -> Result<(), &'static str> {
    if !path.starts_with('/') {
        return Err("must start with '/'");
    }
    if path == "/" {
        return Err("must name something after '/'");
    }
    if path.len() > MAX_PATH_LEN {
        return Err("longer than 512 bytes");
    }
    if !path.bytes().all(|b| {
        b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'/' | b'-'
                    | b'.'
                    | b'_'
                    | b'~'
                    | b':'
                    | b'@'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
            )
    }) {
        return Err("may hold only letters, digits and -._~:@!$&'()*+,;= (no query, no %-escapes)");
    }
    let segments: Vec<&str> = path[1..].split('/').collect();
    let last = segments.len() - 1;
    // A trailing slash is a path of its own; an empty segment elsewhere is not.
    if segments
        .iter()
        .enumerate()
        .any(|(i, s)| *s == "." || *s == ".." || (s.is_empty() && i != last))
    {
        return Err("must not contain empty, '.' or '..' segments");
    }
    Ok(())
}

/// Every instance's current table.
#[derive(Debug, Default)]
pub struct Routes {
    tables: RwLock<HashMap<String, Arc<RouteTable>>>,
}

impl Routes {
    pub fn new() -> Routes {
        Routes::default()
    }

    /// Swaps in a load's table at once. A table older than the one in
    /// place (a slow load finishing after a newer one) is refused: false.
    pub fn replace(&self, instance: &str, table: RouteTable) -> bool {
        let mut tables = self.tables.write().unwrap_or_else(|e| e.into_inner());
        if tables
            .get(instance)
            .is_some_and(|t| t.generation > table.generation)
        {
            return false;
        }
        tables.insert(instance.to_string(), Arc::new(table));
        true
    }

    /// The instance's scripts are gone (removed, or shut down).
    pub fn remove(&self, instance: &str) {
        self.tables
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(instance);
    }

    pub fn table(&self, instance: &str) -> Option<Arc<RouteTable>> {
        self.tables
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(instance)
            .cloned()
    }
}

/// A request as the handler sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HookRequest {
    pub method: String,
    /// The route's path, as matched ("/ci").
    pub path: String,
    /// Decoded query pairs, in order; a name may repeat.
    pub query: Vec<(String, String)>,
    /// Lowercase names, in order; the `authorization` header that
    /// authenticated a non-public route is not passed on.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HookRequest {
    /// The first value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The handler's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HookResponse {
    /// What a handler that returns a string answers.
    pub fn text(body: impl Into<String>) -> HookResponse {
        HookResponse {
            status: 200,
            headers: vec![("content-type".into(), "text/plain; charset=utf-8".into())],
            body: body.into().into_bytes(),
        }
    }
}

/// Why a handler gave no answer. What went wrong inside the script is for
/// the engine to report (with file:line); the caller only learns the kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// The handler raised an error or returned something unusable → 500.
    #[error("the route's handler failed")]
    Failed,
    /// The handler ran past its deadline → 504.
    #[error("the route's handler ran past its deadline")]
    Deadline,
    /// The route's generation was disposed before it could run → 404.
    #[error("the route is gone")]
    Gone,
    /// The engine cannot take more work now → 503.
    #[error("the script engine is busy")]
    Busy,
}

/// Runs route handlers; the script engine implements it. The future must
/// resolve by itself (the API also stops waiting at its own deadline).
pub trait RouteDispatch: Send + Sync + 'static {
    fn dispatch(
        &self,
        instance: &str,
        route: RouteId,
        req: HookRequest,
    ) -> BoxFuture<Result<HookResponse, RouteError>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_found_by_method_and_exact_path() {
        let mut t = RouteTable::new(3);
        let ci = t.add("post", "/ci", false, "ci.lua:4").unwrap();
        let get = t.add("GET", "/ci", true, "ci.lua:9").unwrap();
        assert_eq!(
            ci,
            RouteId {
                generation: 3,
                index: 0
            }
        );
        assert_eq!(get.index, 1);
        let r = t.find("POST", "/ci").unwrap();
        assert_eq!((r.id, r.public, r.origin.as_str()), (ci, false, "ci.lua:4"));
        assert!(t.find("GET", "/ci").unwrap().public);
        assert!(t.find("POST", "/ci/").is_none());
        assert!(t.find("POST", "/CI").is_none());
        assert!(t.find("PUT", "/ci").is_none());
        assert_eq!(t.methods_for("/ci"), ["POST", "GET"]);
        assert!(t.methods_for("/x").is_empty());
    }

    #[test]
    fn a_duplicate_names_both_registrations() {
        let mut t = RouteTable::new(1);
        t.add("POST", "/ci", false, "a.lua:3").unwrap();
        let e = t.add("post", "/ci", true, "b.lua:7").unwrap_err();
        assert_eq!(
            e.to_string(),
            "route POST /ci is registered twice: at a.lua:3 and at b.lua:7"
        );
        // Same path, other method: fine.
        t.add("PUT", "/ci", false, "b.lua:8").unwrap();
    }

    #[test]
    fn bad_methods_and_paths_are_refused() {
        let mut t = RouteTable::new(1);
        for m in ["", "HEAD", "OPTIONS", "CONNECT", "GE T", "FOO"] {
            assert_eq!(
                t.add(m, "/x", false, "a.lua:1"),
                Err(RouteSpecError::Method(m.into()))
            );
        }
        for (p, why) in [
            ("", "start with '/'"),
            ("ci", "start with '/'"),
            ("/", "after '/'"),
            ("/ci?x=1", "no query"),
            ("/c%69", "no %-escapes"),
            ("/a b", "only letters"),
            ("/a#b", "only letters"),
            ("/é", "only letters"),
            ("//ci", "empty"),
            ("/a//b", "empty"),
            ("/a/./b", "'.'"),
            ("/a/..", "'..'"),
        ] {
            let e = t.add("GET", p, false, "a.lua:1").unwrap_err();
            assert!(e.to_string().contains(why), "{p:?}: {e}");
        }
        let long = format!("/{}", "a".repeat(MAX_PATH_LEN));
        assert!(t.add("GET", &long, false, "a.lua:1").is_err());
        for ok in ["/a/", "/hooks/github-push", "/v1/x.json", "/a:b@c"] {
            t.add("GET", ok, false, "a.lua:1").unwrap();
        }
        assert_eq!(t.routes().len(), 4);
    }

    #[test]
    fn replacing_a_table_is_whole_and_never_goes_back() {
        let routes = Routes::new();
        let mut g1 = RouteTable::new(1);
        g1.add("POST", "/old", false, "a.lua:1").unwrap();
        assert!(routes.replace("i", g1));
        let before = routes.table("i").unwrap();
        let mut g2 = RouteTable::new(2);
        g2.add("POST", "/new", false, "a.lua:1").unwrap();
        assert!(routes.replace("i", g2));
        // A request that took the table before the swap keeps it whole.
        assert!(before.find("POST", "/old").is_some());
        let now = routes.table("i").unwrap();
        assert!(now.find("POST", "/old").is_none());
        assert!(now.find("POST", "/new").is_some());
        assert!(!routes.replace("i", RouteTable::new(1)), "older load");
        assert_eq!(routes.table("i").unwrap().generation(), 2);
        assert!(routes.table("other").is_none());
        routes.remove("i");
        assert!(routes.table("i").is_none());
    }

    #[test]
    fn text_answers_are_200_plain_text() {
        let r = HookResponse::text("ok");
        assert_eq!(r.status, 200);
        assert_eq!(r.body, b"ok");
        assert_eq!(r.headers[0].1, "text/plain; charset=utf-8");
    }
}
