//! The identifiers inside cgroup and log file names, checked strictly: a
//! segment that only looks like a container id or a pod UID must not make a
//! cgroup a container or a pod.

/// Whether `s` is a container id as the runtimes write it: 64 lowercase hex
/// digits.
pub(super) fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(is_lower_hex)
}

/// The pod UID written in `s` with `separator` between its groups, in its
/// canonical form, or `None` if `s` is not one.
///
/// API-created pods have UUIDs, 8-4-4-4-12 lowercase hex digits; cgroupfs
/// paths and log directories separate the groups with `-`, systemd slice names
/// with `_` (a `-` there means nesting). The canonical form has dashes. A static
/// pod's UID is the kubelet's md5 hash of its manifest, 32 hex digits with no
/// separators, and stays as it is.
pub(super) fn pod_uid(s: &str, separator: u8) -> Option<String> {
    let bytes = s.as_bytes();
    let valid = match bytes.len() {
        32 => bytes.iter().all(|&b| is_lower_hex(b)),
        36 => bytes.iter().enumerate().all(|(i, &b)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                b == separator
            } else {
                is_lower_hex(b)
            }
        }),
        _ => false,
    };
    valid.then(|| s.replace(char::from(separator), "-"))
}

/// Whether `s` can be a Kubernetes namespace, pod or container name: a DNS
/// label or subdomain (lowercase letters, digits, `-` and `.`, at most 253
/// characters, starting and ending with a letter or digit). These never hold
/// `_`, which is why the kubelet's file names use it as a separator.
pub(super) fn is_dns_name(s: &str) -> bool {
    let bytes = s.as_bytes();
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    !bytes.is_empty()
        && bytes.len() <= 253
        && bytes.first().is_some_and(alnum)
        && bytes.last().is_some_and(alnum)
        && bytes.iter().all(|b| alnum(b) || *b == b'-' || *b == b'.')
}

fn is_lower_hex(b: u8) -> bool {
    b.is_ascii_digit() || (b'a'..=b'f').contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "1b2c3d4e-5f60-4a7b-8c9d-0e1f2a3b4c5d";

    #[test]
    fn container_ids_are_64_lowercase_hex_digits() {
        assert!(is_container_id(&"0a".repeat(32)));
        assert!(!is_container_id(&"0A".repeat(32)), "uppercase");
        assert!(!is_container_id(&"0a".repeat(31)), "short");
        assert!(!is_container_id(&format!("{}0", "0a".repeat(32))), "long");
        assert!(!is_container_id(&format!("{}g", "0".repeat(63))), "not hex");
        assert!(
            !is_container_id(&format!("{}é", "0".repeat(62))),
            "non-ASCII"
        );
    }

    #[test]
    fn pod_uids_take_their_separator_and_come_out_dashed() {
        assert_eq!(pod_uid(UID, b'-').as_deref(), Some(UID));
        assert_eq!(pod_uid(&UID.replace('-', "_"), b'_').as_deref(), Some(UID));
        assert_eq!(pod_uid(&UID.replace('-', "_"), b'-'), None);
        assert_eq!(pod_uid(UID, b'_'), None, "dashes nest in systemd names");
        let static_pod = "5f3c1d0e0a8b6c2e9f3e3f1b2a4c5d6e";
        assert_eq!(pod_uid(static_pod, b'_').as_deref(), Some(static_pod));
        assert_eq!(pod_uid(&UID.to_uppercase(), b'-'), None);
        assert_eq!(pod_uid(&UID.replace('5', "é"), b'-'), None);
        assert_eq!(pod_uid("", b'-'), None);
        assert_eq!(pod_uid("1b2c3d4e-5f60-4a7b-8c9d-0e1f2a3b4c5", b'-'), None);
        assert_eq!(pod_uid("1b2c3d4e5-f60-4a7b-8c9d-0e1f2a3b4c5d", b'-'), None);
    }

    #[test]
    fn dns_names_have_no_underscores_or_capitals() {
        for good in ["app", "kube-system", "api-7f9c", "a.b", "0"] {
            assert!(is_dns_name(good), "{good}");
        }
        let long = "a".repeat(254);
        for bad in [
            "",
            "a_b",
            "App",
            "-a",
            "a-",
            ".a",
            "a b",
            "é",
            long.as_str(),
        ] {
            assert!(!is_dns_name(bad), "{bad}");
        }
    }
}
