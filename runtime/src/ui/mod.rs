//! The web console at `/ui`: server-rendered pages (askama templates in
//! `templates/`, checked when the crate compiles) over the same [`Service`]
//! the JSON API calls, so what a page shows and does is authorized and
//! validated as the API's request would be. The only script is the vendored
//! htmx (`assets/`), served from here: nothing is loaded from elsewhere.
//!
//! Who is looking comes from the session cookie (a token, as the API takes
//! it; `session.rs`), every form carries a CSRF token, and every answer
//! carries a content security policy that lets a page load only from this
//! server (`docs/security.md`).

mod gantt;
mod graph;
mod pages;
mod session;
mod values;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};

use crate::api::ApiError;
use crate::service::Service;

pub use session::Viewer;

/// How the console is served.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// No login: a browser without a session acts as the admin. Only for a
    /// server bound to loopback (`eflow serve --ui-no-login`), where whoever
    /// reaches it is on the machine already.
    pub no_login: bool,
    /// Mark the session cookies `Secure` (sent over HTTPS only): set unless
    /// the server is bound to loopback, where browsers treat plain
    /// `http://127.0.0.1` as secure.
    pub secure_cookies: bool,
}

impl Options {
    /// The console's options for a server listening on `listen`; refused
    /// when `no_login` is asked for on an address others can reach.
    pub fn for_listen(no_login: bool, listen: std::net::SocketAddr) -> Result<Self, String> {
        let loopback = listen.ip().is_loopback();
        if no_login && !loopback {
            return Err(format!(
                "--ui-no-login lets whoever reaches the server act as the admin, so it is allowed only on a loopback address; the server listens on {listen}: drop the flag, or listen on 127.0.0.1"
            ));
        }
        Ok(Self {
            no_login,
            secure_cookies: !loopback,
        })
    }
}

/// What every handler of the console is given.
#[derive(Clone)]
pub struct Console {
    pub service: Service,
    pub options: Options,
    layouts: std::sync::Arc<graph::Layouts>,
}

impl Console {
    /// Graph layouts, kept per flow version.
    fn layouts(&self) -> &graph::Layouts {
        &self.layouts
    }
}

/// The console's routes, all under `/ui`.
pub fn router(service: Service, options: Options) -> Router {
    let console = Console {
        service,
        options,
        layouts: Default::default(),
    };
    Router::new()
        .route("/ui", get(pages::overview))
        .route("/ui/", get(pages::overview))
        .route("/ui/login", get(session::login_page).post(session::login))
        .route("/ui/logout", post(session::logout))
        .route("/ui/runs", get(pages::runs))
        .route("/ui/runs/{id}", get(pages::run))
        .route("/ui/runs/{id}/live", get(pages::run_live))
        .route("/ui/runs/{id}/cancel", post(pages::cancel))
        .route("/ui/runs/{id}/retry", post(pages::retry))
        .route("/ui/runs/{id}/approvals/{step}", post(pages::decide))
        .route("/ui/approvals", get(pages::approvals))
        .route("/ui/bulk", get(pages::bulk_list).post(pages::bulk_start))
        .route("/ui/bulk/new", get(pages::bulk_new))
        .route("/ui/bulk/{id}", get(pages::bulk_job))
        .route("/ui/bulk/{id}/live", get(pages::bulk_live))
        .route("/ui/bulk/{id}/pause", post(pages::bulk_pause))
        .route("/ui/bulk/{id}/resume", post(pages::bulk_resume))
        .route("/ui/bulk/{id}/cancel", post(pages::bulk_cancel))
        .route("/ui/flows", get(pages::flows))
        .route("/ui/flows/{tenant}/{name}", get(pages::flow))
        .route("/ui/lineage", get(pages::lineage_index))
        .route("/ui/lineage/{kind}/{name}", get(pages::lineage))
        .route("/ui/schedules", get(pages::schedules))
        .route("/ui/population", get(pages::population))
        .route("/ui/schedules/{id}/pause", post(pages::pause))
        .route("/ui/schedules/{id}/resume", post(pages::resume))
        .route(
            "/ui/schedules/{id}/backfill",
            get(pages::backfill_page).post(pages::backfill),
        )
        .route("/ui/static/htmx.min.js", get(htmx))
        .route("/ui/static/console.css", get(css))
        .route("/ui/static/favicon.svg", get(favicon))
        // Not a fallback: the API's router, which this one is merged into, has that.
        .route("/ui/{*rest}", get(not_found).post(not_found))
        .with_state(console)
        .layer(axum::middleware::from_fn_with_state(
            options,
            session::csrf_seed,
        ))
        .layer(axum::middleware::from_fn(security_headers))
}

/// Every answer of the console: only this server's scripts, styles and
/// images; never framed; no referrer sent on; pages never cached.
async fn security_headers(req: Request, next: Next) -> Response {
    let asset = req.uri().path().starts_with("/ui/static/");
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if !asset {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    res
}

/// A console asset: its bytes and their gzip (made by `build.rs`).
struct Asset {
    content_type: &'static str,
    plain: &'static [u8],
    gzip: &'static [u8],
}

macro_rules! asset {
    ($content_type:expr, $name:literal) => {
        Asset {
            content_type: $content_type,
            plain: include_bytes!(concat!("assets/", $name)),
            gzip: include_bytes!(concat!(env!("OUT_DIR"), "/", $name, ".gz")),
        }
    };
}

const HTMX: Asset = asset!("text/javascript; charset=utf-8", "htmx.min.js");
const CSS: Asset = asset!("text/css; charset=utf-8", "console.css");
const FAVICON: Asset = asset!("image/svg+xml", "favicon.svg");

/// Whether an `Accept-Encoding` header accepts gzip: `gzip` or `*` listed
/// without `q=0`.
fn accepts_gzip(accept: &str) -> bool {
    accept.split(',').any(|part| {
        let mut it = part.split(';');
        let coding = it.next().unwrap_or("").trim();
        let refused = it.any(|p| {
            p.trim()
                .strip_prefix("q=")
                .and_then(|q| q.trim().parse::<f32>().ok())
                .is_some_and(|q| q <= 0.0)
        });
        (coding.eq_ignore_ascii_case("gzip") || coding == "*") && !refused
    })
}

fn serve(a: &Asset, headers: &axum::http::HeaderMap) -> Response {
    let gzip = headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(accepts_gzip);
    let mut res = (
        [
            (header::CONTENT_TYPE, a.content_type),
            // Assets change only with the binary; an hour keeps pages quick
            // and an upgrade visible soon.
            (header::CACHE_CONTROL, "public, max-age=3600"),
            (header::VARY, "accept-encoding"),
        ],
        if gzip { a.gzip } else { a.plain },
    )
        .into_response();
    if gzip {
        res.headers_mut()
            .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    res
}

async fn htmx(headers: axum::http::HeaderMap) -> Response {
    serve(&HTMX, &headers)
}

async fn css(headers: axum::http::HeaderMap) -> Response {
    serve(&CSS, &headers)
}

async fn favicon(headers: axum::http::HeaderMap) -> Response {
    serve(&FAVICON, &headers)
}

async fn not_found() -> Response {
    error_page(
        None,
        &ApiError::new(404, "not_found", "there is no such page in the console"),
    )
}

/// An error as a page: the API's status, code and message.
pub(crate) fn error_page(viewer: Option<&Viewer>, e: &ApiError) -> Response {
    let page = pages::ErrorPage {
        nav: pages::Nav::of(viewer, ""),
        status: e.status,
        code: &e.code,
        message: &e.message,
    };
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, render(&page)).into_response()
}

/// A template as an HTML answer; a template that fails to render (it cannot
/// with the types it is given, but the error is a value) is a logged 500.
pub(crate) fn render(t: &impl askama::Template) -> Response {
    match t.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "a console page failed to render");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the page failed to render; it is logged",
            )
                .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_is_sent_to_who_accepts_it() {
        for yes in ["gzip", "gzip, deflate, br", "br;q=1.0, GZIP;q=0.5", "*"] {
            assert!(accepts_gzip(yes), "{yes}");
        }
        for no in ["", "identity", "br", "gzip;q=0", "gzip; q=0.0", "gzipx"] {
            assert!(!accepts_gzip(no), "{no}");
        }
    }

    /// What `build.rs` made is the asset, gzip-compressed whole.
    #[test]
    fn the_compressed_assets_are_the_assets() {
        for a in [&HTMX, &CSS, &FAVICON] {
            let gz = a.gzip;
            assert_eq!(&gz[..3], &[0x1f, 0x8b, 8]);
            let body = &gz[10..gz.len() - 8];
            let plain = miniz_oxide::inflate::decompress_to_vec(body).expect("deflate");
            assert_eq!(plain, a.plain);
            let size = u32::from_le_bytes(gz[gz.len() - 4..].try_into().unwrap());
            assert_eq!(size as usize, a.plain.len());
            assert!(gz.len() < a.plain.len(), "{} compresses", a.content_type);
        }
    }
}
