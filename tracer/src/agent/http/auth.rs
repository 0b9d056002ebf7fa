//! HTTP basic authentication against bcrypt hashes, as Prometheus' exporters
//! check their `basic_auth_users`.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Mutex,
};

use base64::Engine as _;

/// The users of the web configuration and their password hashes.
pub struct Users {
    hashes: BTreeMap<String, String>,
    /// Per user, the password that last matched its hash. bcrypt is slow on
    /// purpose (tens of milliseconds a check at the usual cost) and a scraper
    /// sends the same password every scrape; exporter-toolkit keeps the same
    /// cache. Only in this process's memory, which holds the metrics anyway.
    matched: Mutex<HashMap<String, String>>,
}

/// The user name and password of an `Authorization: Basic` header's value.
pub fn decode(value: &str) -> Option<(String, String)> {
    let (scheme, token) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let text = base64::engine::general_purpose::STANDARD
        .decode(token.trim())
        .ok()?;
    let (user, password) = std::str::from_utf8(&text).ok()?.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// Equal, in a time that depends on the lengths only.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0, |acc, (x, y)| acc | (x ^ y))
            == 0
}

impl Users {
    /// `hashes` are bcrypt hashes (checked by the web configuration's parser).
    pub fn new(hashes: BTreeMap<String, String>) -> Self {
        Self {
            hashes,
            matched: Mutex::default(),
        }
    }

    /// Whether the password is the one that last matched: cheap.
    pub fn matched_before(&self, user: &str, password: &str) -> bool {
        let matched = self.matched.lock().unwrap_or_else(|e| e.into_inner());
        matched.get(user).is_some_and(|p| same(p, password))
    }

    /// Whether `password` is `user`'s: one bcrypt check, slow on purpose.
    pub fn verify(&self, user: &str, password: &str) -> bool {
        // An unknown user costs a check too, against another user's hash, so
        // that the time taken does not tell which users exist.
        let (hash, known) = match self.hashes.get(user) {
            Some(hash) => (hash, true),
            None => match self.hashes.values().next() {
                Some(hash) => (hash, false),
                None => return false,
            },
        };
        let ok = bcrypt::verify(password, hash).unwrap_or(false) && known;
        if ok {
            self.matched
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(user.to_owned(), password.to_owned());
        }
        ok
    }

    /// [`Users::verify`], from an `Authorization` header's value (or none).
    pub fn check(&self, authorization: Option<&str>) -> bool {
        authorization
            .and_then(decode)
            .is_some_and(|(user, password)| {
                self.matched_before(&user, &password) || self.verify(&user, &password)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lowest cost bcrypt allows: the check is the same at any cost.
    const COST: u32 = 4;

    fn basic(user: &str, password: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        )
    }

    fn users() -> Users {
        Users::new(BTreeMap::from([
            (
                "prometheus".into(),
                bcrypt::hash("s3cret:with colon", COST).unwrap(),
            ),
            ("other".into(), bcrypt::hash("another", COST).unwrap()),
        ]))
    }

    #[test]
    fn headers_decode() {
        assert_eq!(decode(&basic("a", "b:c")), Some(("a".into(), "b:c".into())));
        assert_eq!(
            decode("basic   YTpi"),
            Some(("a".into(), "b".into())),
            "scheme is case-insensitive"
        );
        assert_eq!(decode("Bearer YTpi"), None);
        assert_eq!(decode("Basic !!!"), None);
        assert_eq!(decode("Basic YWI="), None, "no colon");
        assert_eq!(decode("Basic"), None);
    }

    #[test]
    fn only_the_right_password_of_a_known_user_passes() {
        let users = users();
        assert!(users.check(Some(&basic("prometheus", "s3cret:with colon"))));
        assert!(users.check(Some(&basic("other", "another"))));
        assert!(!users.check(Some(&basic("prometheus", "s3cret"))));
        assert!(
            !users.check(Some(&basic("prometheus", "another"))),
            "another user's password"
        );
        assert!(!users.check(Some(&basic("nobody", "another"))));
        assert!(!users.check(Some(&basic("", ""))));
        assert!(!users.check(Some("Bearer token")));
        assert!(!users.check(None));
    }

    #[test]
    fn a_matched_password_is_remembered_and_only_that_one() {
        let users = users();
        assert!(!users.matched_before("prometheus", "s3cret:with colon"));
        assert!(users.verify("prometheus", "s3cret:with colon"));
        assert!(users.matched_before("prometheus", "s3cret:with colon"));
        assert!(!users.matched_before("prometheus", "s3cret:with colo"));
        assert!(!users.matched_before("other", "s3cret:with colon"));
        // A wrong password remembers nothing.
        assert!(!users.verify("other", "guess"));
        assert!(!users.matched_before("other", "guess"));
    }

    #[test]
    fn no_users_no_entry() {
        let none = Users::new(BTreeMap::new());
        assert!(!none.check(Some(&basic("a", "b"))));
    }
}
