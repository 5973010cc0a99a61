//! Who is looking at the console, and that a form was sent from it.
//!
//! A login takes an API token and keeps it (base64-encoded) in the `eflow_session` cookie
//! (`HttpOnly`, `SameSite=Strict`, `Path=/ui`, `Secure` unless on loopback);
//! every page authenticates it as the API authenticates a bearer token, so a
//! revoked or expired token ends the session at once. Every browser also has
//! an `eflow_csrf` cookie, a random seed with the same flags, renewed at each
//! login; a form's CSRF token is the HMAC-SHA256 of the session's token under
//! that seed. A page from another site can neither read the seed nor send it
//! (`SameSite=Strict`), so it cannot make a token that passes.

use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

use super::{Console, Options, pages, render};
use crate::api::ApiError;
use crate::service::{Caller, Scope};

const SESSION: &str = "eflow_session";
const SEED: &str = "eflow_csrf";

/// The name decisions and cancellations are recorded under when no one
/// logged in (`--ui-no-login`).
pub const NO_LOGIN_NAME: &str = "console (no login)";

/// The browser's CSRF seed, from its cookie or made for it by [`csrf_seed`].
#[derive(Debug, Clone)]
struct Seed(String);

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A `Set-Cookie` value for the console's path, with its flags.
fn set_cookie(name: &str, value: &str, options: &Options, max_age: Option<u64>) -> HeaderValue {
    let mut c = format!("{name}={value}; Path=/ui; HttpOnly; SameSite=Strict");
    if options.secure_cookies {
        c.push_str("; Secure");
    }
    if let Some(age) = max_age {
        c.push_str(&format!("; Max-Age={age}"));
    }
    // Tokens and seeds are URL-safe base64: always a valid header value.
    HeaderValue::from_str(&c).unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn new_seed() -> String {
    crate::service::new_token("seed")
}

/// A cookie value the console made: URL-safe base64 and `_`, bounded.
fn plausible(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 1024
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The session cookie's value: the token in URL-safe base64, so that any
/// token (`--admin-token` takes any text) makes a valid cookie.
fn session_value(token: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(token)
}

/// The token a session cookie holds.
fn session_token(value: &str) -> Option<String> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(value)
        .ok()?;
    String::from_utf8(bytes).ok()
}

/// Gives every request a CSRF seed: the browser's, or a new one that the
/// answer sets.
pub async fn csrf_seed(State(options): State<Options>, mut req: Request, next: Next) -> Response {
    let known = cookie(req.headers(), SEED)
        .filter(|v| plausible(v))
        .map(str::to_string);
    let seed = known.clone().unwrap_or_else(new_seed);
    req.extensions_mut().insert(Seed(seed.clone()));
    let mut res = next.run(req).await;
    // A login sets a seed of its own; otherwise a new one is set here.
    if known.is_none() && !res.headers().contains_key(header::SET_COOKIE) {
        res.headers_mut()
            .append(header::SET_COOKIE, set_cookie(SEED, &seed, &options, None));
    }
    res
}

/// The CSRF token of a session (`token`, or none without a login) under `seed`.
fn csrf_token(seed: &str, session: &str) -> String {
    use base64::Engine as _;
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(seed.as_bytes())
        .expect("HMAC takes a key of any length");
    mac.update(b"eflow-ui-csrf:");
    mac.update(session.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
}

/// Whether `given` is the CSRF token of `session` under `seed`, compared in
/// constant time.
fn csrf_ok(seed: &str, session: &str, given: &str) -> bool {
    use base64::Engine as _;
    let Ok(bytes) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(given) else {
        return false;
    };
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(seed.as_bytes())
        .expect("HMAC takes a key of any length");
    mac.update(b"eflow-ui-csrf:");
    mac.update(session.as_bytes());
    mac.verify_slice(&bytes).is_ok()
}

/// Who is looking: the caller the session's token names (or the admin
/// without a login, when the server allows it), and the CSRF token its
/// forms carry.
#[derive(Debug, Clone)]
pub struct Viewer {
    pub caller: Caller,
    /// The token every form of this session sends back.
    pub csrf: String,
    /// Logged in with a token (false: `--ui-no-login`).
    pub logged_in: bool,
    seed: String,
    session: String,
}

impl Viewer {
    pub fn is_admin(&self) -> bool {
        self.caller.scope == Scope::Admin
    }

    /// The refusal of a form whose CSRF token is not this session's.
    pub fn refuse_forged(&self, given: &str) -> Option<Response> {
        (!csrf_ok(&self.seed, &self.session, given))
            .then(|| super::error_page(Some(self), &csrf_error()))
    }
}

fn csrf_error() -> ApiError {
    ApiError::new(
        403,
        "invalid_csrf_token",
        "this form was not sent from this session's page (or the session changed since it was loaded): load the page again and resend it",
    )
}

/// Where a login goes on to: a page of the console, never another site.
fn local_next(next: &str) -> Option<&str> {
    let rest = next.strip_prefix("/ui")?;
    let page = rest.is_empty() || rest.starts_with('/') || rest.starts_with('?');
    let plain = !next.contains("//") && !next.contains('\\') && next.len() <= 2048;
    (page && plain && next.bytes().all(|b| b.is_ascii_graphic())).then_some(next)
}

fn to_login(parts: &Parts) -> Response {
    // htmx follows a redirect inside the fragment; tell it to load the login page instead.
    if parts.headers.contains_key("hx-request") {
        return ([("hx-redirect", "/ui/login")], "").into_response();
    }
    // A link opened from elsewhere (a notification of an approval) comes
    // without the session cookie (`SameSite=Strict`): after the login, on to it.
    let here = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .and_then(local_next)
        .filter(|p| *p != "/ui" && *p != "/ui/");
    match here {
        Some(p) => Redirect::to(&format!("/ui/login?next={}", pages::enc(p))).into_response(),
        None => Redirect::to("/ui/login").into_response(),
    }
}

impl FromRequestParts<Console> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, console: &Console) -> Result<Self, Response> {
        let seed = parts
            .extensions
            .get::<Seed>()
            .map(|s| s.0.clone())
            .unwrap_or_default();
        let token = cookie(&parts.headers, SESSION)
            .filter(|v| plausible(v))
            .and_then(session_token);
        match token {
            Some(token) => match console.service.authenticate(Some(&token)).await {
                Ok(caller) => Ok(Viewer {
                    caller,
                    csrf: csrf_token(&seed, &token),
                    logged_in: true,
                    seed,
                    session: token,
                }),
                Err(e) if e.status == 401 => {
                    let mut res = to_login(parts);
                    res.headers_mut().append(
                        header::SET_COOKIE,
                        set_cookie(SESSION, "", &console.options, Some(0)),
                    );
                    Err(res)
                }
                Err(e) => Err(super::error_page(None, &e)),
            },
            None if console.options.no_login => Ok(Viewer {
                caller: Caller {
                    scope: Scope::Admin,
                    token: String::new(),
                    name: NO_LOGIN_NAME.to_string(),
                },
                csrf: csrf_token(&seed, ""),
                logged_in: false,
                seed,
                session: String::new(),
            }),
            None => Err(to_login(parts)),
        }
    }
}

/// A form body; one that does not parse is a 400 page.
pub struct UiForm<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequest<S> for UiForm<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Response> {
        match axum::Form::<T>::from_request(req, state).await {
            Ok(axum::Form(v)) => Ok(UiForm(v)),
            Err(e) => Err(super::error_page(
                None,
                &ApiError::bad_request("invalid_form", e.body_text()),
            )),
        }
    }
}

/// The seed of the request, set by [`csrf_seed`].
pub struct RequestSeed(String);

impl<S: Send + Sync> FromRequestParts<S> for RequestSeed {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(RequestSeed(
            parts
                .extensions
                .get::<Seed>()
                .map(|s| s.0.clone())
                .unwrap_or_default(),
        ))
    }
}

/// The CSRF token of the login form: of no session yet, under the browser's seed.
const LOGIN: &str = "login";

#[derive(Deserialize)]
pub struct LoginParams {
    #[serde(default)]
    next: String,
}

pub async fn login_page(
    State(console): State<Console>,
    RequestSeed(seed): RequestSeed,
    pages::UiQuery(p): pages::UiQuery<LoginParams>,
) -> Response {
    render(&pages::LoginPage {
        nav: pages::Nav::of(None, ""),
        csrf: csrf_token(&seed, LOGIN),
        next: local_next(&p.next).unwrap_or_default().to_string(),
        secure: console.options.secure_cookies,
        error: None,
    })
}

#[derive(Deserialize)]
pub struct LoginForm {
    token: String,
    csrf: String,
    #[serde(default)]
    next: String,
}

pub async fn login(
    State(console): State<Console>,
    RequestSeed(seed): RequestSeed,
    UiForm(form): UiForm<LoginForm>,
) -> Response {
    if !csrf_ok(&seed, LOGIN, &form.csrf) {
        return super::error_page(None, &csrf_error());
    }
    let token = form.token.trim();
    let refused = |message: String| {
        let page = pages::LoginPage {
            nav: pages::Nav::of(None, ""),
            csrf: csrf_token(&seed, LOGIN),
            next: local_next(&form.next).unwrap_or_default().to_string(),
            secure: console.options.secure_cookies,
            error: Some(message),
        };
        (axum::http::StatusCode::UNAUTHORIZED, render(&page)).into_response()
    };
    if token.is_empty() || token.len() > 512 {
        return refused("paste an eflow API token (`eflow_…`)".into());
    }
    match console.service.authenticate(Some(token)).await {
        Ok(_) => {
            let mut res = Redirect::to(local_next(&form.next).unwrap_or("/ui")).into_response();
            let h = res.headers_mut();
            h.append(
                header::SET_COOKIE,
                set_cookie(SESSION, &session_value(token), &console.options, None),
            );
            // A new seed at each login: a seed set before it (by anyone) is of no use after.
            h.append(
                header::SET_COOKIE,
                set_cookie(SEED, &new_seed(), &console.options, None),
            );
            res
        }
        Err(e) if e.status == 401 => refused(e.message),
        Err(e) => super::error_page(None, &e),
    }
}

#[derive(Deserialize)]
pub struct CsrfForm {
    csrf: String,
}

pub async fn logout(
    State(console): State<Console>,
    viewer: Viewer,
    UiForm(form): UiForm<CsrfForm>,
) -> Response {
    if let Some(r) = viewer.refuse_forged(&form.csrf) {
        return r;
    }
    let mut res = Redirect::to("/ui/login").into_response();
    let h = res.headers_mut();
    h.append(
        header::SET_COOKIE,
        set_cookie(SESSION, "", &console.options, Some(0)),
    );
    h.append(
        header::SET_COOKIE,
        set_cookie(SEED, &new_seed(), &console.options, None),
    );
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_csrf_token_passes_for_its_own_seed_and_session_only() {
        let t = csrf_token("seed-a", "token-1");
        assert!(csrf_ok("seed-a", "token-1", &t));
        assert!(!csrf_ok("seed-b", "token-1", &t));
        assert!(!csrf_ok("seed-a", "token-2", &t));
        assert!(!csrf_ok("seed-a", "token-1", ""));
        assert!(!csrf_ok("seed-a", "token-1", "not base64 !"));
    }

    #[test]
    fn any_token_makes_a_session_cookie() {
        for token in ["eflow_abc-DEF_123", "admin token; with=odd \"chars\"", "ü"] {
            let v = session_value(token);
            assert!(plausible(&v), "{v}");
            assert_eq!(session_token(&v).as_deref(), Some(token));
        }
        assert_eq!(session_token("!!"), None);
    }

    #[test]
    fn a_login_goes_on_to_console_pages_only() {
        for ok in ["/ui", "/ui/runs?status=failed", "/ui/runs/acme%3Ax"] {
            assert_eq!(local_next(ok), Some(ok));
        }
        for bad in [
            "",
            "https://evil.example/ui",
            "//evil.example/ui",
            "/ui//evil.example",
            "/uix",
            "/v1/runs",
            "/ui/\\evil",
            "/ui/a b",
        ] {
            assert_eq!(local_next(bad), None, "{bad}");
        }
    }

    #[test]
    fn cookies_are_read_by_exact_name() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("x_eflow_session=no; eflow_session=yes; eflow_csrf=s"),
        );
        assert_eq!(cookie(&h, SESSION), Some("yes"));
        assert_eq!(cookie(&h, SEED), Some("s"));
        assert_eq!(cookie(&h, "other"), None);
    }

    #[test]
    fn no_login_is_refused_off_loopback() {
        let lo = "127.0.0.1:7700".parse().expect("addr");
        let any = "0.0.0.0:7700".parse().expect("addr");
        assert!(Options::for_listen(true, lo).is_ok_and(|o| o.no_login && !o.secure_cookies));
        assert!(Options::for_listen(true, any).is_err());
        assert!(Options::for_listen(false, any).is_ok_and(|o| o.secure_cookies));
    }
}
