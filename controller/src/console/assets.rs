//! Files served from the binary: htmx (vendored, `controller/assets/console/`, 2.0.4, BSD
//! Zero-Clause licence beside it) and the stylesheet. No JS build step.

use axum::{
    http::header,
    response::{IntoResponse, Response},
};

const HTMX: &str = include_str!("../../assets/console/htmx.min.js");
const CSS: &str = include_str!("../../assets/console/console.css");

fn file(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}

pub async fn htmx() -> Response {
    file("text/javascript; charset=utf-8", HTMX)
}

pub async fn css() -> Response {
    file("text/css; charset=utf-8", CSS)
}
