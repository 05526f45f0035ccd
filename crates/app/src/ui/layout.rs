//! The page chrome: header with navigation, who is logged in, logout, language switch.

use super::clock::zone_label;
use super::i18n::{role_name, tr, Lang};
use super::session::Viewer;
use super::{UiError, CSS, JS, SCREENS_CSS};
use maud::{html, Markup, DOCTYPE};

/// Which navigation item a page belongs to.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Nav {
    Orders,
    Pickup,
    Outbox,
    Health,
}

impl Nav {
    const ALL: [Nav; 4] = [Nav::Orders, Nav::Pickup, Nav::Outbox, Nav::Health];

    fn href(self) -> &'static str {
        match self {
            Nav::Orders => "/ui/orders",
            Nav::Pickup => "/ui/pickup",
            Nav::Outbox => "/ui/outbox",
            Nav::Health => "/ui/health",
        }
    }

    fn label(self, lang: Lang) -> &'static str {
        match self {
            Nav::Orders => tr(lang, "Заказы", "Orders"),
            Nav::Pickup => tr(lang, "Выдача", "Pickup desk"),
            Nav::Outbox => tr(lang, "Исходящие", "Outbox"),
            Nav::Health => tr(lang, "Состояние", "Health"),
        }
    }
}

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            meta name="referrer" content="same-origin";
            title { (title) " · kuper-bridge" }
            link rel="stylesheet" href={ "/ui/static/app.css?v=" (CSS.version) };
            link rel="stylesheet" href={ "/ui/static/screens.css?v=" (SCREENS_CSS.version) };
            script src={ "/ui/static/app.js?v=" (JS.version) } defer {}
        }
    }
}

/// RU | EN links to the same page; `keep` is a query (already encoded) they carry along.
fn lang_switch(lang: Lang, keep: &str) -> Markup {
    let sep = if keep.is_empty() { "" } else { "&" };
    html! {
        div.lang {
            @for (l, label) in [(Lang::Ru, "RU"), (Lang::En, "EN")] {
                @if l == lang {
                    span.lang-current aria-current="true" { (label) }
                } @else {
                    a href={ "?" (keep) (sep) "lang=" (l.code()) } hreflang=(l.code()) data-lang=(l.code()) { (label) }
                }
            }
        }
    }
}

fn footer(lang: Lang) -> Markup {
    html! {
        footer.foot {
            span { (tr(lang, "Время на страницах: ", "Times shown: ")) (zone_label(lang)) }
            span { "kuper-bridge " (env!("CARGO_PKG_VERSION")) }
        }
    }
}

/// The hidden CSRF field every state-changing form of a page carries.
pub fn csrf_field(viewer: &Viewer) -> Markup {
    html! { input type="hidden" name="csrf" value=(viewer.csrf); }
}

/// A whole console page.
pub fn page(viewer: &Viewer, title: &str, nav: Nav, body: Markup) -> Markup {
    let lang = viewer.lang;
    html! {
        (DOCTYPE)
        html lang=(lang.code()) {
            (head(title))
            body data-role=(viewer.operator.role.as_str()) {
                header.top {
                    a.brand href="/ui/orders" { "kuper-bridge" }
                    nav.nav {
                        @for item in Nav::ALL {
                            @if item == nav {
                                a.current href=(item.href()) aria-current="page" { (item.label(lang)) }
                            } @else {
                                a href=(item.href()) { (item.label(lang)) }
                            }
                        }
                    }
                    div.who {
                        span.who-name data-operator=(viewer.operator.name) { (viewer.operator.name) }
                        span.who-role { (role_name(lang, viewer.operator.role)) }
                        form.logout method="post" action="/ui/logout" {
                            (csrf_field(viewer))
                            button type="submit" data-action="logout" { (tr(lang, "Выйти", "Sign out")) }
                        }
                    }
                    (lang_switch(lang, ""))
                }
                main.main { (body) }
                (footer(lang))
            }
        }
    }
}

/// The login form; `error` is shown above it (`data-error="login"`).
pub fn login_page(lang: Lang, next: &str, login: &str, error: Option<&str>) -> Markup {
    html! {
        (DOCTYPE)
        html lang=(lang.code()) {
            (head(tr(lang, "Вход", "Sign in")))
            body.login-body {
                main.login-box {
                    div.login-brand { "kuper-bridge" }
                    h1 { (tr(lang, "Вход в пульт оператора", "Operator console sign-in")) }
                    @if let Some(error) = error {
                        p.flash.flash-error data-error="login" role="alert" { (error) }
                    }
                    form method="post" action="/ui/login" {
                        input type="hidden" name="next" value=(next);
                        label for="login" { (tr(lang, "Имя", "Name")) }
                        input #login name="login" type="text" value=(login) autocomplete="username"
                            autocapitalize="none" spellcheck="false" required autofocus[login.is_empty()];
                        label for="password" { (tr(lang, "Пароль", "Password")) }
                        input #password name="password" type="password" autocomplete="current-password" required
                            autofocus[!login.is_empty()];
                        button.primary type="submit" data-action="login" { (tr(lang, "Войти", "Sign in")) }
                    }
                    (lang_switch(lang, &super::query_string(&[("next", next)])))
                }
            }
        }
    }
}

/// The page of a [`UiError`].
pub fn error_page(lang: Lang, error: &UiError) -> Markup {
    let title = tr(lang, "Не получилось", "That did not work");
    html! {
        (DOCTYPE)
        html lang=(lang.code()) {
            (head(title))
            body.login-body {
                main.login-box.error-box data-error="page" data-status=(error.status.as_u16()) {
                    div.login-brand { "kuper-bridge" }
                    h1 { (title) }
                    p.error-message { (error.message(lang)) }
                    @if let Some(detail) = &error.detail {
                        p.error-detail data-refusal { (detail) }
                    }
                    p.error-links {
                        a.button href="/ui/orders" { (tr(lang, "К заказам", "To the orders")) }
                        " "
                        a.button.secondary href="/ui/login" { (tr(lang, "Вход", "Sign in")) }
                    }
                }
            }
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum FlashKind {
    Ok,
    Error,
}

/// A message after an action (`data-flash`).
pub fn flash(kind: FlashKind, text: &str) -> Markup {
    let class = match kind {
        FlashKind::Ok => "flash flash-ok",
        FlashKind::Error => "flash flash-error",
    };
    html! { div class=(class) data-flash role="status" { (text) } }
}

/// The engine's explanation of a refused action (`data-refusal`).
pub fn refusal(text: &str) -> Markup {
    html! { div.flash.flash-error data-refusal role="alert" { (text) } }
}
