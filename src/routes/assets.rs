//! The dashboard and task board assets, compiled into the binary (no CDN, no build step).

/// `(path, content type, bytes)` of every embedded asset.
pub(crate) const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "/dashboard",
        "text/html; charset=utf-8",
        include_bytes!("../../static/dashboard.html"),
    ),
    (
        "/bull",
        "text/html; charset=utf-8",
        include_bytes!("../../static/bull.html"),
    ),
    (
        "/static/app.css",
        "text/css; charset=utf-8",
        include_bytes!("../../static/app.css"),
    ),
    (
        "/static/common.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../static/common.js"),
    ),
    (
        "/static/charts.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../static/charts.js"),
    ),
    (
        "/static/dashboard.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../static/dashboard.js"),
    ),
    (
        "/static/bull.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../static/bull.js"),
    ),
];

/// The asset served at `path`, if any.
pub(crate) fn find(path: &str) -> Option<(&'static str, &'static [u8])> {
    let path = path.trim_end_matches('/');
    ASSETS
        .iter()
        .find(|(p, _, _)| *p == path)
        .map(|(_, ct, body)| (*ct, *body))
}
