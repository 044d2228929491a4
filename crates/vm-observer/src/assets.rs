//! The page's files, compiled into the library: no build step and nothing to install
//! next to it. Plain HTML, CSS and JavaScript; the charts are SVG drawn by
//! `observer.js` (no charting library).

use crate::http::Reply;

const INDEX: &str = include_str!("../assets/index.html");
const PROCESS: &str = include_str!("../assets/process.html");
const JS: &str = include_str!("../assets/observer.js");
const CSS: &str = include_str!("../assets/observer.css");

/// The file served at `path`, if it is one of the page's.
pub fn get(path: &str) -> Option<Reply> {
    let (ctype, body) = match path {
        "/" | "/index.html" => ("text/html; charset=utf-8", INDEX),
        "/process" | "/process.html" => ("text/html; charset=utf-8", PROCESS),
        "/observer.js" => ("text/javascript; charset=utf-8", JS),
        "/observer.css" => ("text/css; charset=utf-8", CSS),
        _ => return None,
    };
    Some(Reply::new(200, ctype, body))
}
